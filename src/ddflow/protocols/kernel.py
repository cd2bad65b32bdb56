"""The kernel family's evaluation protocols: `frepo` (FRePo's script/eval.py) and `krr` (ISA's "KRR" column,
FRePo's eval_on_proto_krr).

frepo: K fresh FRePo Convs without normalisation, trained on the distilled set with Adam (lr 3e-4, b1 0.9, b2 0.999,
eps 1e-8, no weight decay: optax.adam ignores the weight_decay it is given), a linear warm-up from 0 over 500 steps
then cosine decay to 1 % over the remaining steps, MSE (0.5 * sum over classes, mean over the batch) on the learned
labels (hard labels become FRePo's centred one-hot), batch min(N, 500) taken in a fixed order over the repeated set
(tf `cache().repeat().batch()`, no shuffle), one augmentation family per batch with per-image parameters. The number
of steps follows a table by number of prototypes, `steps_by_prototypes` (resolved from the method's `step_table`:
FRePo's or ISA's script/eval.py, workflow/hparams/stages/protocols.yaml step_tables); for a count not in it, the
entry of the largest listed count below it (the smallest entry below the smallest count). Test accuracy of every
model after the last step.

Augmentation: FRePo's `flip_color_crop_rotate_translate_cutout` (augmax, one op per batch) is approximated by
ddflow's DSA in single-family mode with FRePo's ranges where DSA has the same transform: rotate +-15 degrees,
translate 0.125, zoom ('scale') 1.25, cutout res/4 (ratio 0.25); DSA's colour jitter (brightness/saturation/contrast
ranges of DSA) stands in for FRePo's colour op. No flip for 1-channel data (FRePo: none for MNIST/FMNIST).

krr: the same K networks trained the same way, then each network's features phi give the KRR prediction of the test
set from the support (the distilled images, plus their flips on colour data: eval.py's use_flip) with the learned
labels, lambda = 1e-6 trace(K_ss)/n; accuracy = argmax against the true class.
"""
from __future__ import annotations

import copy

import torch
from torch.func import stack_module_state

from ..augment import DSA, DSAParams
from ..data import RealData
from ..errors import DdflowError
from ..nets import build_net, frepo_init_
from ..ops.krr import flip_support, krr_targets, krr_weights
from ..ops.losses import mse_half_sum
from ..ops.optim import warmup_cosine_lr
from ..progress import Progress
from ..records import DistilledSet
from ..train import NetStack, accuracy
from .registry import desc, protocol, scored

FREPO_AUG = DSAParams(ratio_scale=1.25, ratio_rotate=15.0, ratio_crop_pad=0.125, ratio_cutout=0.25)


def eval_steps(n: int, setting, table: dict | None = None) -> int:
    """`setting` steps, or with 'auto' / None the table's entry for n prototypes (the largest listed count <= n)."""
    if setting not in (None, "auto"):
        return int(setting)
    if not table:
        raise DdflowError("evaluation steps 'auto' without a step table (settings steps_by_prototypes; see "
                          "ddflow.protocols.cell.protocol_settings)")
    table = {int(k): int(v) for k, v in table.items()}
    listed = [c for c in sorted(table) if c <= n]
    return table[listed[-1] if listed else min(table)]


def frepo_stack(info, settings: dict, generators: list[torch.Generator], device: torch.device) -> NetStack:
    """K FRePo Convs without normalisation, FRePo (flax) initialisation drawn from each model's generator."""
    template = build_net("FRePoConv", info.channels, info.classes, info.size, width=int(settings["width"]),
                         depth=settings.get("depth"), norm="none")
    # NetStack draws PyTorch's default initialisation from throw-away generators; FRePo's replaces it
    stack = NetStack(template, [torch.Generator() for _ in generators], device, settings.get("batching", "auto"))
    nets = [frepo_init_(copy.deepcopy(template), g) for g in generators]
    params, _ = stack_module_state(nets)
    stack.params = {k: v.detach().clone().to(device).requires_grad_(True) for k, v in params.items()}
    return stack


