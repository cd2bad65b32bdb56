"""Every file ddflow writes and reads, one module per concept, each with its format constant and checked loader:
- distilled: the distilled set (`results/distilled/...pt`), DistilledSet and load_distilled;
- cell: the evaluation cell (`results/eval/...json`), cell_record and load_cell;
- experts: expert trajectories (`results/experts/...`), paths, experts_prep and load_expert;
- trajectories: MTT manifests and EAD pools (`results/trajectories/...`), their loaders and the checks of a
  manifest against a method's hparams;
- featnet: the feature-net checkpoint, save_feature_net and load_feature_net.
The stages (ddflow.stages) write them; methods, protocols and reports read them through this package only.
The names of distilled.py (torch tensors) are imported on first use (PEP 562 `__getattr__`): a table that reads
only cells starts without importing torch.
"""
from .cell import CELL_KEYS, cell_record, load_cell

_DISTILLED = ("FORMAT", "SPACES", "DistilledSet", "check_record", "load_distilled")

__all__ = ["CELL_KEYS", "FORMAT", "SPACES", "DistilledSet", "cell_record", "check_record", "load_cell",
           "load_distilled"]


def __getattr__(name: str):
    if name in _DISTILLED:
        from . import distilled
        return getattr(distilled, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
