"""End to end through Snakemake on a tiny config: the validation split -> dd and ld distilled -> protocols dd, dc
(DD's images, a row of ours) and ld (with the validation split) -> table dream_t1."""
import json
import re

import pytest

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir, write_tiny_mnist5k

pytestmark = pytest.mark.workflow

TINY_QUICK = {
    "validation.yaml": {"per_class": 2},
    "dd.yaml": {"epochs": 1, "batch": 50, "eval": {"dd": {"models": 2}, "dc": {"epochs": 2, "models": 2}}},
    "ld.yaml": {"epochs": 5, "batch": 40, "eval": {"ld": {"models": 2}}},
}


@pytest.fixture(scope="module")
def tiny_run(mnist5k_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("wf_bilevel")
    write_tiny_mnist5k(mnist5k_path, work / "tiny.npz", n_test=50)
    tiny_workdir(work, TINY_QUICK, methods=["dd", "ld"], ipcs=[1], tables=["dream_t1"], figures=[],
                 data={"mnist5k": {"npz": str(work / "tiny.npz")}})
    _snakemake(work, "results/tables/dream_t1.md")   # the table and its cells: what the test reads
    return work


def test_dd_and_ld_through_their_protocols_into_dream_t1(tiny_run):
    r = tiny_run / "results"
    for protocol, method in (("dd", "dd"), ("dc", "dd"), ("ld", "ld")):
        cell = json.loads((r / f"eval/{protocol}/{method}/mnist5k/ipc1/s0.json").read_text())
        assert cell["n_models"] == 2 and len(cell["accuracies"]) == 2 and 0.0 <= cell["mean"] <= 100.0
    assert (r / "splits/mnist5k.npz").exists()
    md = (r / "tables/dream_t1.md").read_text()
    for label in ("DD", "DD images under dc (ours)", "LD"):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    assert "60.9" in next(line for line in md.splitlines() if line.startswith("| LD "))
    assert not list(r.rglob("*.tmp*"))
