"""Seconds per iteration of the official distillation scripts and per epoch of the official evaluation, run
unchanged from a copy outside this repository on a local MNIST npz (x_train, y_train, x_test, y_test; uint8 NHWC),
to set beside `benchmarks/bench.py` (benchmarks/README.md). Not a test.

    THREADS=1 python benchmarks/official_cpu.py DC_DIR/main_DM.py 5 --npz mnist.npz -- --dataset MNIST --ipc 10 \\
        --batch_real 64 --eval_mode M --Iteration 1000 --save_path /tmp/res --data_path /tmp/data
    THREADS=1 python benchmarks/official_cpu.py MTT_DIR/distill.py 3 --npz mnist.npz -- --dataset MNIST --ipc 10 \\
        --buffer_path BUFFERS --data_path /tmp/data --num_eval 0 --eval_it 100000
    THREADS=1 python benchmarks/official_cpu.py DC_DIR/utils.py 20 --npz mnist.npz -- --ipc 10

VICO-UoE/DatasetCondensation main.py (DC / DSA) and main_DM.py (DM), GeorgeCazenavette/mtt-distillation distill.py
(MTT; expert buffers in its format: `bench.py --official-buffer`). An iteration is the time between two steps of
the synthetic images' optimiser (SGD, momentum 0.5), wall clock and this process's CPU time. `--eval_mode M
--Iteration 1000` (DC/DM) and `--num_eval 0` (MTT) keep the scripts' evaluations out of the timed steps.
`utils.py` times DC's evaluate_synset instead: its training epochs (utils.epoch('train')) on the first `--ipc`
training images of each class, DSA augmentation unless `--dsa False`, one epoch of warm-up.

Shims (none changes what is computed): the Siamese DSA's in-place copy of sample 0's parameters reads a copy
(torch 2.14 refuses the overlapping write; `_load_utils`); DiffAugment's output in the standard memory layout
(the official ConvNet's `.view` fails otherwise); the dataset loader is replaced (get_dataset: ToTensor + Normalize of
the npz arrays); wandb and kornia (MTT's logging and ZCA, neither used here) are inert modules; on a CPU-only
machine `Tensor.cuda` returns the tensor (distill.py moves the images to CUDA to save them at iteration 0).
"""
import argparse
import json
import os
import re
import resource
import runpy
import sys
import time
import types

import numpy as np
import torch

MEAN, STD = 0.1307, 0.3081  # the official utils.py MNIST statistics


def _tensor(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 255 - MEAN) / STD


def _stub_modules() -> None:
    """wandb (MTT's logging) and kornia (MTT's ZCA) as inert modules: neither is installed nor used here."""
    class Config:
        _items: dict = {}

    wandb = types.ModuleType("wandb")
    wandb.config = Config()
    wandb.run = types.SimpleNamespace(name="official_cpu")

    def init(config=None, **_):
        wandb.config._items = dict(vars(config))

    wandb.init = init
    wandb.log = wandb.finish = lambda *a, **k: None
    wandb.Histogram = wandb.Image = lambda *a, **k: None
    sys.modules.setdefault("wandb", wandb)
    sys.modules.setdefault("kornia", types.ModuleType("kornia"))


def _load_utils(path: str) -> types.ModuleType:
    """The official utils.py as module `utils`, with one torch 2.14 shim: its Siamese DSA copies sample 0's
    parameters onto the batch in place (`offset_x[:] = offset_x[0]`), an overlapping write that torch now refuses;
    the right-hand side becomes a copy (`offset_x[0].clone()`), the same values."""
    with open(path) as f:
        source = re.sub(r"^(\s*)(\w+)\[:\] = \2\[0\]$", r"\1\2[:] = \2[0].clone()", f.read(), flags=re.M)
    module = types.ModuleType("utils")
    module.__file__ = path
    sys.modules["utils"] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def _patch_dataset(utils, npz: str, mtt: bool) -> None:
    def get_dataset(dataset, *_, **__):
        if dataset != "MNIST":
            raise SystemExit("official_cpu.py serves MNIST only")
        d = np.load(npz)
        x_train, y_train = _tensor(d["x_train"]), torch.from_numpy(d["y_train"]).long()
        dst_train = [(x_train[i], int(y_train[i])) for i in range(len(x_train))]
        dst_test = utils.TensorDataset(_tensor(d["x_test"]), torch.from_numpy(d["y_test"]).long())
        loader = torch.utils.data.DataLoader(dst_test, batch_size=256, shuffle=False, num_workers=0)
        out = (1, (28, 28), 10, [str(c) for c in range(10)], [MEAN], [STD], dst_train, dst_test, loader)
        return out + (None, {c: c for c in range(10)}, None) if mtt else out  # MTT: loader_train_dict, class maps

    utils.get_dataset = get_dataset


