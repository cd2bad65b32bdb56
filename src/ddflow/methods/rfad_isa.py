"""rfad-isa: ISA's module (Li et al., "Boosting dataset distillation with the assistance of crucial samples"; its
Table 4 applies the module to RFAD, FRePo and RCIG) on RFAD's KRR outer loss; everything else is rfad.

ISA's module replaces the kernel loss (fiona-lxd/ISA lib/datadistillation/isa.py proto_train_step, as our isa does on
FRePo): keep the hardest `keep` fraction of the real batch by per-sample KRR error (ops.krr.select_by_error), pair
each kept sample with its most cosine-similar other kept sample, and integrate the squared residual along the segment
in closed form (ops.rfad.rfad_isa_loss, on RFAD's kernel 2 phi phi^T + 0.01 and regulariser). The closed form is one
of the squared error: rfad-isa distils with RFAD's MSE loss (its `platt: false`, an option of the official code and
its default without --platt); keep = 1 and eps = 0 is rfad with platt false exactly (tests/test_rfad.py).
"""
from __future__ import annotations

import torch

from ..errors import DdflowError
from ..ops.rfad import rfad_isa_loss
from .registry import register
from .rfad import RFAD


@register("rfad-isa")
class RFADISA(RFAD):
    paired_with = "rfad"  # same initial set, random networks and real batches as rfad: the difference is the module

    def init(self) -> None:
        hp = self.hp
        if not 0 < hp["keep"] <= 1 or hp["eps"] < 0 or hp["platt"]:
            raise DdflowError(f"rfad-isa: keep {hp['keep']} must be in (0, 1], eps {hp['eps']} >= 0 and platt false "
                              f"(ISA's closed form integrates a squared error); got platt {hp['platt']}")
        super().init()

    def kernel_loss(self, phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        return rfad_isa_loss(phi_t, y_t, phi_s, self.labels, float(hp["jit"]), float(hp["keep"]), float(hp["eps"]))
