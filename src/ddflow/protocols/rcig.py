"""RCIG's own evaluation (yolky/RCIG eval.py `main`, commit a9fb1fa), without augmentation (its first result, "no
data augmentation avg", lines 221-246).

K fresh Convs (models.py `Conv`: ReLU, width 128, depth by resolution, no normalisation, flax initialisation: ddflow's
FRePoConv with norm 'none'), each trained on the distilled set (the EMA images and learned labels; doubled with
horizontal flips when the distillation used flips, lines 212-214) with Adam (optax defaults) under a schedule of
`nominal` steps: linear warm-up 0 -> lr over 500 steps, then cosine decay to 1 % over nominal - 500 steps, then
constant at 1 % (optax.cosine_decay_schedule holds its end value). nominal = 1000 when the set has 10 images (before
flipping), else 2000 (line 203). The loop trains nominal // 200 chunks of 500 steps (lines 227-230: the no-augmentation
loop divides by 200, the augmentation loop by 500), i.e. 2,500 / 5,000 steps, the last 1,500 / 3,000 at 1 % of the
lr; every chunk restarts from the same random key, so the chunks repeat one sequence of batches. Batch: the whole
set when it has at most 256 images (before flipping), else 256 drawn without replacement from the (flipped) set.
Loss: sum 0.5 (f(x) - y)^2 / (B C), no weight decay (eval_l2 0). Test accuracy after the last step.
"""
from __future__ import annotations

import torch

from ..data import RealData
from ..errors import DdflowError
from ..ops.krr import flip_support, krr_targets
from ..ops.optim import warmup_cosine_lr
from ..progress import Progress
from ..records import DistilledSet
from ..train import accuracy
from .kernel import frepo_stack
from .registry import desc, protocol, scored


def rcig_schedule(n_images: int, settings: dict) -> tuple[int, int]:
    """(nominal steps of the lr schedule, steps trained): eval.py lines 203 and 227-230."""
    nominal = int(settings["steps_if_10"]) if n_images == 10 else int(settings["steps_else"])
    if settings.get("steps") not in (None, "auto"):
        nominal = int(settings["steps"])
    chunk = int(settings["chunk"])
    return nominal, (nominal // int(settings["chunk_divisor"])) * chunk


@protocol("rcig", variants=("hard",))
def evaluate_rcig(record: DistilledSet, data: RealData, settings: dict, generators,
                  device: torch.device) -> list[float]:
    if settings.get("augment", False):
        raise DdflowError("protocol rcig: augment true (eval.py's flip_color_crop_rotate_translate_cutout run) is not "
                          "ported; allowed: false")
    info = data.info
    targets = krr_targets(record.labels, info.classes)
    n = len(record.images)
    use_flip = bool(record.extra.get("use_flip", False)) if settings.get("use_flip", "auto") == "auto" \
        else bool(settings["use_flip"])
    x, y = flip_support(record.images.to(device), targets.to(device), use_flip)
    nominal, steps = rcig_schedule(n, settings)
    chunk, warmup = int(settings["chunk"]), int(settings["warmup"])
    bs = int(settings["batch"]) if n > int(settings["batch"]) else len(x)
    stack = frepo_stack(info, settings, generators, device).train(True)
    k, lr = stack.k, float(settings["lr"])
    opt = torch.optim.Adam(stack.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if bs < len(x):  # one sequence of batches per model, replayed in every chunk
        order = torch.stack([torch.stack([torch.randperm(len(x), generator=g)[:bs] for _ in range(chunk)])
                             for g in generators]).to(device)            # (k, chunk, bs)
    progress = Progress(steps, desc("rcig", record))
    for t in range(steps):
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(lr, t, nominal, warmup, float(settings["lr_alpha"]))
        if bs < len(x):
            idx = order[:, t % chunk]
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x.unsqueeze(0).expand(k, *x.shape), y.unsqueeze(0).expand(k, *y.shape)
        out = stack.forward(xb)
        losses = 0.5 * ((out - yb) ** 2).sum((1, 2)) / yb[0].numel()
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        progress.update(t + 1, loss=losses.detach().mean())
    progress.close()
    stack.train(False)
    return scored(lambda x, y: accuracy(stack, x.to(device), y.to(device)), data)
