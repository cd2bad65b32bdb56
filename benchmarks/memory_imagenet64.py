"""Peak host memory of preparing ImageNet-64 and of the data side of a FRePo run on it, measured on generated data
of the real image shape (64x64x3 uint8, 1000 classes) at a fraction of the real 1,281,167 training images, for two
sizes, so that the part that grows with the image count shows. Source batches hold 128,116 images as the official
Imagenet64_train_npz files do (about 1.57 GB each).

    python benchmarks/memory_imagenet64.py --train 128116 256232 --out /tmp/mem64

Phases: `prepare` (the source batches -> the prepared, memory-mappable npz); `batches` (load_real, then 50 of
FRePo's real batches (batch_real 1024 random training images) served normalised: what a FRePo step asks of the host
when its networks run on a GPU); `frepo` (load_real and one FRePo step at the paper's ImageNet-64 settings on the
CPU, whose activations then count as host memory too: slow).

Each phase runs in a fresh Python process and reports its peak resident set (VmHWM), and its anonymous and
file-backed resident memory at the end (file-backed pages of a memory-mapped dataset are page cache: the kernel
drops them under pressure, so they do not count against a machine's memory the way anonymous memory does).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from ddflow.data import get_info
from ddflow.data.sources import prepare
from ddflow.data.real import load_real
phase, src, npz = sys.argv[1:4]
t0 = time.time()
if phase == "prepare":
    prepare("imagenet64", npz, root=src, download=False)
elif phase == "batches":
    data = load_real(npz, get_info("imagenet64"), "cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = data.x_train[torch.randint(len(data.x_train), (1024,), generator=g)]
    assert x.shape == (1024, 3, 64, 64)
else:
    from ddflow import hparams
    from ddflow.smoke.speed import time_method
    data = load_real(npz, get_info("imagenet64"), "cpu")
    hp = hparams.resolve("frepo", "imagenet64", 1, "paper")
    hp["zca"] = False   # ZCA's fit at d = 12288 is its own cost (docs/running.md); the step itself is measured
    out = time_method(data, torch.device("cpu"), "frepo", 1, 1, "paper", hp=hp)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
kb = lambda k: int(status[k].split()[0]) / 1024
print(json.dumps({"phase": phase, "seconds": round(time.time() - t0, 1), "peak_rss_mb": round(kb("VmHWM")),
                  "anon_mb": round(kb("RssAnon")), "file_mb": round(kb("RssFile"))}))
"""


def make_source(folder: Path, n_train: int, n_val: int, per_batch: int = 128116) -> None:
    """Downsampled-ImageNet npz batches (rows of R, G, B planes; labels 1..1000) with random pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, start in enumerate(range(0, n_train, per_batch), 1):
        n = min(per_batch, n_train - start)
        np.savez(folder / f"train_data_batch_{k}.npz", data=rng.integers(0, 256, (n, 12288), dtype=np.uint8),
                 labels=(np.arange(start, start + n) % 1000 + 1))
    np.savez(folder / "val_data.npz", data=rng.integers(0, 256, (n_val, 12288), dtype=np.uint8),
             labels=np.arange(n_val) % 1000 + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, nargs="+", default=[128116, 256232])
    ap.add_argument("--val", type=int, default=5000)
    ap.add_argument("--phases", nargs="+", default=["prepare", "batches"], help="prepare, batches, frepo")
    ap.add_argument("--out", type=Path, default=Path("results/bench/mem64"))
    a = ap.parse_args()
    rows = []
    for n in a.train:
        src, npz = a.out / f"src{n}", a.out / f"imagenet64_{n}.npz"
        make_source(src, n, a.val)
        for phase in a.phases:
            proc = subprocess.run([sys.executable, "-c", CHILD, phase, str(src), str(npz)], capture_output=True,
                                  text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            rows.append({"train_images": n, "uint8_train_mb": round(n * 12288 / 2**20),
                         **json.loads(proc.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| train images | uint8 train MB | phase | s | peak RSS MB | anon MB | file-backed MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['train_images']} | {r['uint8_train_mb']} | {r['phase']} | {r['seconds']} | {r['peak_rss_mb']} "
              f"| {r['anon_mb']} | {r['file_mb']} |")


if __name__ == "__main__":
    main()
