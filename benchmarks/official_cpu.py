"""Seconds per iteration of the official VICO-UoE/DatasetCondensation scripts (main.py for DC/DSA, main_DM.py for
DM), run unchanged from a copy outside this repository on a local MNIST npz (x_train, y_train, x_test, y_test; uint8
NHWC), to set beside `benchmarks/bench.py` (benchmarks/README.md). Not a test.

    THREADS=1 python benchmarks/official_cpu.py DIR/main_DM.py 5 --npz mnist.npz -- --dataset MNIST --ipc 10 \\
        --batch_real 64 --eval_mode M --Iteration 1000 --save_path /tmp/res --data_path /tmp/data

Only the dataset loader is replaced (utils.get_dataset: ToTensor + Normalize of the npz arrays); an iteration is the
time between two steps of the synthetic images' optimiser (SGD, momentum 0.5), wall clock and this process's CPU
time. `--eval_mode M --Iteration 1000` keeps the script's evaluation (at iteration 1000 only) out of the timed steps.
"""
import json
import os
import runpy
import sys
import time

import numpy as np
import torch


def main() -> None:
    script, n_iters = sys.argv[1], int(sys.argv[2])
    sep = sys.argv.index("--")
    npz = sys.argv[sys.argv.index("--npz") + 1] if "--npz" in sys.argv[:sep] else "mnist.npz"
    args = sys.argv[sep + 1:]
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    import utils  # the official utils.py

    def get_dataset(dataset, data_path):
        if dataset != "MNIST":
            raise SystemExit("official_cpu.py serves MNIST only")
        d = np.load(npz)
        mean, std = [0.1307], [0.3081]  # the official utils.py MNIST statistics

        def tensor(x):
            return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 255 - mean[0]) / std[0]
        x_train, y_train = tensor(d["x_train"]), torch.from_numpy(d["y_train"]).long()
        dst_train = [(x_train[i], int(y_train[i])) for i in range(len(x_train))]
        dst_test = utils.TensorDataset(tensor(d["x_test"]), torch.from_numpy(d["y_test"]).long())
        loader = torch.utils.data.DataLoader(dst_test, batch_size=256, shuffle=False, num_workers=0)
        return 1, (28, 28), 10, [str(c) for c in range(10)], mean, std, dst_train, dst_test, loader

    utils.get_dataset = get_dataset
    # torch 2.14: DiffAugment can return 1-channel batches whose strides also read as channels-last; the conv then
    # answers channels-last and the official ConvNet's .view fails. Give the script standard-layout tensors back.
    diff_augment = utils.DiffAugment
    utils.DiffAugment = lambda *a, **k: diff_augment(*a, **k).clone(memory_format=torch.contiguous_format)

    wall, cpu = [], []
    sgd_step = torch.optim.SGD.step

    def step(self, *a, **k):
        out = sgd_step(self, *a, **k)
        p, group = self.param_groups[0]["params"][0], self.param_groups[0]
        if p.dim() == 4 and p.shape[1] in (1, 3) and group.get("momentum") == 0.5:  # the synthetic images
            wall.append(time.time())
            cpu.append(time.process_time())
            if len(wall) > n_iters:
                print(json.dumps({"official": os.path.basename(script), "args": " ".join(args),
                                  "threads": torch.get_num_threads(), "s_per_iteration": float(np.diff(wall).mean()),
                                  "cpu_s_per_iteration": float(np.diff(cpu).mean()),
                                  "per_iteration": [round(float(x), 3) for x in np.diff(wall)]}), flush=True)
                os._exit(0)
        return out

    torch.optim.SGD.step = step
    sys.argv = [script] + args
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
