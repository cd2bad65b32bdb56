"""The table of bad inputs: each one, made the way a user would make it, fails with a DdflowError (or Snakemake's
schema error) that names the file or key, at parse time (the three calls the Snakefile makes before any job:
coerce_cli_types, the JSON schema, ddflow.config.check) or, for inputs only a stage reads, before that stage does
any work; and nothing is written under results/. One row also goes through a real `snakemake -n` in a folder of
its own. Other files pin the details (tests/test_config.py, test_hparams.py, test_data.py, test_distill.py); this
file is the one list, with the message each input gives."""
import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ddflow.config import check, coerce_cli_types
from ddflow.errors import DdflowError
from ddflow.hparams import hparams_file

ROOT = Path(__file__).resolve().parents[1]
HP, PAPERS = ROOT / "workflow" / "hparams", ROOT / "workflow" / "papers"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def parse(overrides: dict, papers: Path = PAPERS) -> dict:
    """What workflow/rules/common.smk does with the config before any job."""
    config = coerce_cli_types({**copy.deepcopy(DEFAULT), **overrides})
    validate(config, SCHEMA)
    return check(config, config.get("hparams_dir") or HP, papers)


def hp_edit(method: str, edit):
    """A copy of workflow/hparams with `edit` applied to <method>.yaml (a dict edit, or the file's new text)."""
    def make(tmp: Path) -> dict:
        hp = tmp / "hp"
        shutil.copytree(HP, hp)
        path = hparams_file(method, hp)
        if isinstance(edit, str):
            path.write_text(edit)
        else:
            doc = yaml.safe_load(path.read_text())
            edit(doc)
            path.write_text(yaml.safe_dump(doc))
        return parse({"methods": [method], "hparams_dir": str(hp)})
    return make


def spec(text_or_doc):
    def make(tmp: Path) -> dict:
        papers = tmp / "papers"
        shutil.copytree(PAPERS, papers)
        body = text_or_doc if isinstance(text_or_doc, str) else yaml.safe_dump(text_or_doc)
        (papers / "t.yaml").write_text(body)
        return parse({"tables": ["t"], "methods": ["dm"]}, papers)
    return make


def npz(**arrays):
    """A configured mnist npz: 3 images per class unless `arrays` replaces an array (None drops it)."""
    def make(tmp: Path) -> dict:
        full = {"x_train": np.zeros((30, 28, 28, 1), np.uint8), "y_train": np.repeat(np.arange(10), 3),
                "x_test": np.zeros((10, 28, 28, 1), np.uint8), "y_test": np.arange(10)}
        full.update(arrays)
        path = tmp / "bad.npz"
        np.savez(path, **{k: v for k, v in full.items() if v is not None})
        return parse({"datasets": ["mnist"], "ipcs": [1], "data": {"mnist": {"npz": str(path)}}})
    return make


def config(**overrides):
    return lambda tmp: parse(overrides)


def protocols_edit(edit):
    """A copy of workflow/hparams whose protocols.yaml has `edit` applied (a dict edit, or the file's new text)."""
    def make(tmp: Path) -> dict:
        hp = tmp / "hp"
        shutil.copytree(HP, hp)
        path = hp / "stages" / "protocols.yaml"
        if isinstance(edit, str):
            path.write_text(edit)
        else:
            doc = yaml.safe_load(path.read_text())
            edit(doc)
            path.write_text(yaml.safe_dump(doc))
        return parse({"methods": ["dm"], "hparams_dir": str(hp)})
    return make


def record(**changes):
    """A DM record of mnist5k at IPC 1 (10 images, one per class) with `changes`, saved and loaded as `ddflow
    evaluate` loads it (ddflow.records.load_distilled)."""
    def make(tmp: Path):
        from ddflow.records import FORMAT, load_distilled
        obj = {"format": FORMAT, "images": torch.zeros(10, 1, 28, 28), "labels": torch.arange(10), "method": "dm",
               "dataset": "mnist5k", "ipc": 1, "seed": 0, "mean": [0.1307], "std": [0.3081]}
        obj.update(changes)
        path = tmp / "s0.pt"
        torch.save(obj, path)
        load_distilled(path)
    return make


def nan_images(n_bad=1, value=float("nan")):
    x = torch.zeros(10, 1, 28, 28)
    x.view(-1)[:n_bad] = value
    return x


