"""KIP's two evaluations: `krr-inf` (kernel ridge regression with the infinite-width kernel: KIP's own tables) and
`kip-nn` (KIP's finite-network transfer, google-research kip/nn_training.ipynb: the numbers DREAM's Table 1 copies).

krr-inf: the test set predicted from the distilled support with the kernel the settings name (arch, depth, W_std,
b_std, parameterisation, get), lambda = |reg| trace(K_ss)/n (KIP.ipynb loss_acc_fn), in float64; accuracy = argmax
against the true class. Deterministic: one value per cell.

kip-nn (nn_training.ipynb get_config / run_trainer): a fresh network (`ConvNet`, width 1024, depth 3 with the
prepended conv, W_std sqrt(2), b_std 0.1, 'standard' parameterisation, no normalisation) trained with
0.5 * mean((f(x) - y)^2) + 0.5 * l2 * sum(theta^2) on the set's labels (hard labels as one_hot - 1/C), momentum 0.9
(jax optimizers.momentum), batch 100, `steps` steps, lr(t) = lr0 * 0.5 * (1 + cos(pi t / steps)), where
lr0 = max_lr_factor * max_lr and max_lr = 2 * (n * C) / lambda_max, lambda_max the largest eigenvalue of the initial
network's empirical NTK of sum(f) / sqrt(C) on the first n (`ntk_inputs`, 50) validation images
(neural-tangents predict.max_learning_rate with momentum 0). The validation split supplies those images (the notebook
takes them from its 5,000-image held-out part of the train split); nothing is chosen on the test split. Test accuracy
after the last step. The batches come from consecutive random permutations of the set (the notebook's
tf.data repeat().shuffle(N).batch(100) mixes neighbouring passes in its shuffle buffer: same distribution per pass).
"""
from __future__ import annotations

import math

import torch
from torch.func import functional_call, grad, vmap

from ..data import RealData
from ..errors import DdflowError
from ..nets.kip import build_kip_net
from ..ops.infinite_kernels import KernelNet, kernels
from ..ops.krr import krr_lambda, krr_targets
from ..progress import Progress
from ..records import DistilledSet
from .registry import desc, joined, protocol, scored


@torch.no_grad()
def krr_inf_accuracy(x_s: torch.Tensor, y_s: torch.Tensor, x_test, y_test: torch.Tensor, net: KernelNet,
                     get: str = "ntk", reg: float = 1e-6, chunk: int = 500, max_block: int = 2 ** 24) -> float:
    xs = x_s.double()
    k_ss = kernels(xs, None, net, get, max_block)
    a = k_ss + krr_lambda(k_ss, reg) * torch.eye(len(k_ss), dtype=k_ss.dtype, device=k_ss.device)
    w = torch.linalg.solve(a, y_s.double())
    correct = 0
    for start in range(0, len(y_test), chunk):
        xt = x_test[start:start + chunk].to(xs.device).double()
        pred = kernels(xt, xs, net, get, max_block) @ w
        correct += int((pred.argmax(1).cpu() == y_test[start:start + chunk].cpu()).sum())
    return 100.0 * correct / len(y_test)


@protocol("krr-inf", variants=("hard",))
def evaluate_krr_inf(record: DistilledSet, data: RealData, settings: dict, generators,
                     device: torch.device) -> list[float]:
    net = KernelNet.from_settings(settings)
    y_s = krr_targets(record.labels, data.info.classes).to(device)
    x_s, get, reg = record.images.to(device), str(settings.get("get", "ntk")), float(settings.get("reg", 1e-6))

    def acc(x, y):   # deterministic: every "model" is the same kernel machine
        a = krr_inf_accuracy(x_s, y_s, x, y, net, get, reg, max_block=int(settings.get("max_block", 2 ** 24)))
        return [a for _ in generators]

    return scored(acc, data)


