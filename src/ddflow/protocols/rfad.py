"""`rfad-nn`: RFAD's finite-network transfer (yolky/RFAD eval_distilled_set.py --run_finite --use_best_hypers,
training.py train_network / get_acc); DREAM's Table 1 prints these numbers for RFAD.

Per model (training.py lines 12-98): RFAD's ConvNet (width `width`, official 1024; depth 3; no normalisation; Gaussian
init, ddflow.nets.rfad) and a frozen copy of its initialisation f0; SGD (lr, momentum 0.9, no built-in weight decay);
loss mean((f(x) - f0(x) - s * y)^2) / s^2 with the label scale s and centring (output minus the initial network's
output), plus weight_decay * ||theta - theta0||^2 (decay towards the initialisation); targets y = the set's learned
labels or one_hot - 1/C. The whole set is the batch when it holds at most `batch` (513) images; otherwise a batch
of `batch` indices drawn with replacement, whose labels the official code leaves unscaled (line 47; line 50 scales
only the full batch): `minibatch_labels: unscaled` keeps that quirk, `scaled` scales them. Every `valid_every` (100)
iterations, before that iteration's step, the accuracy of f - f0 on the validation split; the best model (strictly
better accuracy) is kept; training stops once `patience` (500) iterations pass without a better one, or after
`iterations` (20,000). Test accuracy of the best model, with centring. lr, label scale and weight decay per dataset
and IPC: utils.get_best_finite_hypers (use_label_scale=True; workflow/hparams/methods/rfad.yaml).
"""
from __future__ import annotations

import copy

import torch

from ..data import RealData
from ..errors import DdflowError
from ..nets.rfad import build_rfad_net
from ..ops.krr import krr_targets
from ..progress import Progress
from ..records import DistilledSet
from .registry import desc, joined, protocol, scored

MINIBATCH_LABELS = ("unscaled", "scaled")


@torch.no_grad()
def outputs(net, x, device: torch.device, chunk: int = 512) -> torch.Tensor:
    return torch.cat([net(x[i:i + chunk].to(device)) for i in range(0, len(x), chunk)])


@torch.no_grad()
def centred_accuracy(net, x, y, device: torch.device, out0: torch.Tensor | float = 0.0) -> float:
    """Accuracy (fraction) of argmax(f(x) - f0(x)) (training.py get_acc); `out0` = the initial network's outputs on
    x (computed once: the initial network never changes), or 0 without centring."""
    return float(((outputs(net, x, device) - out0).argmax(1) == y.to(device)).double().mean())


def rfad_nn_batch(x: torch.Tensor, targets: torch.Tensor, bs: int, scale: float, minibatch_labels: str,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """training.py lines 40-50: the whole set with labels x scale when it holds at most `bs` images; else `bs`
    indices drawn with replacement, labels unscaled (`minibatch_labels: unscaled`, the official quirk) or scaled."""
    n = len(x)
    if bs >= n:
        return x, scale * targets
    idx = torch.randint(n, (bs,), generator=generator).to(x.device)
    return x[idx], targets[idx] * (scale if minibatch_labels == "scaled" else 1.0)


def rfad_nn_loss(net, net0, xb: torch.Tensor, yb: torch.Tensor, scale: float, wd: float,
                 centering: bool) -> torch.Tensor:
    """training.py lines 59-73 (loss_mode 'mse'): mean((f - f0 - y)^2) / scale^2 + wd * sum ||theta - theta0||^2
    (with centring; wd * ||theta||^2 without)."""
    with torch.no_grad():
        out0 = net0(xb) if centering else 0
    loss = (net(xb) - out0 - yb).square().mean() / scale ** 2
    for p, p0 in zip(net.parameters(), net0.parameters()):
        loss = loss + wd * ((p - p0) if centering else p).square().sum()
    return loss


def train_rfad_nn(x: torch.Tensor, targets: torch.Tensor, data: RealData, settings: dict,
                  generator: torch.Generator, device: torch.device, label: str):
    """One network trained as RFAD's train_network; (best network, initial network, best validation accuracy)."""
    info = data.info
    lr, scale, wd = float(settings["lr"]), float(settings["label_scale"]), float(settings["weight_decay"])
    centering = bool(settings["centering"])
    net = build_rfad_net(info.channels, info.classes, info.size, int(settings["width"]), int(settings["depth"]),
                         generator, device)
    net0 = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0)
    bs = int(settings["batch"])
    best, best_acc, best_iter = None, -1.0, -1
    iterations, every, patience = int(settings["iterations"]), int(settings["valid_every"]), int(settings["patience"])
    progress = Progress(iterations, label)
    val0 = outputs(net0, data.x_val, device) if centering else 0.0
    for i in range(iterations):
        if i % every == 0:
            acc = centred_accuracy(net, data.x_val, data.y_val, device, val0)
            if acc > best_acc:
                best, best_acc, best_iter = copy.deepcopy(net), acc, i
        if i >= best_iter + patience:
            break
        xb, yb = rfad_nn_batch(x, targets, bs, scale, settings["minibatch_labels"], generator)
        loss = rfad_nn_loss(net, net0, xb, yb, scale, wd, centering)
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress.update(i + 1, loss=loss.detach())
    progress.close()
    return best, net0, best_acc


@protocol("rfad-nn", validation=True, variants=("hard",))
def evaluate_rfad_nn(record: DistilledSet, data: RealData, settings: dict, generators,
                     device: torch.device) -> list[float]:
    if data.x_val is None:
        raise DdflowError("protocol 'rfad-nn' early-stops on the validation split; the data carry none")
    if settings["minibatch_labels"] not in MINIBATCH_LABELS:
        raise DdflowError(f"protocol 'rfad-nn': minibatch_labels {settings['minibatch_labels']!r} not in "
                          f"{MINIBATCH_LABELS}")
    x, y = record.decoded() if int(record.factor) > 1 else (record.images, record.labels)
    x, targets = x.to(device).float(), krr_targets(y, data.info.classes).to(device)
    accs = []
    for k, g in enumerate(generators):
        best, net0, _ = train_rfad_nn(x, targets, data, settings, g, device, f"{desc('rfad-nn', record)} model {k}")
        def acc(xe, ye):   # centring: the initial network's outputs on the same images
            out0 = outputs(net0, xe, device) if settings["centering"] else 0.0
            return [100.0 * centred_accuracy(best, xe, ye, device, out0)]

        accs.append(scored(acc, data))
    return joined(accs)