def target(**wildcards):
    """A target path's wildcards as the input functions check them when the DAG is built."""
    def make(tmp: Path):
        from ddflow.config import check_target
        check_target(wildcards, coerce_cli_types(copy.deepcopy(DEFAULT)))
    return make


def full_disk(tmp: Path):
    """A write into a file system with no space left (/dev/full answers every write with ENOSPC)."""
    from ddflow.io import atomic_path
    with atomic_path(tmp / "eval" / "cell.json") as out:
        out.write_text("{}")
        with open("/dev/full", "w") as f:
            f.write("x" * 100)
            f.flush()


def gpu_locks_in_a_shared_folder(tmp: Path):
    from ddflow.gpu_slots import try_claim
    shared = tmp / "locks"
    shared.mkdir()
    shared.chmod(0o777)
    try_claim(["GPU-aaaa"], shared)


def garbage_file(tmp: Path) -> Path:
    path = tmp / "not-a-zip.npz"
    path.write_bytes(b"\x00garbage" * 10)
    return path


def prepare_garbage(tmp):
    from ddflow.data import prepare
    prepare("mnist", tmp / "out.npz", npz=garbage_file(tmp))


def prepare_missing(tmp):
    from ddflow.data import prepare
    prepare("cifar10", tmp / "out.npz", npz=tmp / "nowhere" / "cifar10.npz")


def load_corrupt_record(tmp):
    from ddflow.records import load_distilled
    path = tmp / "s0.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    load_distilled(path)


def read_corrupt_cell(tmp):
    from ddflow.report.tables import build_table
    cell = tmp / "s0.json"
    cell.write_text("{not json")
    build_table(PAPERS / "dream_t1.yaml", [cell], ["mnist"], [1])


def bad_device(tmp):
    from ddflow.runtime import resolve_device
    resolve_device("tpu")


