"""Bad input fails clearly, before any job runs."""
import copy
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ddflow.config import check, effective_grid, method_ipcs
from ddflow.errors import DdflowError
from ddflow.methods import REGISTRY
from ddflow.report.tables import TABLE_KINDS, load_spec
from test_distill import ROOT

HP = ROOT / "workflow" / "hparams"
PAPERS = ROOT / "workflow" / "papers"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def _cfg(**kw):
    c = copy.deepcopy(DEFAULT)
    c.update(kw)
    return c


def test_default_config_runs_every_method_on_mnist5k_at_ipc_1_and_10_and_costly_ones_at_ipc_1():
    grid = check(_cfg(), HP, PAPERS)
    assert grid["datasets"] == ["mnist5k"] and grid["ipcs"] == [1, 10] and grid["seeds"] == [0]
    assert {"random", "herding", "dm", "dc", "dsa", "mtt", "ead", "idc", "dream", "frepo", "isa"} <= \
        set(grid["methods"])
    assert {"dream_t1", "dream_t2", "ead_claims", "isa_t6"} <= set(grid["tables"]) and grid["figures"] == []
    assert grid["method_ipcs"] and all(method_ipcs(grid, m) == [1] for m in grid["method_ipcs"])


def test_method_ipcs_restricts_a_method_to_some_of_the_grids_ipcs_unless_ipcs_are_given():
    cfg = _cfg()
    cfg["grid"]["quick"]["method_ipcs"] = {"dm": [1]}
    grid = check(cfg, HP, PAPERS)
    assert method_ipcs(grid, "dm") == [1] and method_ipcs(grid, "random") == [1, 10]
    assert method_ipcs(check(dict(cfg, ipcs=[10]), HP, PAPERS), "dm") == [10]  # the command line's IPCs win
    cfg["grid"]["quick"]["method_ipcs"] = {"dm": [50]}
    with pytest.raises(DdflowError, match=r"grid.quick.method_ipcs.dm.*share no IPC"):
        check(cfg, HP, PAPERS)
    assert check(dict(cfg, methods=["random"]), HP, PAPERS)["methods"] == ["random"]   # dm not run: entry unused


def test_paper_preset_grid_is_the_p1_grid_and_top_level_keys_override_it():
    grid = effective_grid(_cfg(preset="paper"))
    assert grid["datasets"] == ["mnist", "svhn", "cifar10", "cifar100"] and grid["ipcs"] == [1, 10, 50]
    assert len(grid["seeds"]) == 5
    assert effective_grid(_cfg(preset="paper", methods=["dm"]))["methods"] == ["dm"]


@pytest.mark.parametrize("override,message", [
    ({"datasets": ["imagenet"]}, "unknown dataset 'imagenet'"),
    ({"methods": ["dsa9"]}, "unknown method 'dsa9'; implemented: " + re.escape(", ".join(sorted(REGISTRY)))),
    ({"tables": ["nope_t9"]}, "unknown table 'nope_t9'; known: " + ", ".join(
        sorted(p.stem for p in PAPERS.glob("*.yaml") if load_spec(p)["kind"] in TABLE_KINDS))),
    ({"ipcs": [1, 500]}, r"IPC \[500\] larger than the smallest class of mnist5k \(400"),
    ({"preset": "fast"}, "preset"),
    ({"data": {"mnist": {"npz": "/nonexistent/mnist.npz"}}, "datasets": ["mnist"]},
     "/nonexistent/mnist.npz does not exist"),
    ({"data": {"mnistx": {"npz": "a.npz"}}}, "unknown dataset 'mnistx'"),
])
def test_bad_config_values_are_clear_errors(override, message):
    with pytest.raises(DdflowError, match=message):
        check(_cfg(**override), HP, PAPERS)


def test_ipc_check_reads_class_counts_of_a_configured_npz(tmp_path):
    import numpy as np

    p = tmp_path / "small.npz"
    y = np.repeat(np.arange(10), 3)
    np.savez(p, x_train=np.zeros((30, 28, 28, 1), np.uint8), y_train=y, x_test=np.zeros((10, 28, 28, 1), np.uint8),
             y_test=np.arange(10))
    check(_cfg(datasets=["mnist"], ipcs=[3], data={"mnist": {"npz": str(p)}}), HP, PAPERS)
    with pytest.raises(DdflowError, match="smallest class of mnist \\(3 images"):
        check(_cfg(datasets=["mnist"], ipcs=[4], data={"mnist": {"npz": str(p)}}), HP, PAPERS)


def test_command_line_lists_arrive_as_strings_and_are_coerced():
    from ddflow.config import coerce_cli_types

    c = coerce_cli_types(_cfg(ipcs=["1", "10"], seeds=["0"], methods=["dm"], datasets="null"))
    assert c["ipcs"] == [1, 10] and c["seeds"] == [0] and c["methods"] == ["dm"] and c["datasets"] is None


