"""Throughput benchmarks (not tests): evaluation with K = 1 and K = 20 models of a cell, DM iterations/s and
seconds per iteration of DC/DSA (the official DSA code: 2.85 s per CIFAR-10 IPC 10 iteration on one H100).

    python benchmarks/bench.py --device cuda --dataset cifar10 --npz path/to/cifar10.npz
    python benchmarks/bench.py --device cpu                   # embedded mnist5k, CPU

Prints one JSON object per measurement. Target on a GPU: 20 models cost at most 3x one model.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ddflow import hparams
from ddflow.augment import make_augment
from ddflow.data import get_info, load_real, prepare
from ddflow.methods import get_method
from ddflow.nets import build_net
from ddflow.runtime import resolve_device
from ddflow.seeding import generator
from ddflow.train import NetStack, TrainSettings, train_stack


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_eval(data, device, ipc: int, k: int, epochs: int, batching: str) -> dict:
    info = data.info
    idx = torch.cat([i[:ipc] for i in data.indices_per_class()])
    x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
    gens = [generator("bench", i) for i in range(k)]
    stack = NetStack(build_net("ConvNet", info.channels, info.classes, info.size), gens, device, batching)
    aug = make_augment("dsa", info.dsa_strategy)
    train_stack(stack, x, y, gens, TrainSettings(epochs=2), aug)  # warm-up
    _sync(device)
    t0 = time.time()
    train_stack(stack, x, y, gens, TrainSettings(epochs=epochs), aug)
    _sync(device)
    dt = time.time() - t0
    return {"bench": "eval_dc_dsa", "dataset": info.name, "ipc": ipc, "models": k, "batching": stack.batching,
            "epochs": epochs, "seconds_per_epoch": dt / epochs, "model_epochs_per_s": k * epochs / dt}


def bench_dm(data, device, ipc: int, iters: int, preset: str) -> dict:
    hp = hparams.resolve("dm", data.info.name, ipc, preset)
    m = get_method("dm")(hp, data, ipc, generator("bench-dm"), device)
    m.init()
    m.step(0)
    _sync(device)
    t0 = time.time()
    for it in range(iters):
        m.step(it)
    _sync(device)
    dt = time.time() - t0
    return {"bench": "dm", "dataset": data.info.name, "ipc": ipc, "preset": preset,
            "batch_real": hp["batch_real"], "iterations_per_s": iters / dt}


def bench_method(data, device, method: str, ipc: int, iters: int, preset: str) -> dict:
    """Seconds per distillation iteration of any registered method (dc, dsa, dm, ...)."""
    hp = hparams.resolve(method, data.info.name, ipc, preset)
    m = get_method(method)(hp, data, ipc, generator("bench", method), device)
    m.init()
    m.step(0)
    _sync(device)
    t0 = time.time()
    for it in range(1, iters + 1):
        m.step(it)
    _sync(device)
    dt = (time.time() - t0) / iters
    return {"bench": "distill", "method": method, "dataset": data.info.name, "ipc": ipc, "preset": preset,
            "seconds_per_iteration": dt, "iterations_per_s": 1 / dt}


# ---- kernel family (FRePo, ISA): distillation steps per second -----------------------------------------------
# Paper cost (ISA, P6): 500k steps in 2.4 h (FRePo) and 2.5 h (ISA) on one A100 for CIFAR-10 IPC 10, i.e. 57.9 and
# 55.6 steps/s. Targets: faster on an H100, ISA within 10 % of FRePo's cost.
#   python benchmarks/bench.py --device cuda --dataset cifar10 --npz cifar10.npz --ipc 10 --kernel
KERNEL_PAPER_STEPS_PER_S = {"frepo": 500_000 / (2.4 * 3600), "isa": 500_000 / (2.5 * 3600)}


def bench_kernel(data, device, ipc: int, iters: int, preset: str) -> list[dict]:
    out = []
    for method in ("frepo", "isa"):
        r = bench_method(data, device, method, ipc, iters, preset)
        r["paper_a100_steps_per_s"] = KERNEL_PAPER_STEPS_PER_S[method]
        out.append(r)
    out.append({"bench": "isa_over_frepo", "cost_ratio": out[0]["iterations_per_s"] / out[1]["iterations_per_s"],
                "paper_cost_ratio": 2.5 / 2.4})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--npz", default=None, help="a local npz for the dataset (else torchvision / embedded)")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--dm-iters", type=int, default=20)
    p.add_argument("--preset", default="paper")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--methods", nargs="*", default=["dc", "dsa"], help="distillation methods to time (besides DM)")
    p.add_argument("--gm-iters", type=int, default=2)
    p.add_argument("--kernel", action="store_true", help="only the FRePo / ISA block: distillation steps/s")
    p.add_argument("--kernel-iters", type=int, default=50)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = prepare(a.dataset, Path(tmp) / "data.npz", npz=a.npz)
        data = load_real(path, get_info(a.dataset), device)
    results = []
    if a.kernel:
        for r in bench_kernel(data, device, a.ipc, a.kernel_iters, a.preset):
            print(json.dumps(r), flush=True)
        return
    for k in (1, 20):
        for batching in (("vmap", "loop") if device.type == "cuda" else ("loop", "vmap")):
            results.append(bench_eval(data, device, a.ipc, k, a.epochs, batching))
            print(json.dumps(results[-1]), flush=True)
    results.append(bench_dm(data, device, a.ipc, a.dm_iters, a.preset))
    print(json.dumps(results[-1]), flush=True)
    for method in a.methods:
        results.append(bench_method(data, device, method, a.ipc, a.gm_iters, a.preset))
        print(json.dumps(results[-1]), flush=True)
    for batching in ("vmap", "loop"):
        one = [r for r in results if r.get("models") == 1 and r.get("batching") == batching]
        twenty = [r for r in results if r.get("models") == 20 and r.get("batching") == batching]
        if one and twenty:
            ratio = twenty[0]["seconds_per_epoch"] / one[0]["seconds_per_epoch"]
            print(json.dumps({"bench": "k20_over_k1", "batching": batching, "cost_ratio": ratio}))


if __name__ == "__main__":
    main()
