"""Throughput of the bilevel family (not a test): DD's seconds per outer iteration and peak memory by the number of
unrolled steps (distill_epochs x distill_steps), LD's seconds per outer step for each variant (or2, rr). RTP's
cost by unrolled steps is benchmarks/rtp_unroll.py.

    python benchmarks/bench_bilevel.py --device cpu                       # embedded mnist5k, CPU
    python benchmarks/bench_bilevel.py --device cuda --dataset cifar10 --npz path/to/cifar10.npz --ipc 10

The DD paper reports no cost; its official default unrolls 30 steps (10 steps x 3 epochs) at IPC 10. Prints one
JSON object per measurement (ddflow.smoke.speed.time_method: wall and CPU seconds per iteration, peak memory).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from ddflow import hparams
from ddflow.data import get_info, load_real, prepare
from ddflow.data.validation import carve, draw
from ddflow.runtime import resolve_device
from ddflow.smoke.speed import time_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--npz", default=None, help="a prepared dataset file (default: prepare the dataset here)")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--preset", default="paper")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--distill-epochs", type=int, nargs="*", default=[1, 3], help="DD unroll lengths to time")
    a = p.parse_args()
    device = resolve_device(a.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    info = get_info(a.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.npz) if a.npz else prepare(a.dataset, Path(tmp) / f"{a.dataset}.npz")
        data = load_real(path, info, device)
        for epochs in a.distill_epochs:
            hp = {**hparams.resolve("dd", a.dataset, a.ipc, a.preset), "distill_epochs": epochs}
            r = time_method(data, device, "dd", a.ipc, a.iters, a.preset, hp=hp)
            print(json.dumps({**r, "unrolled_steps": epochs * a.ipc}), flush=True)
        per_class = int(hparams.resolve("validation", a.dataset, 0, a.preset)["per_class"])
        fit = carve(data, draw(data.y_train.cpu().numpy(), info.classes, per_class, 0))
        for variant in ("or2", "rr"):
            hp = {**hparams.resolve("ld", a.dataset, a.ipc, a.preset), "variant": variant}
            r = time_method(fit, device, "ld", a.ipc, a.iters, a.preset, hp=hp)
            print(json.dumps({**r, "variant": variant}), flush=True)


if __name__ == "__main__":
    main()
