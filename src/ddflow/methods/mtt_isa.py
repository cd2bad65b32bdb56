"""MTT + ISA: ISA's module (Li et al., "Boosting dataset distillation with the assistance of crucial samples";
official fiona-lxd/ISA lib/datadistillation/isa.py) applied to MTT, the "MTT + Ours" row of ISA's appendix Table 8.

The appendix gives no details of the adaptation; ddflow defines it so (every choice a setting in
workflow/hparams/methods/mtt-isa.yaml):
- Where: the student's steps. In FRePo/ISA the module acts on the per-sample losses of the model fitted to the
  synthetic set (KRR on the real target batch). MTT's outer loss (the parameter distance to the expert) has no
  per-sample terms; the only per-sample losses in MTT are those of the student's steps, on the synthetic mini-batch
  that the student is trained on. So each student step's cross-entropy is replaced by ISA's loss of that batch.
- Hardest samples (`isa_keep`, ISA's topk): the student's per-sample cross-entropy at the current student
  parameters, on the augmented batch; the `isa_keep` fraction with the largest loss is kept (ISA keeps the hardest
  80 %), the easiest are left out of that step.
- What is interpolated (`isa_eps`, `isa_points`, `isa_segment`): as ISA, for each kept sample i its most
  cosine-similar other kept sample j, in the student's penultimate features (the inputs of its linear classifier,
  as ISA's KRR features); the loss is the mean cross-entropy over l uniform on [0, eps] along the segment
  (ops.unrolled_student.isa_cross_entropy: Gauss-Legendre quadrature, cross-entropy has no closed form). `away` (the
  paper preset): phi_i + l (phi_i - phi_j), the direction of ISA's public code (isa.py lines 192-196, as ddflow's
  isa and dm-isa), with the label held at y_i. `toward`: phi_i + l (phi_j - phi_i) with the label interpolated
  alike, (1 - l) y_i + l y_j, eps <= 1: ISA's "interpolating between two target feature vectors" (its abstract).
  ISA's code also moves the label
  away from y_j, y_i + l (y_i - y_j); that is not used: for a pair of different classes (at IPC 1 every pair) the
  target has a negative entry, and cross-entropy against it is unbounded below (the student can lower the step's
  loss without limit by pushing class j's logit ever lower), whereas ISA's squared loss stays >= 0. With either
  segment every target is a distribution and every step's loss is >= 0.
Everything else is MTT (ddflow.methods.mtt), with MTT's random streams (paired_with): `isa_keep: 1` and
`isa_eps: 0` make it MTT exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call

from ..errors import DdflowError
from ..ops.unrolled_student import ISA_SEGMENTS, cross_entropy_step, isa_cross_entropy
from .mtt import MTT
from .registry import register


@register("mtt-isa")
class MTTISA(MTT):
    paired_with = "mtt"

    @classmethod
    def check_hparams(cls, hp: dict[str, Any], where: str, snapshots: bool = True) -> None:
        super().check_hparams(hp, where, snapshots)
        keep, eps, points, segment = hp["isa_keep"], hp["isa_eps"], hp["isa_points"], hp["isa_segment"]
        if not 0 < float(keep) <= 1 or float(eps) < 0 or int(points) < 1:
            raise DdflowError(f"{where}: mtt-isa needs 0 < isa_keep <= 1, isa_eps >= 0, isa_points >= 1; got "
                              f"{keep}, {eps}, {points}")
        if segment not in ISA_SEGMENTS or (segment == "toward" and float(eps) > 1):
            raise DdflowError(f"{where}: mtt-isa isa_segment {segment!r} must be one of {ISA_SEGMENTS}, and "
                              f"'toward' needs isa_eps <= 1 (got {eps}): beyond j the interpolated label leaves the "
                              "simplex")

    def step_loss(self, net: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
        keep, eps = float(self.hp["isa_keep"]), float(self.hp["isa_eps"])
        if keep >= 1 and eps == 0:  # the module off: MTT's step, the same operations
            return cross_entropy_step(net, params, x, y)
        feats = functional_call(net, params, (x,), {"embed": True})
        return isa_cross_entropy(feats, params["classifier.weight"], params["classifier.bias"], y, keep, eps,
                                 int(self.hp["isa_points"]), self.hp["isa_segment"])