def _reduced(net: torch.nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """nn_training.ipynb logit_reduced_f: sum of the logits / sqrt(C)."""
    out = functional_call(net, params, (x,))
    return out.sum(-1) / math.sqrt(out.shape[-1])


def empirical_ntk(net: torch.nn.Module, x: torch.Tensor, chunk: int = 10) -> torch.Tensor:
    """(n, n) empirical NTK J J^T of the reduced logit, J = the per-input gradients, `chunk` inputs at a time
    (nn_training.ipynb: nt.empirical_ntk_fn batched by 10). Holds J: n x (number of parameters) numbers."""
    params = {k: v.detach() for k, v in net.named_parameters()}

    def one(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return _reduced(net, p, xi.unsqueeze(0))[0]

    per_input = vmap(grad(one), in_dims=(None, 0))
    rows = []
    for start in range(0, len(x), chunk):
        g = per_input(params, x[start:start + chunk])
        rows.append(torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], 1))
    jac = torch.cat(rows)
    return jac @ jac.T


def max_learning_rate(ntk: torch.Tensor, y_size: int, momentum: float = 0.0, eps: float = 1e-12) -> float:
    """neural-tangents predict.max_learning_rate: 2 (1 + momentum) y_size / (lambda_max + eps)."""
    lam = float(torch.linalg.eigvalsh(ntk.double())[-1])
    return 2 * (1 + momentum) * y_size / (lam + eps)


def train_kip_nn(images: torch.Tensor, targets: torch.Tensor, x_lr: torch.Tensor, info, settings: dict,
                 generator: torch.Generator, device: torch.device, label: str) -> torch.nn.Module:
    classes = info.classes
    net = build_kip_net(str(settings["arch"]), info.channels, classes, info.size, int(settings["width"]),
                        int(settings["depth"]), str(settings["parameterization"]),
                        bool(settings.get("prepend_conv", True)), float(settings["w_std"]), float(settings["b_std"]),
                        generator).to(device)
    lr0 = float(settings["max_lr_factor"]) * max_learning_rate(empirical_ntk(net, x_lr), len(x_lr) * classes)
    steps, l2 = int(settings["steps"]), float(settings["l2"])
    opt = torch.optim.SGD(net.parameters(), lr=lr0, momentum=float(settings["momentum"]))
    x, y = images.to(device), targets.to(device)
    n, bs = len(x), int(settings["batch"])
    stream = torch.empty(0, dtype=torch.long)
    progress = Progress(steps, label)
    for t in range(steps):
        while len(stream) < bs:
            stream = torch.cat([stream, torch.randperm(n, generator=generator)])
        idx, stream = stream[:bs].to(device), stream[bs:]
        for g in opt.param_groups:
            g["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * t / steps))
        loss = 0.5 * (net(x[idx]) - y[idx]).square().mean()
        loss = loss + 0.5 * l2 * sum(p.square().sum() for p in net.parameters())
        if not torch.isfinite(loss):
            raise DdflowError(f"kip-nn: NaN during training at step {t} (lr0 {lr0:.4g}); the notebook stops the trial")
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress.update(t + 1, loss=loss.detach())
    progress.close()
    return net


@torch.no_grad()
def net_accuracy(net: torch.nn.Module, x_test, y_test: torch.Tensor, device: torch.device, chunk: int = 500) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(y_test), chunk):
        out = net(x_test[start:start + chunk].to(device))
        correct += int((out.argmax(1).cpu() == y_test[start:start + chunk].cpu()).sum())
    return 100.0 * correct / len(y_test)


@protocol("kip-nn", validation=True, variants=("hard",))
def evaluate_kip_nn(record: DistilledSet, data: RealData, settings: dict, generators,
                    device: torch.device) -> list[float]:
    info = data.info
    if data.x_val is None or len(data.y_val) < int(settings["ntk_inputs"]):
        raise DdflowError(f"kip-nn needs {settings['ntk_inputs']} validation images for its learning-rate estimate "
                          f"(the validation split: workflow/hparams/stages/validation.yaml)")
    x_lr = data.x_val[torch.arange(int(settings["ntk_inputs"]))].to(device)
    targets = krr_targets(record.labels, info.classes)
    accs = []
    for g in generators:
        net = train_kip_nn(record.images, targets, x_lr, info, settings, g, device, desc("kip-nn", record))
        accs.append(scored(lambda x, y: [net_accuracy(net, x, y, device)], data))
    return joined(accs)