# (kind, how it is made, message it gives: a regex naming the file or the key)
BAD_INPUTS = [
    # the config (config.yaml or --config)
    ("preset", config(preset="fast"), r"'fast' is not one of \['quick', 'paper'\]"),
    ("device", config(device="tpu"), r"'tpu' is not one of \['auto', 'cpu', 'cuda'\]"),
    ("unknown config key", config(method=["dm"]), r"Additional properties are not allowed \('method' was unexpected"),
    ("unknown dataset", config(datasets=["imagenet"]), r"config key 'datasets': unknown dataset 'imagenet'"),
    ("dataset name with capitals", config(datasets=["MNIST"]), r"\['MNIST'\] is not valid.*On instance\['datasets'\]"),
    ("unknown method", config(methods=["dsa9"]),
     r"config key 'methods': unknown method 'dsa9'; implemented: .*\bdc\b.*\bdm\b"),
    ("empty method list", config(methods=[]), r"\[\] is not valid.*On instance\['methods'\]"),
    ("IPC 0", config(ipcs=[0]), r"\[0\] is not valid.*On instance\['ipcs'\]"),
    ("IPC not a number", config(ipcs=["ten"]), r"\['ten'\] is not valid.*On instance\['ipcs'\]"),
    ("IPC above the smallest class", config(ipcs=[1, 500]), r"IPC \[500\] larger than the smallest class of mnist5k"),
    ("negative seed", config(seeds=[-1]), r"\[-1\] is not valid.*On instance\['seeds'\]"),
    ("unknown table", config(tables=["nope_t9"]), r"config key 'tables': unknown table 'nope_t9'; known: dream_t1"),
    ("unknown figure", config(figures=["fig99"]), r"\['fig99'\] is not valid.*On instance\['figures'\]"),
    ("data for an unknown dataset", config(data={"mnistx": {"npz": "a.npz"}}), r"config key 'data': unknown dataset"),
    ("data with an unknown source key", config(data={"mnist": {"url": "http://x"}}), r"'url' was unexpected"),
    ("missing npz", config(datasets=["mnist"], data={"mnist": {"npz": "/nonexistent/mnist.npz"}}),
     r"/nonexistent/mnist\.npz does not exist"),
    ("shell injection in an npz path", config(datasets=["mnist"], data={"mnist": {"npz": "$(touch INJECTED).npz"}}),
     r"\$\(touch INJECTED\)\.npz does not exist"),
    ("missing hparams_dir", config(hparams_dir="/nonexistent/hp"), r"/nonexistent/hp"),
    ("save_every 0", config(save_every=0), r"0 is less than the minimum of 1"),
    # a configured npz
    ("one-hot labels", npz(y_train=np.eye(10, dtype=np.int64)[np.repeat(np.arange(10), 3)]),
     r"bad\.npz.*y_train has shape \(30, 10\); expected \(N,\) class labels"),
    ("labels out of range", npz(y_train=np.repeat(np.arange(1, 11), 3)), r"bad\.npz.*y_train has labels in \[1, 10\]"),
    ("test labels out of range", npz(y_test=np.arange(1, 11)), r"bad\.npz.*y_test has labels in \[1, 10\]"),
    ("npz without x_test", npz(x_test=None), r"config data\.mnist\.npz: .*bad\.npz lacks array\(s\) x_test"),
    # hyperparameter files (workflow/hparams/methods/<method>.yaml)
    ("hparam of the wrong type", hp_edit("dm", lambda d: d["quick"].update(lr_img="fast")),
     r"dm\.yaml: quick\.lr_img = 'fast' is a string; dm's lr_img is a number"),
    ("count as a word", hp_edit("dm", lambda d: d["quick"].update(iterations="eighty")),
     r"dm\.yaml: quick\.iterations = 'eighty' is a string"),
    ("negative iterations", hp_edit("dm", lambda d: d["quick"].update(iterations=-5)),
     r"dm\.yaml resolved for mnist5k, IPC 1, preset quick.*iterations = -5; expected a whole number >= 1"),
    ("fractional iterations", hp_edit("dm", lambda d: d["quick"].update(iterations=2.5)),
     r"dm\.yaml.*iterations = 2\.5"),
    ("zero evaluation models", hp_edit("dm", lambda d: d["quick"].update(eval={"dc": {"models": 0}})),
     r"dm\.yaml.*eval\.dc\.models = 0; expected a whole number >= 1"),
    ("zero learning rate", hp_edit("dm", lambda d: d["quick"].update(lr_img=0)),
     r"dm\.yaml.*lr_img = 0; expected a learning rate > 0"),
    ("unknown hparam", hp_edit("dm", lambda d: d["quick"].update(lr_imgg=1.0)),
     r"dm\.yaml: quick\.lr_imgg is not a hyperparameter of 'dm'"),
    ("hparams file that is a list", hp_edit("dm", "- iterations: 5\n"), r"dm\.yaml: an hparams file is a mapping"),
    ("section that is a list", hp_edit("dm", lambda d: d.update(paper=[1, 2])), r"dm\.yaml: 'paper' must be a mapping"),
    ("hparams file that is not YAML", hp_edit("dm", "paper: {iterations: [\n"), r"dm\.yaml"),
    # table specs (workflow/papers/<table>.yaml)
    ("empty table spec", spec(""), r"t\.yaml: a spec is a mapping of keys, got an empty file"),
    ("spec with no rows", spec({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [], "rows": []}),
     r"t\.yaml: 'rows' must be a non-empty list"),
    ("row without a label", spec({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [],
                                  "rows": [{"method": "dm"}]}), r"t\.yaml: row 1 must be a mapping with a 'label'"),
    ("row naming an unknown method", spec({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [],
                                           "rows": [{"label": "X", "method": "dm9", "protocol": "dc"}]}),
     r"t\.yaml: a row names method 'dm9', which is not implemented"),
    ("row with a protocol that does not fit", spec({"name": "t", "title": "t", "paper_datasets": [], "paper_ipcs": [],
                                                    "rows": [{"label": "X", "method": "dm", "protocol": "frepo"}]}),
     r"table t: protocol 'frepo' does not fit method 'dm'"),
    ("unknown spec kind", spec({"name": "t", "kind": "pie", "title": "t"}), r"t\.yaml: kind 'pie' unknown"),
    # inputs only a stage reads: that stage fails before its work, naming the file
    ("npz that is not a zip", prepare_garbage, r"not-a-zip\.npz"),
    ("npz that is not there (data stage)", prepare_missing,
     r"nowhere/cifar10\.npz: npz for dataset 'cifar10' not found"),
    ("corrupt distilled record", load_corrupt_record, r"s0\.pt: corrupt or not a"),
    ("corrupt evaluation cell", read_corrupt_cell, r"s0\.json"),
    ("device unknown to the CLI", bad_device, r"device 'tpu' unknown; allowed: auto, cpu, cuda"),
    # values the schema's types let through: finite, in range, bounded (a setting asking for weeks is a typo)
    ("NaN learning rate", hp_edit("dm", lambda d: d["quick"].update(lr_img=float("nan"))),
     r"dm\.yaml resolved for mnist5k, IPC 1, preset quick: lr_img = nan; expected a finite number"),
    ("infinite learning rate", hp_edit("dm", lambda d: d["quick"].update(lr_img=float("inf"))),
     r"dm\.yaml.*lr_img = inf; expected a finite number"),
    ("iterations 10**12", hp_edit("dm", lambda d: d["quick"].update(iterations=10**12)),
     r"dm\.yaml.*iterations = 1000000000000; expected a whole number >= 1 and <= 10,000,000"),
    ("batch_real 10**9", hp_edit("dm", lambda d: d["quick"].update(batch_real=10**9)),
     r"dm\.yaml.*batch_real = 1000000000; expected a whole number >= 1 and <= 1,000,000"),
    ("unknown init", hp_edit("dm", lambda d: d["quick"].update(init="zeros")),
     r"dm\.yaml.*init = 'zeros'; expected one of real, noise"),
    ("unknown IDC init", hp_edit("idc", lambda d: d["quick"].update(init="noise")),
     r"idc\.yaml.*init = 'noise'; expected one of random, mix, kmeans"),
    ("snapshot beyond the run", hp_edit("dm", lambda d: d["quick"].update(snapshots=[0, 10**6])),
     r"dm\.yaml.*snapshots = \[0, 1000000\]; expected iterations within the run, 0 to iterations = \d+ "
     r"\(outside: \[1000000\]\)"),
    ("negative protocol learning rate", protocols_edit(lambda d: d["dc"].update(lr=-0.01)),
     r"protocols\.yaml: dc: lr = -0\.01; expected a learning rate > 0"),
    ("protocol momentum above 1", protocols_edit(lambda d: d["idc"].update(momentum=1.5)),
     r"protocols\.yaml: idc: momentum = 1\.5; expected a number in \[0, 1\]"),
    ("NaN protocol weight decay", protocols_edit(lambda d: d["dc"].update(weight_decay=float("nan"))),
     r"protocols\.yaml: dc: weight_decay = nan; expected a finite number"),
    ("protocol batch 10**9", protocols_edit(lambda d: d["soft"].update(batch=10**9)),
     r"protocols\.yaml: soft: batch = 1000000000; expected a whole number >= 1 and <= 1,000,000"),
    ("protocols.yaml that is not YAML", protocols_edit("dc: {lr: [\n"), r"protocols\.yaml: invalid YAML"),
    ("table spec that is not YAML", spec("name: t\nrows: [\n"), r"t\.yaml: invalid YAML"),
    ("grid null", config(grid="null"), r"config key 'grid' = 'null': the presets' grids are required"),
    # a distilled record, however it was made (ddflow evaluate, an import, a copied file), is checked when loaded
    ("NaN record", record(images=nan_images(3)), r"s0\.pt: 3 of 7840 image values are NaN or infinite"),
    ("infinite record", record(images=nan_images(1, float("inf"))), r"s0\.pt: 1 of 7840 image values are NaN"),
    ("empty record", record(images=torch.zeros(0, 1, 28, 28), labels=torch.zeros(0, dtype=torch.int64)),
     r"s0\.pt: no images \(an empty set\)"),
    ("record of the wrong image size", record(images=torch.zeros(10, 3, 32, 32)),
     r"s0\.pt: images of shape \(3, 32, 32\); mnist5k images are \(1, 28, 28\)"),
    ("record of the wrong IPC", record(ipc=10), r"s0\.pt: 10 images; a mnist5k set at IPC 10 holds 100"),
    ("record labels out of range", record(labels=torch.arange(10) + 5),
     r"s0\.pt: labels in \[5, 14\]; mnist5k classes are 0 to 9"),
    ("record labels unbalanced", record(labels=torch.zeros(10, dtype=torch.int64)),
     r"s0\.pt: images per class \[10, 0, 0, 0, 0, 0, 0, 0, 0, 0\]; every class must have 1"),
    ("record with NaN soft labels", record(labels=torch.full((10, 10), float("nan"))),
     r"s0\.pt: learned labels must be finite floats \(N, 10\)"),
    ("record with float hard labels", record(labels=torch.arange(10).float()), r"hard labels must be whole numbers"),
    ("record with a NaN learned lr", record(lr=float("nan")), r"s0\.pt: learned lr = nan"),
    ("record of an unknown dataset", record(dataset="mnist9"), r"s0\.pt: unknown dataset 'mnist9'"),
    # target paths: their wildcards are checked when the DAG is built
    ("target at IPC 0", target(dataset="mnist5k", ipc="0", method="dm", protocol="dc"),
     r"target with dataset=mnist5k, ipc=0.*: IPC 0; an IPC is a whole number >= 1"),
    ("target of an unknown dataset", target(dataset="imagenet9", ipc="1"), r"unknown dataset 'imagenet9'"),
    ("target above the smallest class", target(dataset="mnist5k", ipc="401"), r"IPC 401 larger than the smallest"),
    ("target of an unknown method", target(method="dm9"), r"target with method=dm9: unknown method 'dm9'"),
    ("target with a protocol that does not fit", target(method="dm", protocol="frepo"),
     r"protocol 'frepo' does not fit 'dm'"),
    # faults
    ("full disk", full_disk, r"cell\.json: the disk is full \(No space left on device\); nothing was written"),
    ("GPU lock folder others can enter", gpu_locks_in_a_shared_folder,
     r"GPU lock folder .*locks has mode 777; group and others must have no access"),
]


