"""The official reference numbers of the smoke command, as data: workflow/smoke.yaml beside the other paper values
(each figure with its source), shipped with the package as smoke/references.yaml (a link to that file, as
src/ddflow/_hparams links workflow/hparams), so a checkout without Snakemake and an installed ddflow read the same
file. Checked when loaded: a missing or malformed entry is an error naming the file and key."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import DdflowError

PATH = Path(__file__).resolve().parent / "references.yaml"
FORMAT = "ddflow.smoke-references/1"
ACCURACY_KEYS = ("dc_mnist_ipc1", "dm_cifar10_ipc10_snapshot", "dm_cifar10_ipc10_final")
SPEED_KEYS = ("dm_s_per_iteration", "dsa_s_per_iteration", "mtt_s_per_iteration", "expert_s_per_epoch",
              "eval_k1_s", "eval_k20_s")


def _figure(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"mean", "std", "source"}:
        raise DdflowError(f"{path}: {key} must be a mapping with mean, std and source; got {value!r}")
    if not all(isinstance(value[k], (int, float)) for k in ("mean", "std")):
        raise DdflowError(f"{path}: {key}.mean and {key}.std must be numbers; got {value!r}")
    return {"mean": float(value["mean"]), "std": float(value["std"]), "source": str(value["source"])}


def parse(doc: Any, path: Path = PATH) -> dict[str, Any]:
    """{official_runs, official_device, accuracy: {key: {label, official, paper?}}, speed: {key: (s, source)}}."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DdflowError(f"{path}: not a smoke reference file (format: {FORMAT})")
    accuracy, speed = doc.get("accuracy") or {}, doc.get("speed") or {}
    for section, have, want in (("accuracy", accuracy, ACCURACY_KEYS), ("speed", speed, SPEED_KEYS)):
        if not isinstance(have, dict) or set(have) != set(want):
            raise DdflowError(f"{path}: {section} must hold exactly {', '.join(want)}; got {sorted(have)}")
    refs: dict[str, dict[str, Any]] = {}
    for key in ACCURACY_KEYS:
        entry = accuracy[key]
        if not isinstance(entry, dict) or not entry.get("label") or set(entry) - {"label", "official", "paper"}:
            raise DdflowError(f"{path}: accuracy.{key} needs label and official (paper optional); got {entry!r}")
        refs[key] = {"label": str(entry["label"]), "official": _figure(path, f"accuracy.{key}.official",
                                                                       entry.get("official"))}
        if "paper" in entry:
            refs[key]["paper"] = _figure(path, f"accuracy.{key}.paper", entry["paper"])
    speeds: dict[str, tuple[float, str]] = {}
    for key in SPEED_KEYS:
        entry = speed[key]
        if (not isinstance(entry, dict) or set(entry) != {"seconds", "source"}
                or not isinstance(entry["seconds"], (int, float)) or entry["seconds"] <= 0):
            raise DdflowError(f"{path}: speed.{key} needs seconds (> 0) and source; got {entry!r}")
        speeds[key] = (float(entry["seconds"]), str(entry["source"]))
    for key in ("official_runs", "official_device"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise DdflowError(f"{path}: {key} must be a non-empty string")
    return {"official_runs": doc["official_runs"], "official_device": doc["official_device"], "accuracy": refs,
            "speed": speeds}


@lru_cache(maxsize=1)
def load(path: Path = PATH) -> dict[str, Any]:
    if not path.is_file():
        raise DdflowError(f"{path}: the smoke reference numbers are missing (workflow/smoke.yaml of a checkout, "
                          f"shipped with the package as ddflow/smoke/references.yaml)")
    return parse(yaml.safe_load(path.read_text()), path)