def _npz(path, y):
    import numpy as np
    np.savez(path, x_train=np.zeros((len(y), 28, 28, 1), np.uint8), y_train=y,
             x_test=np.zeros((10, 28, 28, 1), np.uint8), y_test=np.arange(10))


def test_bad_labels_of_a_configured_npz_name_the_file_and_the_array(tmp_path):
    import numpy as np
    onehot = tmp_path / "onehot.npz"
    _npz(onehot, np.eye(10, dtype=np.int64)[np.repeat(np.arange(10), 3)])
    with pytest.raises(DdflowError, match=r"onehot\.npz.*y_train has shape \(30, 10\); expected \(N,\) class labels"):
        check(_cfg(datasets=["mnist"], ipcs=[1], data={"mnist": {"npz": str(onehot)}}), HP, PAPERS)
    out_of_range = tmp_path / "range.npz"
    _npz(out_of_range, np.repeat(np.arange(1, 11), 3))
    with pytest.raises(DdflowError, match=r"range\.npz.*y_train has labels in \[1, 10\]"):
        check(_cfg(datasets=["mnist"], ipcs=[1], data={"mnist": {"npz": str(out_of_range)}}), HP, PAPERS)


@pytest.mark.parametrize("spec,message", [
    ({}, "a spec is a mapping"),
    ({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [], "rows": []}, "non-empty list of rows"),
    ({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [], "rows": [{"method": "dm"}]},
     "must be a mapping with a 'label'"),
    ({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [],
      "rows": [{"label": "X", "method": "dm9", "protocol": "dc"}]}, "names method 'dm9', which is not implemented"),
    ({"name": "t", "kind": "pie", "title": "t"}, "kind 'pie' unknown"),
])
def test_bad_table_specs_are_clear_errors_before_any_job(tmp_path, spec, message):
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "t.yaml").write_text(yaml.safe_dump(spec) if spec else "")
    with pytest.raises(DdflowError, match=message):
        check(_cfg(tables=["t"]), HP, papers)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["paper"].update(lr_img="fast"),
     r"dm\.yaml: overrides\[0\]\.set\.lr_img = 10 is a number; dm's lr_img is a string \(paper value 'fast'\)"),
    (lambda d: d["quick"].update(lr_img="fast"),
     r"dm\.yaml: quick\.lr_img = 'fast' is a string; dm's lr_img is a number"),
    (lambda d: d["quick"].update(iterations="eighty"), r"dm\.yaml: quick\.iterations = 'eighty' is a string"),
    (lambda d: d["quick"].update(iterations=-5), r"iterations = -5; expected a whole number >= 1"),
    (lambda d: d["quick"].update(eval={"dc": {"models": 0}}), r"eval\.dc\.models = 0; expected a whole number >= 1"),
    (lambda d: d["quick"].update(lr_imgg=1.0), r"quick\.lr_imgg is not a hyperparameter of 'dm'"),
    (lambda d: d["quick"].update(lr_img=0), r"lr_img = 0; expected a learning rate > 0"),
    (lambda d: d.clear() or d.update(paper=[1, 2]), r"dm\.yaml: 'paper' must be a mapping"),
])
def test_bad_hyperparameters_are_clear_errors_naming_file_and_key(tmp_path, edit, message):
    hp = tmp_path / "hp"
    shutil.copytree(HP, hp)
    doc = yaml.safe_load((hp / "methods" / "dm.yaml").read_text())
    edit(doc)
    (hp / "methods" / "dm.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DdflowError, match=message):
        check(_cfg(methods=["dm"]), hp, PAPERS)


def test_an_hparams_file_that_is_a_list_is_a_clear_error(tmp_path):
    hp = tmp_path / "hp"
    shutil.copytree(HP, hp)
    (hp / "methods" / "dm.yaml").write_text("- iterations: 5\n")
    with pytest.raises(DdflowError, match=r"dm\.yaml: an hparams file is a mapping"):
        check(_cfg(methods=["dm"]), hp, PAPERS)


@pytest.mark.workflow
def test_a_method_restricted_by_method_ipcs_gets_cells_only_at_its_ipcs(tmp_path):
    """Dry-run of the default target with dm restricted to IPC 1: dm's IPC-10 cell is not planned, random's is."""
    cfg = _cfg(methods=["random", "dm"], tables=["dream_t1"])
    cfg["grid"]["quick"]["method_ipcs"] = {"dm": [1]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
                           "-s", str(ROOT / "Snakefile"), "--configfile", str(path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    planned = proc.stdout + proc.stderr
    assert "results/eval/dc/dm/mnist5k/ipc1/s0.json" in planned
    assert "results/eval/dc/random/mnist5k/ipc10/s0.json" in planned
    assert "results/eval/dc/dm/mnist5k/ipc10/s0.json" not in planned
