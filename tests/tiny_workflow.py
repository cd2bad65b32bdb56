"""Shared set-up of the end-to-end tests: a work directory holding a copy of workflow/hparams whose quick preset is
shrunk to seconds per job, a config.yaml derived from the repository's, and Snakemake run on it."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from ddflow.data.sources import load_arrays
from ddflow.hparams import deep_merge, hparams_file
from ddflow.io import save_npz

ROOT = Path(__file__).resolve().parents[1]


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


# the tiny mnist5k of tiny_workdir(tiny_data=...): training images per class, test images, and its validation split
# per class (mnist5k's own: 50 of about 400). The data-sized jobs (the whole-dataset cell, the feature net, every
# test pass) then take a fraction of a second instead of tens of seconds.
TINY_DATA = {"per_class": 30, "n_test": 100}
TINY_VALIDATION = 5


def tiny_workdir(work: Path, quick: dict[str, dict], tiny_data: str | Path | None = None, **config) -> Path:
    """work/hparams = workflow/hparams with `quick[file]` merged into each named file's quick section (its
    quick_overrides dropped, so the tiny values hold at every IPC); work/config.yaml = the repository's config with
    the CPU, a resume file every iteration, that hparams dir, no snapshot candidates (paper_rule false: a test that
    shows the rule rows turns it on) and `config` on top. With `tiny_data` (the prepared mnist5k, the `mnist5k_path`
    fixture), the run reads work/tiny.npz, TINY_DATA's first images of it, with a validation split of
    TINY_VALIDATION per class (unless `quick` sets validation.yaml). Returns work."""
    work.mkdir(parents=True, exist_ok=True)
    if tiny_data is not None:
        npz = write_tiny_mnist5k(tiny_data, work / "tiny.npz", **TINY_DATA)
        quick = {"validation.yaml": {"per_class": TINY_VALIDATION}, **quick}
        config = {"data": {"mnist5k": {"npz": str(npz)}}, **config}
    hp = work / "hparams"
    shutil.copytree(ROOT / "workflow" / "hparams", hp)
    for name, values in quick.items():
        path = hparams_file(Path(name).stem, hp)   # methods/<name> or stages/<name>
        doc = yaml.safe_load(path.read_text())
        doc["quick"] = deep_merge(doc.get("quick") or {}, values)
        doc.pop("quick_overrides", None)
        path.write_text(yaml.safe_dump(doc))
    _snapshots_within_the_run(hp)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update({"hparams_dir": str(hp), "device": "cpu", "save_every": 1, "paper_rule": False, **config})
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


def _snapshots_within_the_run(hp: Path) -> None:
    """Drop the snapshot iterations a shrunk run no longer reaches (the config check refuses snapshots beyond
    `iterations`), in the quick section of each hparams file whose resolved cell has them."""
    from ddflow.errors import DdflowError
    from ddflow.hparams import resolve
    for path in sorted(hp.glob("methods/*.yaml")):
        try:
            cells = [resolve(path.stem, "mnist5k", ipc, "quick", hp) for ipc in (1, 10)]
        except (DdflowError, KeyError, TypeError, AttributeError):
            continue  # protocols.yaml and other files that are not a method's
        total = min(int(c.get("iterations") or 0) for c in cells)
        snaps = cells[0].get("snapshots") or []
        if "iterations" in cells[0] and any(int(n) > total for n in snaps):
            doc = yaml.safe_load(path.read_text())
            doc["quick"] = {**(doc.get("quick") or {}), "snapshots": [n for n in snaps if int(n) <= total]}
            path.write_text(yaml.safe_dump(doc))


def write_tiny_mnist5k(mnist5k_path: str | Path, out: Path, per_class: int = 10, n_test: int = 100) -> Path:
    """A small mnist5k at `out`: the first `per_class` training images of each class and the first `n_test` test
    images (by default 100 and 100)."""
    a = load_arrays(mnist5k_path)
    keep = np.concatenate([np.flatnonzero(a["y_train"] == c)[:per_class] for c in range(10)])
    save_npz(out, x_train=a["x_train"][keep], y_train=a["y_train"][keep], x_test=a["x_test"][:n_test],
             y_test=a["y_test"][:n_test])
    return out