@pytest.mark.parametrize("make,message", [(m, msg) for _, m, msg in BAD_INPUTS], ids=[k for k, _, _ in BAD_INPUTS])
def test_bad_input_is_a_clear_error_before_any_work(make, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((DdflowError, WorkflowError)) as err:
        make(tmp_path)
    text = str(err.value)
    assert re.search(message, text, re.S), text[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "INJECTED").exists()


def test_imports_given_on_the_command_line_pass_the_schema():
    """`--config 'imports={mine: {..., ipc: 1}}'` arrives as strings (Snakemake reads nested values with YAML's
    BaseLoader); coerce_cli_types reads them as config.yaml would, so the schema accepts what config.yaml accepts."""
    entry = {"path": "sets/mine.pt", "format": "plain", "dataset": "mnist5k", "ipc": "1", "space": "pixels",
             "seed": "0", "lr": "0.01", "normalize_as": "null", "tables": ["dream_t1"]}
    config = coerce_cli_types({**copy.deepcopy(DEFAULT), "imports": {"mine": entry}})
    validate(config, SCHEMA)
    assert config["imports"]["mine"] == {**entry, "ipc": 1, "seed": 0, "lr": 0.01, "normalize_as": None}
    named = coerce_cli_types({**copy.deepcopy(DEFAULT), "imports": {"mine": {**entry, "lr": "sets/lr.txt"}}})
    assert named["imports"]["mine"]["lr"] == "sets/lr.txt"  # a file holding the lr stays a path


def test_the_table_covers_at_least_25_kinds():
    assert len(BAD_INPUTS) >= 25 and len({k for k, _, _ in BAD_INPUTS}) == len(BAD_INPUTS)


def test_a_corrupt_resume_file_is_moved_aside_not_an_error(tmp_path):
    """The one bad input that is not an error: a resume file cut short by a crash starts the run afresh."""
    from ddflow.io import load_resume
    path = tmp_path / "s0.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    assert load_resume(path) is None
    assert not path.exists() and (tmp_path / "s0.pt.corrupt").exists()
    torch.save({"it": 3}, path)
    assert load_resume(path) == {"it": 3}


@pytest.mark.workflow
def test_snakemake_refuses_before_any_job_and_writes_nothing(tmp_path):
    """A real `snakemake -n` with a shell-injection npz path: the config check refuses it, nothing runs."""
    args, message = ["data={mnist: {npz: '$(touch INJECTED).npz'}}", "datasets=[mnist]"], r"INJECTED\)\.npz does not"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(ROOT / "config.yaml"),
                           "--config", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "INJECTED").exists()


