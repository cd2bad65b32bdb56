"""End to end through Snakemake on a tiny config: kip distilled at mnist5k IPC 1 and evaluated under kip-nn (with the
validation split it needs) and krr-inf, into dream_t1's two KIP rows."""
import json
import re

import pytest

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

TINY = {"iterations": 3, "target_batch": 100, "snapshots": [0, 2],
        "eval": {"kip-nn": {"arch": "fc", "depth": 1, "width": 32, "steps": 5, "ntk_inputs": 10, "models": 1}}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist5k_path):
    work = tiny_workdir(tmp_path_factory.mktemp("wf_kip"), {"kip.yaml": TINY}, tiny_data=mnist5k_path,
                        methods=["kip"], ipcs=[1],
                        tables=["dream_t1"], figures=[])
    _snakemake(work, "results/tables/dream_t1.md")   # the table and its cells: what the test reads
    return work


def test_kip_through_kip_nn_and_krr_inf_into_dream_t1(tiny_run):
    for protocol, steps in (("kip-nn", 5), ("krr-inf", None)):
        cell = json.loads((tiny_run / f"results/eval/{protocol}/kip/mnist5k/ipc1/s0.json").read_text())
        assert len(cell["accuracies"]) == 1 and 0.0 <= cell["mean"] <= 100.0
        assert cell["settings"].get("steps") == steps
    md = (tiny_run / "results/tables/dream_t1.md").read_text()
    for label in ("KIP", "KIP (infinite-width KRR)"):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d", line), line
    assert not list((tiny_run / "results").rglob("*.tmp*"))
