"""Config strings reach the shell quoted: the whole tiny workflow runs in a directory whose name has a space and a
quote (the hparams folder and every output under it), from an npz whose path holds `$(touch INJECTED)`, and nothing
is executed from that path."""
import json

import pytest

from tiny_workflow import TINY_DATA, tiny_workdir, write_tiny_mnist5k
from tiny_workflow import snakemake as _snakemake

pytestmark = pytest.mark.workflow


def test_paths_with_spaces_quotes_and_command_substitution_run_end_to_end(tmp_path, mnist5k_path):
    work = tmp_path / "my results 'v1'"
    work.mkdir()
    npz = tmp_path / "data $(touch INJECTED) x.npz"
    write_tiny_mnist5k(mnist5k_path, npz, **TINY_DATA)   # a small copy: the test is about paths, not sizes
    tiny_workdir(work, {"random.yaml": {"eval": {"dc": {"epochs": 2, "models": 2}}}}, methods=["random"],
                 ipcs=[1], tables=["dream_t1"], figures=[], data={"mnist5k": {"npz": str(npz)}})
    _snakemake(work)
    cell = json.loads((work / "results/eval/dc/random/mnist5k/ipc1/s0.json").read_text())
    assert len(cell["accuracies"]) == 2
    assert (work / "results/tables/dream_t1.md").exists()
    assert not list(tmp_path.rglob("INJECTED")) and not list(work.rglob("INJECTED"))
    assert not (work.parent.parent / "INJECTED").exists()
