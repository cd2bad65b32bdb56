"""End to end through Snakemake on a tiny config: rcig and rcig-isa distilled at mnist5k IPC 1, evaluated under
protocol rcig, into table isa_t4 (frepo and isa are not in this grid: their rows print no value of ours)."""
import json
import re

import pytest

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

TINY = {"iterations": 2, "batch_real": 16, "pool": 2, "width": 4, "inner_steps": 2, "hinv_steps": 2, "tune": False,
        "inner_lr_init": 0.001, "hvp_lr_init": 1.0,
        "eval": {"rcig": {"steps": 4, "chunk": 2, "chunk_divisor": 2, "warmup": 2, "width": 8, "models": 2}}}
METHODS = ["rcig", "rcig-isa"]


def test_rcig_and_rcig_isa_through_protocol_rcig_into_isa_t4(tmp_path, mnist5k_path):
    work = tiny_workdir(tmp_path, {"rcig.yaml": TINY}, tiny_data=mnist5k_path,
                        methods=METHODS, ipcs=[1], tables=["isa_t4"], figures=[])
    _snakemake(work, "results/tables/isa_t4.md")
    for method in METHODS:
        cell = json.loads((work / f"results/eval/rcig/{method}/mnist5k/ipc1/s0.json").read_text())
        assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2 and 0.0 <= cell["mean"] <= 100.0
        assert cell["settings"]["steps"] == 4
    md = (work / "results/tables/isa_t4.md").read_text()
    for label in ("RCIG", "RCIG + ISA"):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    assert not list((work / "results").rglob("*.tmp*"))