def train_frepo(images: torch.Tensor, targets: torch.Tensor, info, settings: dict,
                generators: list[torch.Generator], device: torch.device, desc: str) -> NetStack:
    stack = frepo_stack(info, settings, generators, device).train(True)
    n, k = len(images), stack.k
    steps = eval_steps(n, settings.get("steps"), settings.get("steps_by_prototypes"))
    bs = min(n, int(settings["batch"]))
    lr = float(settings["lr"])
    opt = torch.optim.Adam(stack.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)  # elementwise: K Adams
    flip = "flip_" if info.channels == 3 else ""
    aug = DSA(f"color_crop_cutout_{flip}scale_rotate", FREPO_AUG) if settings.get("augment", True) else None
    x, y = images.to(device), targets.to(device)
    progress = Progress(steps, desc)
    for t in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(lr, t, steps, int(settings["warmup"]), float(settings["lr_alpha"]))
        idx = (torch.arange(bs, device=device) + t * bs) % n
        xb = x[idx].repeat(k, 1, 1, 1)
        if aug is not None:
            xb = aug.augment_many(xb, [bs] * k, generators)
        out = stack.forward(xb.view(k, bs, *x.shape[1:]))
        losses = mse_half_sum(out, y[idx].unsqueeze(0).expand(k, -1, -1))
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        progress.update(t + 1, loss=losses.detach().mean())  # read when a line is due
    progress.close()
    return stack


def _use_flip(settings: dict, info) -> bool:
    """FRePo's and ISA's script/eval.py set use_flip for every dataset but MNIST/FashionMNIST, whatever the
    distillation used (ISA's Table 6 KRR numbers were made by that script): auto = colour data."""
    flag = settings.get("use_flip", "auto")
    if flag in (None, "auto"):
        return info.channels == 3
    return bool(flag)


@protocol("frepo", variants=("hard", "aug", "noaug"))
def evaluate_frepo(record: DistilledSet, data: RealData, settings: dict, generators,
                   device: torch.device) -> list[float]:
    info = data.info
    stack = train_frepo(record.images, krr_targets(record.labels, info.classes), info, settings, generators, device,
                        desc("frepo", record))
    stack.train(False)
    return scored(lambda x, y: accuracy(stack, x.to(device), y.to(device)), data)


@torch.no_grad()
def krr_accuracy(stack: NetStack, support: torch.Tensor, y_s: torch.Tensor, x_test: torch.Tensor,
                 y_test: torch.Tensor, reg: float = 1e-6, chunk: int = 1000) -> list[float]:
    accs = []
    for m in range(stack.k):
        one = {n: v[m:m + 1] for n, v in stack.params.items()}
        sub = copy.copy(stack)
        sub.params, sub.buffers, sub.k = one, {n: v[m:m + 1] for n, v in stack.buffers.items()}, 1
        phi_s = sub.forward(support.unsqueeze(0), embed=True)[0]
        proj = phi_s.T @ krr_weights(phi_s, y_s, reg)
        correct = 0
        for start in range(0, len(x_test), chunk):
            phi_t = sub.forward(x_test[start:start + chunk].unsqueeze(0), embed=True)[0]
            correct += int(((phi_t @ proj).argmax(-1) == y_test[start:start + chunk]).sum())
        accs.append(100.0 * correct / len(x_test))
    return accs


@protocol("krr", variants=("hard", "aug", "noaug"))
def evaluate_krr(record: DistilledSet, data: RealData, settings: dict, generators,
                 device: torch.device) -> list[float]:
    info = data.info
    targets = krr_targets(record.labels, info.classes)
    stack = train_frepo(record.images, targets, info, settings, generators, device, desc("krr", record)).train(False)
    support, y_s = flip_support(record.images.to(device), targets.to(device), _use_flip(settings, info))
    reg = float(settings.get("krr_reg", 1e-6))
    return scored(lambda x, y: krr_accuracy(stack, support, y_s, x.to(device), y.to(device), reg), data)
