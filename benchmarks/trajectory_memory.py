"""Memory of the trajectory family (not a test). Every measurement runs in a fresh subprocess and reports
the growth of its peak resident memory (ru_maxrss) over what it held just before (CPU), or the peak CUDA memory.

    python benchmarks/trajectory_memory.py step --dataset cifar10 --ipc 50 --syn-steps 1 2 3
        one distillation iteration of MTT (unrolled graph) and TESLA (constant memory, official and exact
        meta-gradients) at the paper hyperparameters of that cell but `syn_steps`, on random data of the dataset's
        shape and random-walk experts of its net: seconds and peak memory per syn_steps, and a linear fit
        extrapolated to the cell's paper syn_steps (marked "extrapolated").
    python benchmarks/trajectory_memory.py experts --experts 8 --epochs 50
        host memory of the MTT manifest writer, the EAD pool writer and one MTT window read, on generated expert
        files of CIFAR-10 shape (ConvNet, 3x32x32, 10 classes), memory-mapped (now) or loaded whole (before).

Prints one JSON object per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> float:
    """Reset the resident high-water mark (Linux: clear_refs 5 resets VmHWM) and return the current RSS, so that
    peak - base is the growth of the measured block itself, not of an earlier transient."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _rss_mb() -> float:
    """The resident high-water mark since the last _reset_peak (VmHWM)."""
    return _status_mb("VmHWM")


def fake_experts(dataset: str, net: str, n: int, epochs: int, out: Path) -> list[str]:
    """Expert files in ddflow's format with random-walk trajectories (memory and time do not depend on values)."""
    from ddflow.data import get_info
    from ddflow.io import save_pt
    from ddflow.nets import build_net
    from ddflow.records.experts import EXPERT_FORMAT
    info = get_info(dataset)
    paths = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        p0 = dict(build_net(net, info.channels, info.classes, info.size, g).named_parameters())
        params = {k: torch.stack([v.detach() + 1e-3 * e * torch.randn(v.shape, generator=g)
                                  for e in range(epochs + 1)]) for k, v in p0.items()}
        path = out / f"e{i}.pt"
        save_pt({"format": EXPERT_FORMAT, "dataset": dataset, "prep": "raw", "net": net, "index": i,
                 "epochs": epochs, "lr": [0.01] * epochs, "settings": {}, "mean": list(info.mean),
                 "std": list(info.std), "params": params}, path)
        paths.append(str(path))
    return paths


# ---- one distillation iteration -----------------------------------------------------------------------------------
def _cell(method: str, dataset: str, ipc: int, syn_steps: int) -> dict:
    from ddflow import hparams
    hp = hparams.resolve(method, dataset, ipc, "paper")
    hp.update({"syn_steps": syn_steps, "prep": "raw", "normalize_as": None})  # no ZCA fit: memory/time only
    return hp


def write_window_experts(dataset: str, hp: dict, tmp: Path) -> str:
    """One random-walk expert long enough for the cell's windows, and its MTT manifest (written by the parent, so
    the child's memory high-water mark before the measured step is its own)."""
    from ddflow.stages.sampling import write_mtt_manifest
    paths = fake_experts(dataset, hp["net"], 1, int(hp["max_start_epoch"]) + int(hp["expert_epochs"]), tmp)
    man = tmp / "man.json"
    write_mtt_manifest(f"mtt-m{hp['expert_epochs']}-t{hp['max_start_epoch']}", dataset, "raw", hp["net"], paths, man)
    return str(man)


def one_step(method: str, dataset: str, ipc: int, syn_steps: int, meta_gradient: str, device: str, man: str) -> dict:
    from ddflow.data import RealData, get_info
    from ddflow.methods import get_method
    from ddflow.seeding import generator
    dev = torch.device(device)
    info = get_info(dataset)
    hp = _cell(method, dataset, ipc, syn_steps)
    if method == "tesla":
        hp["meta_gradient"] = meta_gradient
    g = torch.Generator().manual_seed(0)
    y = torch.arange(info.classes).repeat(ipc)
    x = torch.randn(len(y), info.channels, info.size, info.size, generator=g)
    data = RealData(x.to(dev), y.to(dev), x[:10].to(dev), y[:10].to(dev), info)
    m = get_method(method)(hp, data, ipc, generator("bench", method), dev, {"trajectories": man})
    m.init()
    if dev.type == "cuda":
        m.step(0)  # warm-up (cuDNN autotuning); then the peak of one timed iteration
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    base = _reset_peak() if dev.type == "cpu" else torch.cuda.memory_allocated(dev) / 2**20
    t0, c0 = time.time(), time.process_time()
    m.step(1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds, cpu_seconds = time.time() - t0, time.process_time() - c0
    peak = (_rss_mb() if dev.type == "cpu" else torch.cuda.max_memory_allocated(dev) / 2**20) - base
    return {"bench": "trajectory_step", "method": method if method != "tesla" else f"tesla-{meta_gradient}",
            "dataset": dataset, "ipc": ipc, "syn_steps": syn_steps, "batch_syn": hp["batch_syn"] or len(y),
            "net": hp["net"], "device": device, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mb": peak,
            "memory": ("peak RSS (VmHWM) over one iteration minus RSS before" if dev.type == "cpu"
                       else "peak CUDA allocated over one iteration minus before")}


def fit(rows: list[dict], at: int) -> dict:
    """Least-squares line through (syn_steps, value) for the times and peak_mb, evaluated at `at`."""
    xs = torch.tensor([float(r["syn_steps"]) for r in rows], dtype=torch.float64)
    out = {}
    for key in ("seconds", "cpu_seconds", "peak_mb"):
        ys = torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)
        if len(rows) > 1:
            a = torch.stack([torch.ones_like(xs), xs], 1)
            c0, c1 = torch.linalg.lstsq(a, ys[:, None]).solution[:, 0].tolist()
        else:
            c0, c1 = 0.0, float(ys[0] / xs[0])
        out[f"{key}_per_syn_step"] = c1
        out[f"{key}_at_paper_syn_steps"] = c0 + c1 * at
    return out


