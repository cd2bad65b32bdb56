"""Progress for long loops: a tqdm bar on a terminal, periodic log lines otherwise (Snakemake logs)."""
from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("ddflow")


class Progress:
    def __init__(self, total: int, desc: str, every_s: float = 15.0, start: int = 0):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.t0 = self.last = time.time()
        self.n = start
        self.bar = tqdm(total=total, initial=start, desc=desc, leave=False) if sys.stderr.isatty() else None

    def update(self, n: int, **stats: float) -> None:
        if self.bar is not None:
            self.bar.update(n - self.n)
            if stats:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
        self.n = n
        now = time.time()
        if self.bar is None and (now - self.last >= self.every_s or n == self.total):
            self.last = now
            extra = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            rate = (n / max(now - self.t0, 1e-9))
            log.info("%s %d/%d (%.2f/s) %s", self.desc, n, self.total, rate, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
