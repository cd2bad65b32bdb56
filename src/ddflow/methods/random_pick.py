"""Random: IPC real training images drawn uniformly per class (DC, ICLR 2021, Table 1 baseline): the first IPC of
every class's paired order (ddflow.data.paired), which every real-initialised method starts from."""
from __future__ import annotations

from .base import RealSelection
from .registry import register


@register("random")
class RandomSelection(RealSelection):
    #: dc (DC's Table 1); frepo: IOR's same-protocol baseline of a FRePo / ISA set (ddflow.report.robust)
    protocols = ("dc", "frepo")

    def init(self) -> None:
        self.indices = self.paired_real_indices(self.ipc)