def _mark(wall: list, cpu: list, kernel: list) -> None:
    """Wall clock, this process's CPU time, and its (system seconds, minor page faults) so far."""
    wall.append(time.time())
    cpu.append(time.process_time())
    r = resource.getrusage(resource.RUSAGE_SELF)
    kernel.append((r.ru_stime, r.ru_minflt))


def _report(name: str, args: list, wall: list, cpu: list, kernel: list) -> None:
    n = len(wall) - 1
    print(json.dumps({"official": name, "args": " ".join(args), "threads": torch.get_num_threads(),
                      "system_s_per_iteration": (kernel[-1][0] - kernel[0][0]) / n,
                      "page_faults_per_iteration": (kernel[-1][1] - kernel[0][1]) / n,
                      "s_per_iteration": float(np.diff(wall).mean()), "cpu_s_per_iteration": float(np.diff(cpu).mean()),
                      "per_iteration": [round(float(x), 3) for x in np.diff(wall)],
                      "cpu_per_iteration": [round(float(x), 3) for x in np.diff(cpu)]}), flush=True)
    os._exit(0)


def time_evaluation(utils, npz: str, n_epochs: int, args: list) -> None:
    """CPU seconds per training epoch of the official evaluate_synset (DC utils.py), `n_epochs` after one warm-up."""
    p = argparse.ArgumentParser()
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch_train", type=int, default=256)
    p.add_argument("--lr_net", type=float, default=0.01)
    p.add_argument("--dsa", default="True", choices=["True", "False"])
    p.add_argument("--dsa_strategy", default="color_crop_cutout_flip_scale_rotate")
    a = p.parse_args(args)
    d = np.load(npz)
    y = torch.from_numpy(d["y_train"]).long()
    idx = torch.cat([torch.nonzero(y == c).flatten()[:a.ipc] for c in range(10)])
    x = _tensor(d["x_train"][idx.numpy()])
    ns = argparse.Namespace(device="cpu", lr_net=a.lr_net, epoch_eval_train=n_epochs + 5, batch_train=a.batch_train,
                            dsa=a.dsa == "True", dsa_strategy=a.dsa_strategy, dsa_param=utils.ParamDiffAug(),
                            dc_aug_param=None)
    wall, cpu, kernel = [], [], []
    _mark(wall, cpu, kernel)
    train_epoch = utils.epoch

    def epoch(mode, *e_args, **e_kwargs):
        out = train_epoch(mode, *e_args, **e_kwargs)
        if mode == "train":
            _mark(wall, cpu, kernel)
            if len(wall) > n_epochs + 1:  # the first epoch is the warm-up
                _report("utils.py evaluate_synset", args, wall[1:], cpu[1:], kernel[1:])
        return out

    utils.epoch = epoch
    net = utils.get_network("ConvNet", 1, 10, (28, 28))
    utils.evaluate_synset(0, net, x, y[idx], None, ns)


def main() -> None:
    script, n_iters = sys.argv[1], int(sys.argv[2])
    sep = sys.argv.index("--")
    npz = sys.argv[sys.argv.index("--npz") + 1] if "--npz" in sys.argv[:sep] else "mnist.npz"
    args = sys.argv[sep + 1:]
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    _stub_modules()
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
    utils = _load_utils(os.path.join(os.path.dirname(os.path.abspath(script)), "utils.py"))

    # torch 2.14: DiffAugment can return 1-channel batches whose strides also read as channels-last; the conv then
    # answers channels-last and the official ConvNet's .view fails. Give the script standard-layout tensors back.
    diff_augment = utils.DiffAugment
    utils.DiffAugment = lambda *a, **k: diff_augment(*a, **k).clone(memory_format=torch.contiguous_format)
    if os.path.basename(script) == "utils.py":
        time_evaluation(utils, npz, n_iters, args)
        return
    _patch_dataset(utils, npz, mtt=os.path.basename(script) == "distill.py")

    wall, cpu, kernel = [], [], []
    sgd_step = torch.optim.SGD.step

    def step(self, *a, **k):
        out = sgd_step(self, *a, **k)
        p, group = self.param_groups[0]["params"][0], self.param_groups[0]
        if p.dim() == 4 and p.shape[1] in (1, 3) and group.get("momentum") == 0.5:  # the synthetic images
            _mark(wall, cpu, kernel)
            if len(wall) > n_iters:
                _report(os.path.basename(script), args, wall, cpu, kernel)
        return out

    torch.optim.SGD.step = step
    sys.argv = [script] + args
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
