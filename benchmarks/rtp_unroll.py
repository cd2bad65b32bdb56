"""Cost of RTP's meta-gradient by unrolled steps (not a test): one call of RTP.meta_gradient (a fresh ConvNet, T
momentum-SGD steps with the weights before each step kept, the official reverse pass) on random data of a dataset's
shape, each T in a fresh subprocess; seconds and the growth of the peak resident memory (CPU) or peak CUDA memory,
then a linear fit extrapolated to the paper's 150 steps (marked "extrapolated").

    python benchmarks/rtp_unroll.py --dataset cifar10 --steps 1 2 4 --batch-syn 4 --batch-real 8

Prints one JSON object per measurement and one for the fit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _rss_mb(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024
    return float("nan")


def _measure(args: argparse.Namespace, steps: int) -> dict:
    from ddflow import hparams
    from ddflow.data import RealData, get_info
    from ddflow.methods import get_method

    torch.set_num_threads(args.threads)
    info = get_info(args.dataset)
    device = torch.device(args.device)
    n = info.classes * args.batch_real * 2
    x = torch.randn(n, info.channels, info.size, info.size)
    y = torch.arange(info.classes).repeat_interleave(args.batch_real * 2)
    data = RealData(x, y, x[:info.classes], y[:info.classes], info)
    hp = hparams.resolve("rtp", args.dataset, args.ipc, "paper")
    hp.update(inner_steps=steps, batch_syn=args.batch_syn, batch_real=args.batch_real, net=args.net)
    m = get_method("rtp")(hp, data, args.ipc, torch.Generator().manual_seed(0), device)
    m.init()
    try:  # reset the resident high-water mark (Linux), so the peak is this call's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    m.meta_gradient()
    seconds = time.time() - t0
    out = {"steps": steps, "seconds": round(seconds, 3), "peak_rss_growth_mb": round(_rss_mb("VmHWM") - base, 1),
           "params": sum(p.numel() for p in m._fresh_net().parameters()), "rows_per_class": m.rows}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--ipc", type=int, default=1, help="RTP's float budget")
    p.add_argument("--net", default="ConvNet")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch-syn", type=int, default=32)
    p.add_argument("--batch-real", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paper-steps", type=int, default=150)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(_measure(args, args.one)))
        return
    rows = []
    for s in args.steps:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", str(s)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        fit = {}
        ts = [r["steps"] for r in rows]
        for key in ("seconds", "peak_rss_growth_mb", "peak_cuda_mb"):
            if key in rows[0]:
                vs = [r[key] for r in rows]
                slope = (vs[-1] - vs[0]) / (ts[-1] - ts[0])
                at_paper = vs[0] + slope * (args.paper_steps - ts[0])
                fit[key] = {"per_step": round(slope, 3), f"extrapolated_{args.paper_steps}_steps": round(at_paper, 1)}
        print(json.dumps({"fit": fit, "setting": {k: v for k, v in vars(args).items() if k != "one"}}))


if __name__ == "__main__":
    main()