def test_a_full_disk_under_torch_save_names_the_file(tmp_path, monkeypatch):
    """torch.save on a full disk says "unexpected pos ..." (PytorchStreamWriter): with no space left where the file
    goes, the error says the disk is full and names the file, and no partial file is left."""
    import os

    import torch

    from ddflow import io

    def short_write(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4096 vs 4032")

    monkeypatch.setattr(torch, "save", short_write)  # io.save_pt imports torch when called
    monkeypatch.setattr(io.os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 10, 0, 0, 0, 0, 0, 0, 255)))
    with pytest.raises(DdflowError, match=r"s0\.pt: the disk is full \(0 bytes free; the writer said: .*unexpected"):
        io.save_pt({"x": 1}, tmp_path / "s0.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.workflow
def test_a_copied_run_folder_keeps_its_jobs_parameters_and_a_dry_run_shows_the_thread_count(tmp_path):
    """Parameters name no absolute path (a finished run folder copied elsewhere reruns nothing for a changed
    parameter), and the dry run prints the torch thread count each job's command passes (fixed per rule)."""
    checkout = tmp_path / "moved" / "ddflow"
    for name in ("Snakefile", "config.yaml"):
        checkout.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "workflow", checkout / "workflow")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--config",
                           "methods=[dm,mtt]", "ipcs=[1]", "tables=[dream_t1]"], cwd=checkout, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    commands = [line[line.index("python -m ddflow"):] for line in out.splitlines() if "python -m ddflow" in line]
    assert {c.split()[3] for c in commands} >= {"data", "experts", "distill", "evaluate", "table"}, commands
    absolute = [c for c in commands if str(tmp_path) in c or str(ROOT) in c]
    assert not absolute, absolute
    assert "--spec workflow/papers/dream_t1.yaml" in out
    # the jobs take the settings their rule resolved, never the hparams folder (ddflow.settings)
    assert not [c for c in commands if "--hparams-dir" in c] and all(
        "--settings " in c for c in commands if c.split()[3] in ("distill", "evaluate", "experts"))
    assert "torch threads of each job (fixed by its rule" in out and "distill 1" in out
    assert all("--threads 1 " in c for c in commands if c.split()[3] in ("distill", "evaluate", "experts")), commands


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_provenance_names_the_workflow_checkout_not_the_packages_or_an_enclosing_repository(tmp_path, monkeypatch):
    """An edited rule file in another clone is recorded as uncommitted changes of that clone's commit; a copy
    without .git inside another repository records no commit (not the enclosing repository's)."""
    from ddflow import runtime
    clone = tmp_path / "clone"
    (clone / "workflow").mkdir(parents=True)
    (clone / "workflow" / "rule.smk").write_text("rule a:\n")
    _git(clone, "init", "-q")
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv(runtime.WORKFLOW_DIR_ENV, str(clone))
    runtime.git_state.cache_clear()
    assert runtime.provenance()["workflow_commit"] == head
    (clone / "workflow" / "rule.smk").write_text("rule b:\n")
    runtime.git_state.cache_clear()
    prov = runtime.provenance()
    assert prov["workflow_commit"] == f"{head} (uncommitted changes)" and prov["workflow_dir"] == str(clone)
    copy_inside = clone / "vendored" / "ddflow"
    shutil.copytree(clone / "workflow", copy_inside / "workflow")
    monkeypatch.setenv(runtime.WORKFLOW_DIR_ENV, str(copy_inside))
    runtime.git_state.cache_clear()
    assert runtime.provenance()["workflow_commit"] is None
    assert runtime.provenance()["torch_threads"] == torch.get_num_threads()
    runtime.git_state.cache_clear()


def test_prepared_data_and_tables_carry_their_provenance(tmp_path):
    import json

    from ddflow.data.npzmap import NpzStreamWriter
    from ddflow.report.tables import write_outputs
    with NpzStreamWriter(tmp_path / "d.npz") as w:
        w.add("y_train", np.arange(3))
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:
        assert json.loads(str(z["provenance"][0]))["torch_threads"] == torch.get_num_threads()
    import pandas as pd
    write_outputs(tmp_path / "t", pd.DataFrame({"a": [1]}), ["| a |"], tex="\\begin{tabular}{l}\\end{tabular}\n")
    assert "<!-- made by: {" in (tmp_path / "t.md").read_text()
    assert "% made by: {" in (tmp_path / "t.tex").read_text()
    assert "made by" not in (tmp_path / "t.csv").read_text()
