"""Progress for long loops: a tqdm bar on a terminal, periodic log lines otherwise (Snakemake logs).

Stats may be tensors still on the device (a loss): they are read (one host sync) only when a line or a bar refresh
is due, not every step, so reporting progress does not stall a GPU loop."""
from __future__ import annotations

import logging
import sys
import time

import torch

try:
    from tqdm import tqdm
except ImportError:  # a minimal environment (the smoke test's: torch, numpy, pyyaml, ...): log lines only
    tqdm = None

log = logging.getLogger("ddflow")


def as_number(value):
    """A stat as a Python number: a tensor is read (a host sync); anything else is returned as it is."""
    return value.item() if isinstance(value, torch.Tensor) else value


def rate_of(steps: int, seconds: float) -> float:
    return steps / max(seconds, 1e-9)


def eta(remaining: int, rate: float) -> str:
    """Remaining time as h:mm:ss ('?' before the first step)."""
    if rate <= 0:
        return "?"
    s = int(round(remaining / rate))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str, every_s: float = 15.0, start: int = 0, bar_every_s: float = 1.0):
        self.total, self.desc, self.every_s, self.bar_every_s = total, desc, every_s, bar_every_s
        self.t0 = self.last = self.last_bar = time.time()
        self.n = self.start = start  # a resumed loop's rate counts only the steps done since it resumed
        self.bar = (tqdm(total=total, initial=start, desc=desc, leave=False)
                    if tqdm is not None and sys.stderr.isatty() else None)

    def update(self, n: int, **stats) -> None:
        now = time.time()
        if self.bar is not None:
            self.bar.update(n - self.n)
            if stats and (now - self.last_bar >= self.bar_every_s or n == self.total):
                self.last_bar = now
                self.bar.set_postfix({k: f"{as_number(v):.4g}" for k, v in stats.items()}, refresh=False)
        self.n = n
        if self.bar is None and (now - self.last >= self.every_s or n == self.total):
            self.last = now
            extra = " ".join(f"{k}={as_number(v):.4g}" for k, v in stats.items())
            rate = rate_of(n - self.start, now - self.t0)
            log.info("%s %d/%d (%.2f/s, ETA %s) %s", self.desc, n, self.total, rate,
                     eta(self.total - n, rate), extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
