"""End to end through Snakemake on a tiny config: dm, dm-isa and cafe distilled, evaluated under protocol dc, into
tables isa_t8 and dream_t1 (a copied hparams dir with the quick preset shrunk to seconds per job)."""
import json
import re

import pytest

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

EVAL = {"dc": {"epochs": 2, "models": 2}}
METHODS = ["dm", "dm-isa", "cafe"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist5k_path):
    quick = {"dm.yaml": {"iterations": 2, "batch_real": 4, "snapshots": [0], "eval": EVAL},
             "cafe.yaml": {"iterations": 2, "batch_real": 4, "test_per_class": 4, "window": 2, "max_outer": 2,
                           "max_inner": 1, "eval": EVAL}}
    work = tiny_workdir(tmp_path_factory.mktemp("wf_feature"), quick, tiny_data=mnist5k_path, methods=METHODS, ipcs=[1],
                        tables=["isa_t8", "dream_t1"], figures=[])
    _snakemake(work, "results/tables/isa_t8.md", "results/tables/dream_t1.md")  # what the test reads: no figures
    return work


def test_dm_isa_and_cafe_through_dc_into_isa_t8_and_dream_t1(tiny_run):
    for method in METHODS:
        cell = json.loads((tiny_run / f"results/eval/dc/{method}/mnist5k/ipc1/s0.json").read_text())
        assert cell["n_models"] == 2 and 0.0 <= cell["mean"] <= 100.0
    t8 = (tiny_run / "results/tables/isa_t8.md").read_text()
    for label in ("DM*", "DM + ISA"):
        line = next(line for line in t8.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    assert any(line.startswith("| MTT + ISA ") for line in t8.splitlines())
    t1 = (tiny_run / "results/tables/dream_t1.md").read_text()
    cafe = next(line for line in t1.splitlines() if line.startswith("| CAFE "))
    assert re.search(r"\d+\.\d ± \d+\.\d", cafe) and "93.1" in cafe, cafe
