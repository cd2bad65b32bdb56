"""rcig-isa: ISA's module (Li et al., "Boosting dataset distillation with the assistance of crucial samples", Table 4
"RCIG + Ours"; fiona-lxd/ISA lib/datadistillation/isa.py) on RCIG's outer KRR loss. Everything else is rcig's.

The only difference: the outer loss on the real batch's KRR prediction. ISA's code defines its module on a squared
error: keep the `keep` fraction of the batch with the largest per-sample error (mean over classes of (pred - y)^2),
pair each kept sample i with its most cosine-similar other kept sample j (by the features phi_t), and integrate
the squared residual along x_i + l (x_i - x_j), l in [0, eps], in closed form (ddflow.ops.krr.isa_closed_form).
RCIG's prediction of a real image, J(x) delta + phi(x) W, is linear in its two features (the tangent output and
phi), so moving along the segment moves the prediction to pred_i + l (pred_i - pred_j), and the target to
y_i + l (y_i - y_j) as in ISA's code. RCIG's Platt cross-entropy has no closed form along a segment: the module's
loss (ISA's squared error, `reduce: mean` as isa.py) replaces it; the label-margin term stays, and the learned
temperature receives no gradient (it stays at 1). With keep = 1 and eps = 0 the loss is the mean squared error of
RCIG's prediction, not rcig's loss: the module replaces the loss, as ISA's replaces FRePo's.
"""
from __future__ import annotations

import torch

from ..errors import DdflowError
from ..ops.krr import isa_closed_form, nearest_other, select_by_error
from .rcig import RCIG
from .registry import register

REDUCES = ("mean", "half_sum")


@register("rcig-isa")
class RCIGISA(RCIG):
    paired_with = "rcig"  # the same initial set, pool models and real batches as rcig: the difference is the module

    def init(self) -> None:
        hp = self.hp
        if not 0 < hp["keep"] <= 1 or hp["eps"] < 0:
            raise DdflowError(f"rcig-isa: keep {hp['keep']} must be in (0, 1] and eps {hp['eps']} >= 0")
        if hp["reduce"] not in REDUCES:
            raise DdflowError(f"rcig-isa: reduce {hp['reduce']!r} not in {REDUCES}")
        super().init()

    def outer_loss(self, preds: torch.Tensor, y_t: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        keep, eps, reduce = float(self.hp["keep"]), float(self.hp["eps"]), self.hp["reduce"]
        if keep < 1:
            kept = select_by_error((preds - y_t).detach().square().mean(-1), keep)
            preds, y_t, feat_t = preds[kept], y_t[kept], feat_t[kept]
        a = preds - y_t
        if eps == 0:
            return isa_closed_form(a, a, 0.0, reduce).mean()
        j = nearest_other(feat_t.detach())
        b = (preds - preds[j]) - (y_t - y_t[j])
        return isa_closed_form(a, b, eps, reduce).mean()
