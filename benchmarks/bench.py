"""Throughput benchmarks (not tests): evaluation with K = 1 and K = 20 models of a cell, DM iterations/s and
seconds per iteration of DC/DSA (the official DSA code: 2.85 s per CIFAR-10 IPC 10 iteration on one H100).

    python benchmarks/bench.py --device cuda --dataset cifar10 --npz path/to/cifar10.npz
    python benchmarks/bench.py --device cpu                   # embedded mnist5k, CPU
    python benchmarks/bench.py --device cuda --dataset cifar10 --ipc 10 --idc   # IDC / DREAM s per inner loop
    python benchmarks/bench.py --device cuda --dataset cifar10 --ipc 10 --idm   # IDM s per iteration (vs DM)
    python benchmarks/bench.py --device cpu --ipc 1 --preset quick --feature    # DM, dm-isa, CAFE s per iteration
    python benchmarks/bench.py --device cpu --trajectory --official-buffer DIR  # + MTT experts in distill.py's format

Prints one JSON object per measurement. Target on a GPU: 20 models cost at most 3x one model.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from ddflow import hparams
from ddflow.augment import make_augment
from ddflow.data import get_info, load_real, prepare
from ddflow.methods import get_method
from ddflow.nets import build_net
from ddflow.runtime import resolve_device, reuse_freed_memory
from ddflow.seeding import generator
from ddflow.smoke.speed import sync, time_method
from ddflow.train import NetStack, TrainSettings, train_stack


def bench_eval(data, device, ipc: int, k: int, epochs: int, batching: str) -> dict:
    info = data.info
    idx = torch.cat([i[:ipc] for i in data.indices_per_class()])
    x, y = data.x_train[idx].to(device), data.y_train[idx].to(device)
    gens = [generator("bench", i) for i in range(k)]
    stack = NetStack(build_net("ConvNet", info.channels, info.classes, info.size), gens, device, batching)
    aug = make_augment("dsa", info.dsa_strategy)
    train_stack(stack, x, y, gens, TrainSettings(epochs=2), aug)  # warm-up
    sync(device)
    t0, c0, r0 = time.time(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    train_stack(stack, x, y, gens, TrainSettings(epochs=epochs), aug)
    sync(device)
    dt, cpu, r1 = time.time() - t0, time.process_time() - c0, resource.getrusage(resource.RUSAGE_SELF)
    return {"bench": "eval_dc_dsa", "dataset": info.name, "ipc": ipc, "models": k, "batching": stack.batching,
            "epochs": epochs, "seconds_per_epoch": dt / epochs, "cpu_seconds_per_epoch": cpu / epochs,
            "system_seconds_per_epoch": (r1.ru_stime - r0.ru_stime) / epochs,
            "page_faults_per_epoch": (r1.ru_minflt - r0.ru_minflt) / epochs,
            "model_epochs_per_s": k * epochs / dt}


def _hp(method: str, data, ipc: int, preset: str, batch_real: int | None) -> dict:
    """The resolved hyperparameters, with `batch_real` replaced when given (to match an official run's setting)."""
    hp = hparams.resolve(method, data.info.name, ipc, preset)
    if batch_real:
        hp["batch_real"] = batch_real
    return hp


def bench_distill(data, device, method: str, ipc: int, iters: int, preset: str, batch_real: int | None = None) -> dict:
    """Seconds per iteration of a distillation method (DM, DC, DSA, ...), with an optional batch_real."""
    hp = _hp(method, data, ipc, preset, batch_real)
    return {**time_method(data, device, method, ipc, iters, preset, hp=hp), "batch_real": hp["batch_real"],
            "threads": torch.get_num_threads()}


def bench_dm(data, device, ipc: int, iters: int, preset: str, batch_real: int | None = None) -> dict:
    return {**bench_distill(data, device, "dm", ipc, iters, preset, batch_real), "bench": "dm"}


# ---- trajectory family: expert epochs/s, MTT / EAD iterations/s, MTT unroll memory ------------------
def _fake_experts(data, net: str, n: int, epochs: int, tmp: Path) -> list[str]:
    """Expert files with random-walk trajectories (throughput does not depend on the values)."""
    from ddflow.io import save_pt
    from ddflow.records.experts import EXPERT_FORMAT
    info = data.info
    paths = []
    for i in range(n):
        g = generator("bench-expert", i)
        p0 = dict(build_net(net, info.channels, info.classes, info.size, g).named_parameters())
        params = {k: torch.stack([v.detach() + 1e-3 * e * torch.randn(v.shape, generator=g)
                                  for e in range(epochs + 1)]) for k, v in p0.items()}
        path = tmp / f"e{i}.pt"
        save_pt({"format": EXPERT_FORMAT, "dataset": info.name, "prep": "raw", "net": net, "index": i,
                 "epochs": epochs, "lr": [0.01] * epochs, "params": params}, path)
        paths.append(str(path))
    return paths


def write_official_buffer(data, net: str, n: int, epochs: int, root: Path) -> Path:
    """The experts of `_fake_experts` (the same values) in MTT buffer.py's format, for the official distill.py:
    root/<Dataset>/<net>/replay_buffer_0.pt = a list of trajectories, each a list per epoch of the parameter tensors
    in the network's order (buffer.py `timestamps.append([p.detach().cpu() for p in teacher_net.parameters()])`)."""
    names = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
    out = root / names.get(data.info.name, data.info.name) / net
    out.mkdir(parents=True, exist_ok=True)
    buffer = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in _fake_experts(data, net, n, epochs, Path(tmp)):
            params = torch.load(path, weights_only=False)["params"]
            buffer.append([[v[e].clone() for v in params.values()] for e in range(epochs + 1)])
    torch.save(buffer, out / "replay_buffer_0.pt")
    return out / "replay_buffer_0.pt"


def bench_experts(data, device, k: int, epochs: int, net: str = "ConvNet") -> dict:
    """Expert epochs per second: K experts in one NetStack, MTT buffer.py settings (SGD 0.01, batch 256, DSA)."""
    info = data.info
    gens = [generator("bench-expert-train", i) for i in range(k)]
    stack = NetStack(build_net(net, info.channels, info.classes, info.size), gens, device)
    aug = make_augment("dsa", "color_crop_cutout_flip_scale_rotate")
    ts = TrainSettings(epochs=1, lr=0.01, momentum=0.0, weight_decay=0.0, batch=256)
    train_stack(stack, data.x_train[:1024], data.y_train[:1024], gens, ts, aug)  # warm-up
    sync(device)
    t0 = time.time()
    for _ in range(epochs):
        train_stack(stack, data.x_train, data.y_train, gens, ts, aug)
    sync(device)
    dt = time.time() - t0
    return {"bench": "experts", "dataset": info.name, "net": net, "experts": k, "batching": stack.batching,
            "seconds_per_epoch_per_expert": dt / (epochs * k), "expert_epochs_per_s": k * epochs / dt}


def bench_trajectory_method(data, device, method: str, ipc: int, iters: int, preset: str,
                            syn_steps: int | None = None, batch_syn: int | None = None) -> dict:
    """MTT / HaBa / EAD iterations per second on fake experts of the method's net; peak memory of the run."""
    from ddflow.stages.sampling import write_ead_pool, write_mtt_manifest
    hp = hparams.resolve(method, data.info.name, ipc, preset)
    hp["prep"] = "raw"  # throughput only: skip fitting a ZCA
    hp["expert_standardize"] = "none"  # the fake experts' prep is plain 'raw' (HaBa's paper experts: raw-batchstd)
    if syn_steps:
        hp["syn_steps"] = syn_steps
    if batch_syn:
        hp["batch_syn"] = batch_syn
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if hp["sampler"] == "mtt":  # mtt, haba: MTT windows
            need = int(hp["max_start_epoch"]) + int(hp["expert_epochs"])
            paths = _fake_experts(data, hp["net"], 2, need, tmp)
            write_mtt_manifest(f"mtt-m{hp['expert_epochs']}-t{hp['max_start_epoch']}", data.info.name, "raw",
                               hp["net"], paths, tmp / "man.json")
            inputs = {"trajectories": str(tmp / "man.json")}
        else:
            paths = _fake_experts(data, hp["net"], 2, max(2, int(hp["pool"]) // 2 + 1), tmp)
            write_ead_pool(f"ead-p{hp['pool']}", data.info.name, "raw", hp["net"], paths, tmp / "pool.pt")
            inputs = {"trajectories": str(tmp / "pool.pt")}
        result = time_method(data, device, method, ipc, iters, preset, hp=hp, inputs=inputs)
    return {**result, "net": hp["net"], "syn_steps": hp.get("syn_steps"), "batch_syn": hp.get("batch_syn")}


def run_trajectory_benches(data, device, a) -> None:
    if a.official_buffer:  # MTT's paper setting: max_start_epoch + expert_epochs epochs (hparams mtt.yaml)
        hp = hparams.resolve("mtt", data.info.name, a.ipc, a.preset)
        need = int(hp["max_start_epoch"]) + int(hp["expert_epochs"])
        path = write_official_buffer(data, hp["net"], 2, need, Path(a.official_buffer))
        print(json.dumps({"bench": "official_buffer", "path": str(path), "epochs": need}), flush=True)
    if a.expert_block:
        print(json.dumps(bench_experts(data, device, a.expert_block, a.expert_epochs, a.expert_net)), flush=True)
    for method in a.traj_methods:
        print(json.dumps(bench_trajectory_method(data, device, method, a.ipc, a.traj_iters, a.preset,
                                                 a.syn_steps if method != "ead" else None)), flush=True)


# ---- IDC / DREAM: inner loops per second -------------------------------------------------------
def bench_idc(data, device, method: str, ipc: int, inner_loops: int, preset: str) -> dict:
    """Seconds per inner loop of idc / dream (DREAM supp. Table 2: 0.2 s IDC, 0.3 s DREAM on CIFAR-10), from the
    method's own timing over one outer iteration of `inner_loops` inner loops (after a 2-loop warm-up)."""
    hp = hparams.resolve(method, data.info.name, ipc, preset)
    hp["inner_loops"] = 2
    m = get_method(method)(hp, data, ipc, generator("bench", method), device)
    m.init()
    m.step(0)  # warm-up (cuDNN autotuning, allocator)
    m.hp["inner_loops"] = inner_loops
    m.timing = {k: 0.0 for k in m.timing}
    m.loops_done = 0
    sync(device)
    t0 = time.time()
    m.step(1)
    sync(device)
    dt = (time.time() - t0) / inner_loops
    t = m.result()["timing"]
    return {"bench": "idc_inner_loop", "method": method, "dataset": data.info.name, "ipc": ipc, "preset": preset,
            "factor": hp["factor"], "n_data": hp["n_data"], "batch_real": hp["batch_real"],
            "inner_loops": inner_loops, "clustering_s": t["clustering_s"], "update_images_s": t["update_images_s"],
            "inner_loop_s": dt, "inner_loops_per_s": 1 / dt}


# ---- kernel family (FRePo, ISA): distillation steps per second -----------------------------------------------
# Paper cost (ISA, P6): 500k steps in 2.4 h (FRePo) and 2.5 h (ISA) on one A100 for CIFAR-10 IPC 10, i.e. 57.9 and
# 55.6 steps/s. Targets: faster on an H100, ISA within 10 % of FRePo's cost.
#   python benchmarks/bench.py --device cuda --dataset cifar10 --npz cifar10.npz --ipc 10 --kernel
KERNEL_PAPER_STEPS_PER_S = {"frepo": 500_000 / (2.4 * 3600), "isa": 500_000 / (2.5 * 3600)}


def bench_kernel(data, device, ipc: int, iters: int, preset: str) -> list[dict]:
    out = []
    for method in ("frepo", "isa"):
        r = time_method(data, device, method, ipc, iters, preset)
        r["paper_a100_steps_per_s"] = KERNEL_PAPER_STEPS_PER_S[method]
        out.append(r)
    out.append({"bench": "isa_over_frepo", "cost_ratio": out[0]["iterations_per_s"] / out[1]["iterations_per_s"],
                "paper_cost_ratio": 2.5 / 2.4})
    return out


# ---- IDM: seconds per iteration beside DM's (neither IDM's README nor command.txt states a cost) ---------------
#   python benchmarks/bench.py --device cuda --dataset cifar10 --npz cifar10.npz --ipc 10 --idm
def bench_idm(data, device, ipc: int, iters: int, preset: str) -> list[dict]:
    out = [time_method(data, device, m, ipc, iters, preset) for m in ("dm", "idm")]
    hp = hparams.resolve("idm", data.info.name, ipc, preset)
    out[1].update({k: hp[k] for k in ("factor", "batch_real", "fetch_net_num", "model_train_steps", "trained_bs")})
    out.append({"bench": "idm_over_dm", "cost_ratio": out[0]["iterations_per_s"] / out[1]["iterations_per_s"]})
    return out
#   python benchmarks/bench.py --device cuda --dataset cifar10 --npz cifar10.npz --ipc 10 --feature
# Official costs: CAFE's README and distill.py state none (its loops are data-dependent: `outer`/`inner` per
# iteration are reported); ISA states its module's cost only on FRePo (2.5 h vs 2.4 h for 500k steps, one A100;
# paper-tables.md P6), printed beside dm-isa's cost ratio over dm.
def bench_feature(data, device, ipc: int, iters: int, preset: str) -> list[dict]:
    out = {m: time_method(data, device, m, ipc, iters, preset) for m in ("dm", "dm-isa", "cafe", "cafe-dream")}
    out["cafe"]["official_s_per_iteration"] = None
    return [*out.values(), {"bench": "dm_isa_over_dm", "cost_ratio": out["dm-isa"]["seconds_per_iteration"]
                            / out["dm"]["seconds_per_iteration"], "paper_cost_ratio_on_frepo": 2.5 / 2.4}]


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
    p.add_argument("--trajectory", action="store_true", help="only the trajectory family's benchmarks")
    p.add_argument("--expert-block", type=int, default=10, help="experts trained together (0: no expert bench)")
    p.add_argument("--traj-methods", nargs="*", default=["mtt", "haba", "ead"])
    p.add_argument("--official-buffer", default=None, help="also write the fake experts for distill.py here")
    p.add_argument("--expert-epochs", type=int, default=1)
    p.add_argument("--expert-net", default="ConvNet")
    p.add_argument("--traj-iters", type=int, default=3)
    p.add_argument("--syn-steps", type=int, default=None, help="MTT syn_steps (default: the hparams')")
    p.add_argument("--idc", action="store_true", help="only the IDC / DREAM inner-loop benchmark")
    p.add_argument("--idc-loops", type=int, default=20, help="inner loops timed (DREAM re-clusters every 10)")
    p.add_argument("--kernel", action="store_true", help="only the FRePo / ISA block: distillation steps/s")
    p.add_argument("--kernel-iters", type=int, default=50)
    p.add_argument("--idm", action="store_true", help="only IDM's s/iteration and peak memory beside DM's")
    p.add_argument("--idm-iters", type=int, default=20)
    p.add_argument("--feature", action="store_true", help="only the feature-matching block: dm, dm-isa, cafe")
    p.add_argument("--feature-iters", type=int, default=5)
    p.add_argument("--batch-real", type=int, default=None, help="replace the hparams' batch_real (DM, DC, DSA)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation benchmarks (distillation only)")
    p.add_argument("--no-dm", action="store_true", help="skip DM (time only --methods)")
    p.add_argument("--eval-models", type=int, nargs="*", default=[1, 20], help="K of the evaluation benchmark")
    p.add_argument("--eval-batching", nargs="*", default=None, help="vmap / loop (default: both)")
    p.add_argument("--system-allocator", action="store_true",
                   help="leave glibc's defaults (ddflow's jobs apply runtime.reuse_freed_memory)")
    a = p.parse_args()
    if not a.system_allocator:
        reuse_freed_memory()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = prepare(a.dataset, Path(tmp) / "data.npz", npz=a.npz)
        data = load_real(path, get_info(a.dataset), device)
    if a.trajectory:
        run_trajectory_benches(data, device, a)
        return
    if a.idc:
        for method in ("idc", "dream"):
            print(json.dumps(bench_idc(data, device, method, a.ipc, a.idc_loops, a.preset)), flush=True)
        return
    if a.idm:
        for r in bench_idm(data, device, a.ipc, a.idm_iters, a.preset):
            print(json.dumps(r), flush=True)
        return
    if a.feature:
        for r in bench_feature(data, device, a.ipc, a.feature_iters, a.preset):
            print(json.dumps(r), flush=True)
        return
    results = []
    if a.kernel:
        for r in bench_kernel(data, device, a.ipc, a.kernel_iters, a.preset):
            print(json.dumps(r), flush=True)
        return
    for k in (() if a.no_eval else a.eval_models):
        for batching in a.eval_batching or (("vmap", "loop") if device.type == "cuda" else ("loop", "vmap")):
            results.append(bench_eval(data, device, a.ipc, k, a.epochs, batching))
            print(json.dumps(results[-1]), flush=True)
    if not a.no_dm:
        results.append(bench_dm(data, device, a.ipc, a.dm_iters, a.preset, a.batch_real))
        print(json.dumps(results[-1]), flush=True)
    for method in a.methods:
        results.append(bench_distill(data, device, method, a.ipc, a.gm_iters, a.preset, a.batch_real))
        print(json.dumps(results[-1]), flush=True)
    for batching in ("vmap", "loop"):
        one = [r for r in results if r.get("models") == 1 and r.get("batching") == batching]
        twenty = [r for r in results if r.get("models") == 20 and r.get("batching") == batching]
        if one and twenty:
            ratio = twenty[0]["seconds_per_epoch"] / one[0]["seconds_per_epoch"]
            print(json.dumps({"bench": "k20_over_k1", "batching": batching, "cost_ratio": ratio}))


if __name__ == "__main__":
    main()
