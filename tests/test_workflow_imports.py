"""End to end through Snakemake: distilled sets saved in MTT's and DC's formats (made here from real mnist5k images by
our code, in those formats) are imported by the workflow, evaluated under `mtt` / `dc` and printed as table rows."""
import json
import re

import pytest
import torch

from tiny_workflow import snakemake as _snakemake
from tiny_workflow import tiny_workdir

pytestmark = pytest.mark.workflow

TINY_QUICK = {
    "random.yaml": {"eval": {"dc": {"epochs": 4, "models": 2}}},
    "dm.yaml": {"eval": {"dc": {"epochs": 4, "models": 2}}},     # a DM result file is evaluated with DM's settings
    "mtt.yaml": {"eval": {"mtt": {"epochs": 4, "models": 2}}},
}


def _one_per_class(data, offset):
    idx = [int(torch.nonzero(data.y_train == c)[offset]) for c in range(10)]
    return data.x_train[idx].clone(), data.y_train[idx].clone()      # normalised, as MTT and DC save them


@pytest.fixture(scope="module")
def imports_run(tmp_path_factory, mnist5k, mnist5k_path):
    src = tmp_path_factory.mktemp("outside")
    mtt_run = src / "logged_files" / "MNIST" / "run"
    mtt_run.mkdir(parents=True)
    x, y = _one_per_class(mnist5k, 0)
    torch.save(x, mtt_run / "images_best.pt")                  # MTT distill.py lines 242-243
    torch.save(y, mtt_run / "labels_best.pt")
    dc_file = src / "res_DM_MNIST_ConvNet_1ipc.pt"             # DC main_DM.py line 204: one pair per experiment
    torch.save({"data": [list(_one_per_class(mnist5k, 1))], "accs_all_exps": {"ConvNet": [0.5]}}, dc_file)
    imports = {
        "mtt-outside": {"path": str(mtt_run), "format": "mtt", "dataset": "mnist5k", "ipc": 1,
                        "space": "normalized", "lr": 0.01},
        "dm-outside": {"path": str(dc_file), "format": "dc", "dataset": "mnist5k", "ipc": 1, "space": "normalized"},
    }
    work = tiny_workdir(tmp_path_factory.mktemp("wf"), TINY_QUICK, tiny_data=mnist5k_path, methods=["random"],
                        ipcs=[1], seeds=[0], tables=["dream_t1"], figures=[], imports=imports)
    _snakemake(work, "results/tables/dream_t1.md")   # the table and its cells (no figures: seconds matter)
    return work


def test_imported_mtt_and_dc_sets_are_evaluated_and_tabled(imports_run):
    mtt = json.loads((imports_run / "results/eval/mtt/mtt-outside/mnist5k/ipc1/s0.json").read_text())
    assert mtt["n_models"] == 2 and mtt["settings"]["epochs"] == 4 and mtt["settings"]["augment"] == "dsa"
    assert mtt["method"] == "mtt-outside" and mtt["preset"] == "quick"
    # one record per experiment of the DC file (one here; several: tests/test_interop.py)
    dc = json.loads((imports_run / "results/eval/dc/dm-outside/mnist5k/ipc1/s0.json").read_text())
    assert dc["n_models"] == 2 and dc["settings"]["augment"] == "dsa"   # evaluated with DM's settings
    md = (imports_run / "results/tables/dream_t1.md").read_text()
    for label in ("mtt-outside (imported)", "dm-outside (imported)"):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} "))
        assert re.search(r"\d+\.\d ± \d+\.\d", line), line
    assert "imported from" in md and "with dm's evaluation settings" in md
    csv = (imports_run / "results/tables/dream_t1.csv").read_text()
    assert "dm-outside,dc,mnist5k,mnist,1," in csv


def test_an_import_colliding_with_a_method_fails_before_any_job(imports_run):
    cfg = imports_run / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("mtt-outside:", "dm:"))
    try:
        out = _snakemake(imports_run, "-n", check=False)
        assert out.returncode != 0 and "imports.dm" in out.stdout + out.stderr
    finally:
        cfg.write_text(text)


def test_png_class_names_and_default_tables_reach_the_jobs(imports_run):
    """A PNG import with named class folders passes them to its import job (a dry run prints the command), and an
    import joins only the accuracy tables of its dataset: dream_t1 here, not ead_claims or isa_t6."""
    import yaml
    from PIL import Image

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    pngs = imports_run / "outside-pngs"
    for w in words:
        (pngs / w).mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 0).save(pngs / w / "0.png")
    cfg_path = imports_run / "config.yaml"
    text = cfg_path.read_text()
    cfg = yaml.safe_load(text)
    cfg["imports"]["png-words"] = {"path": str(pngs), "format": "png", "dataset": "mnist5k", "ipc": 1,
                                   "space": "pixels", "classes": words}
    cfg["tables"] = ["dream_t1", "ead_claims", "isa_t6"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    try:
        out = _snakemake(imports_run, "-n", "-p", "-F", "results/distilled/png-words/mnist5k/ipc1/s0.pt")
        assert "--classes zero one two three four five six seven eight nine" in out.stdout
        for table, joined in (("dream_t1", True), ("ead_claims", False), ("isa_t6", False)):
            out = _snakemake(imports_run, "-n", "-p", "-f", f"results/tables/{table}.md")
            assert ("png-words (imported)" in out.stdout) is joined, (table, out.stdout[-2000:])
    finally:
        cfg_path.write_text(text)