# ---- expert reading -----------------------------------------------------------------------------------------------
def read_experts(kind: str, mode: str, paths: list[str], tmp: str) -> dict:
    """Peak RSS growth of one expert-reading job; mode 'full' loads files whole (the code before memory mapping)."""
    from ddflow.records.experts import load_expert
    from ddflow.stages import sampling as ts
    if mode == "full":
        ts.load_expert = lambda *a, **k: load_expert(*a, **{**k, "mmap": False})
    base = _reset_peak()
    t0 = time.time()
    if kind == "manifest":
        ts.write_mtt_manifest("mtt-m2-t40", "cifar10", "raw", "ConvNet", paths, Path(tmp) / "man.json")
    elif kind == "pool":
        ts.write_ead_pool("ead-p100", "cifar10", "raw", "ConvNet", paths, Path(tmp) / "pool.pt")
    else:  # one MTT window: two epochs of one expert, as methods.mtt.MTT.window reads them
        e = load_expert(paths[0], "cifar10", "raw", "ConvNet", mmap=mode == "mmap")
        window = {n: (v[10].clone(), v[12].clone()) for n, v in e["params"].items()}
        assert window
    return {"bench": "expert_read", "job": kind, "mode": mode, "experts": len(paths),
            "file_mb": sum(Path(p).stat().st_size for p in paths) / 2**20 / len(paths),
            "peak_rss_growth_mb": _rss_mb() - base, "seconds": time.time() - t0}


def _child(args: list[str]) -> dict:
    # a fixed glibc mmap threshold: blocks over 128 KiB are mapped and returned to the system when freed, so the RSS
    # high-water mark follows what is allocated, not heap fragmentation (glibc otherwise raises the threshold after the
    # first large free, and small long-lived tensors then pin freed activation memory in the heap)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, __file__, "_child", *args], check=True, capture_output=True, text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("step")
    s.add_argument("--dataset", default="cifar10")
    s.add_argument("--ipc", type=int, default=50)
    s.add_argument("--syn-steps", type=int, nargs="+", default=[1, 2, 3])
    s.add_argument("--methods", nargs="+", default=["mtt", "tesla-official", "tesla-exact"])
    s.add_argument("--device", default="cpu")
    e = sub.add_parser("experts")
    e.add_argument("--experts", type=int, default=8)
    e.add_argument("--epochs", type=int, default=50)
    c = sub.add_parser("_child")
    c.add_argument("rest", nargs="+")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.cmd == "_child":
        kind, *rest = a.rest
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "step":
                method, dataset, ipc, steps, grad, device, man = rest
                r = one_step(method, dataset, int(ipc), int(steps), grad, device, man)
            else:
                job, mode, *paths = rest
                r = read_experts(job, mode, paths, tmp)
        print(json.dumps(r))
        return
    if a.cmd == "step":
        from ddflow import hparams
        for name in a.methods:
            method, _, grad = name.partition("-")
            rows = []
            with tempfile.TemporaryDirectory() as tmp:
                man = write_window_experts(a.dataset, _cell(method, a.dataset, a.ipc, 1), Path(tmp))
                for steps in a.syn_steps:
                    rows.append(_child(["step", method, a.dataset, str(a.ipc), str(steps), grad or "official",
                                        a.device, man]))
                    print(json.dumps(rows[-1]), flush=True)
            paper = int(hparams.resolve(method, a.dataset, a.ipc, "paper")["syn_steps"])
            print(json.dumps({"bench": "trajectory_step_fit", "method": name, "dataset": a.dataset, "ipc": a.ipc,
                              "measured_syn_steps": a.syn_steps, "paper_syn_steps": paper, "extrapolated": True,
                              **fit(rows, paper)}), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = fake_experts("cifar10", "ConvNet", a.experts, a.epochs, Path(tmp))
        for job in ("manifest", "pool", "window"):
            for mode in ("full", "mmap"):
                print(json.dumps(_child(["read", job, mode, *paths])), flush=True)


if __name__ == "__main__":
    main()
