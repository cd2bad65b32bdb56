"""An installed ddflow works outside a checkout: the hyperparameter files ship with the package (src/ddflow/_hparams,
a link to workflow/hparams; pyproject.toml package-data), and `python -m ddflow evaluate` evaluates a set with one
command naming a dataset (the data prepared once into the cache, the preset, protocol and output defaulted)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from ddflow import hparams
from ddflow.cli import main
from ddflow.data import get_info
from ddflow.errors import DdflowError
from ddflow.records import DistilledSet

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_HPARAMS = ROOT / "workflow" / "hparams"


def _outside_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != hparams.ENV_VAR}
    return {**env, "PYTHONPATH": str(ROOT / "src"), "DDFLOW_CACHE": str(tmp_path / "cache")}


def test_hparams_resolve_to_the_packaged_copy_from_outside_a_checkout(tmp_path):
    code = ("from ddflow.hparams import hparams_dir, resolve; print(hparams_dir()); "
            "print(resolve('dm', 'cifar10', 10, 'paper')['iterations'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_outside_env(tmp_path), capture_output=True,
                         text=True, check=True).stdout.split()
    assert Path(out[0]) == hparams.PACKAGED and int(out[1]) > 0
    packaged = sorted(p.relative_to(hparams.PACKAGED).as_posix() for p in hparams.PACKAGED.rglob("*.yaml"))
    assert packaged == sorted(p.relative_to(WORKFLOW_HPARAMS).as_posix() for p in WORKFLOW_HPARAMS.rglob("*.yaml"))
    assert "stages/protocols.yaml" in packaged and "methods/dm.yaml" in packaged
    for name in packaged:  # one source of truth: the package's copy is workflow/hparams itself
        assert (hparams.PACKAGED / name).read_bytes() == (WORKFLOW_HPARAMS / name).read_bytes()


def test_a_checkouts_own_hparams_still_win_when_run_from_its_root(tmp_path, monkeypatch):
    monkeypatch.delenv(hparams.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert hparams.hparams_dir() == hparams.PACKAGED
    (tmp_path / "workflow" / "hparams").mkdir(parents=True)
    assert hparams.hparams_dir() == (tmp_path / "workflow" / "hparams").resolve()
    monkeypatch.setattr(hparams, "PACKAGED", tmp_path / "nowhere")
    monkeypatch.chdir(ROOT / "docs")
    with pytest.raises(DdflowError, match="no hyperparameter folder"):
        hparams.hparams_dir()


@pytest.mark.skipif(subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0,
                    reason="no pip")
def test_a_non_editable_wheel_carries_every_hparams_file(tmp_path):
    """What `pip install .` installs: the wheel built from this tree (no network, no dependencies)."""
    build = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", build / "src", symlinks=True, ignore=ignore)     # _hparams stays a link
    shutil.copytree(WORKFLOW_HPARAMS, build / "workflow" / "hparams")
    shutil.copy(ROOT / "workflow" / "smoke.yaml", build / "workflow" / "smoke.yaml")  # smoke/references.yaml's target
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, build / name)
    assert (build / "src" / "ddflow" / "_hparams").is_symlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(build)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("ddflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for p in WORKFLOW_HPARAMS.rglob("*.yaml"):
        assert f"ddflow/_hparams/{p.relative_to(WORKFLOW_HPARAMS).as_posix()}" in names
    assert "ddflow/smoke/references.yaml" in names  # the smoke command's official numbers
    # installed (the wheel unpacked, as pip lays it out), run from elsewhere: `import` resolves eval_as's settings
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    torch.save({"images": torch.rand(10, 1, 28, 28), "labels": torch.arange(10)}, work / "set.pt")
    env = {**_outside_env(tmp_path), "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "ddflow", "import", "--name", "x", "--path", "set.pt", "--format",
                           "plain", "--dataset", "mnist5k", "--ipc", "1", "--space", "pixels", "--out", "x.pt"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and (work / "x.pt").is_file(), proc.stderr[-2000:]
    code = "import ddflow.hparams as h; print(h.hparams_dir())"
    where = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True).stdout
    assert Path(where.strip()) == site / "ddflow" / "_hparams"
    code = "import ddflow.smoke.references as r; print(r.load()['speed']['dm_s_per_iteration'][0])"
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "0.068", proc.stderr[-2000:]


def _outside_set(tmp_path, ipc=10):
    info = get_info("mnist5k")
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(10 * ipc, 1, 28, 28, generator=g) - info.mean[0]) / info.std[0]
    path = tmp_path / "set.npz"
    import numpy as np
    np.savez(path, images=x.numpy(), labels=torch.arange(10).repeat(ipc).numpy(), space=np.asarray("normalized"))
    return path


def _fake_cell(seen):
    def fake_cell(record, protocol, settings, data, device, stream, teacher=None):
        seen.update(record=record, protocol=protocol, settings=settings, n_train=len(data.x_train))
        return {"method": record.method, "dataset": record.dataset, "ipc": record.ipc, "protocol": protocol,
                "preset": record.preset, "mean": 50.0, "std": 1.0, "n_models": settings["models"],
                "accuracies": [50.0]}
    return fake_cell


def test_evaluate_a_set_with_one_command_naming_a_dataset(tmp_path, monkeypatch, capsys):
    """Only --distilled and --dataset: format plain, space from the file, IPC 10 from its size, the paper preset,
    protocol dc (no lr), the data prepared into $DDFLOW_CACHE, the cell printed as JSON."""
    import ddflow.stages.evaluate as evaluate_stage

    seen = {}
    monkeypatch.setattr(evaluate_stage, "evaluate_cell", _fake_cell(seen))
    monkeypatch.delenv(hparams.ENV_VAR, raising=False)
    monkeypatch.setenv("DDFLOW_CACHE", str(tmp_path / "cache"))
    path = _outside_set(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--distilled", str(path), "--dataset", "mnist5k"]) == 0
    cell = json.loads(capsys.readouterr().out)
    assert cell["protocol"] == "dc" and cell["ipc"] == 10 and seen["record"].space == "normalized"
    paper = hparams.resolve("dm", "mnist5k", 10, "paper", hparams.PACKAGED)["eval"]["dc"]
    assert seen["settings"]["epochs"] == paper["epochs"] and seen["settings"]["models"] == paper["models"]
    assert (tmp_path / "cache" / "data" / "mnist5k.npz").is_file() and seen["n_train"] == 5000 - 1000
    assert not (tmp_path / "workflow").exists() and not (tmp_path / "results").exists()

    # a ddflow record needs no dataset: its own preset, its method's protocol
    info = get_info("mnist5k")
    record = DistilledSet(images=torch.zeros(10, 1, 28, 28), labels=torch.arange(10), method="mtt", dataset="mnist5k",
                          ipc=1, seed=0, mean=info.mean, std=info.std, preset="quick", lr=0.01)
    record.save(tmp_path / "rec.pt")
    out = tmp_path / "cell.json"
    assert main(["evaluate", "--distilled", str(tmp_path / "rec.pt"), "--out", str(out)]) == 0
    cell = json.loads(out.read_text())
    assert cell["protocol"] == "mtt" and cell["preset"] == "quick" and cell["method"] == "mtt"
    assert main(["evaluate", "--distilled", str(tmp_path / "rec.pt"), "--dataset", "cifar10"]) == 2   # not its set
    from PIL import Image

    # PNG folders by class name: --classes, as import takes it
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for w in words:
        (tmp_path / "pngs" / w).mkdir(parents=True)
        Image.new("L", (28, 28), 0).save(tmp_path / "pngs" / w / "0.png")
    assert main(["evaluate", "--distilled", str(tmp_path / "pngs"), "--dataset", "mnist5k", "--space", "pixels"]) == 2
    assert main(["evaluate", "--distilled", str(tmp_path / "pngs"), "--dataset", "mnist5k", "--space", "pixels",
                 "--classes", *words, "--out", str(out)]) == 0
    assert seen["record"].ipc == 1 and seen["protocol"] == "dc"
    torch.save({"images": torch.rand(10, 1, 28, 28), "labels": torch.arange(10)}, tmp_path / "bare.pt")
    with pytest.raises(DdflowError, match="--space"):
        from ddflow.interop.evaluate import outside_record
        outside_record(tmp_path / "bare.pt", "mnist5k", "paper")


def test_evaluate_one_command_end_to_end(tmp_path, monkeypatch, capsys, mnist5k_path):
    monkeypatch.delenv(hparams.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    path = _outside_set(tmp_path)
    assert main(["evaluate", "--distilled", str(path), "--dataset", "mnist5k", "--data", str(mnist5k_path),
                 "--preset", "quick", "--models", "1", "--device", "cpu", "--threads", "1"]) == 0
    cell = json.loads(capsys.readouterr().out)
    assert cell["n_models"] == 1 and 0 <= cell["mean"] <= 100 and cell["preset"] == "quick"
    assert cell["method"] == "outside" and cell["settings"]["epochs"] == 15    # dm.yaml quick_overrides, IPC 10
