"""Per-method hyperparameters as data: workflow/hparams/<method>.yaml.

File layout (every value carries a comment naming its source in the YAML itself):

    inherit: other-method      # optional: start from that file's resolved values (method variants)
    paper: {...}               # the paper / official-code defaults
    overrides:                 # dataset x IPC exceptions, applied in order, paper scale
      - when: {dataset: [mnist, mnist5k], ipc: [1]}
        set: {...}
    quick: {...}               # the quick preset's reductions (applied after the overrides)
    quick_overrides: [...]     # same form as overrides, quick preset only

Resolution = paper <- matching overrides <- (quick <- matching quick_overrides, if preset is quick), merged
key by key (nested dicts merge, everything else replaces).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import DdflowError

PRESETS = ("quick", "paper")
ENV_VAR = "DDFLOW_HPARAMS"
_ALLOWED_KEYS = {"inherit", "paper", "overrides", "quick", "quick_overrides", "source"}


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _matches(when: dict, dataset: str, ipc: int) -> bool:
    for key, value in when.items():
        allowed = value if isinstance(value, list) else [value]
        actual = {"dataset": dataset, "ipc": ipc}.get(key)
        if actual is None:
            raise DdflowError(f"hparams 'when' key {key!r} unknown; allowed: dataset, ipc")
        if actual not in allowed:
            return False
    return True


def hparams_dir(hp_dir: Path | str | None = None) -> Path:
    """The hyperparameter folder: `hp_dir` when given (the workflow always passes its workflow/hparams), else
    $DDFLOW_HPARAMS, else ./workflow/hparams (a checkout's root). The library ships no copy of its own, so an
    installed package reads the folder of the workflow that calls it."""
    if hp_dir:
        return Path(hp_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    local = Path("workflow") / "hparams"
    if local.is_dir():
        return local.resolve()
    raise DdflowError(f"no hyperparameter folder: pass --hparams-dir (the workflow/hparams folder of a ddflow "
                      f"checkout), set ${ENV_VAR}, or run from the checkout's root")


def load_file(method: str, hp_dir: Path | str | None = None) -> dict:
    path = hparams_dir(hp_dir) / f"{method}.yaml"
    if not path.exists():
        raise DdflowError(f"{path}: no hyperparameter file for method {method!r}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DdflowError(f"{path}: invalid YAML ({e})") from None
    unknown = set(doc) - _ALLOWED_KEYS
    if unknown:
        raise DdflowError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    return doc


def _lineage(method: str, hp_dir: Path | str | None) -> list[dict]:
    """The method's file and its `inherit` ancestors, root first."""
    docs, seen = [], set()
    while method is not None:
        if method in seen:
            raise DdflowError(f"hparams: inheritance cycle through {method!r}")
        seen.add(method)
        doc = load_file(method, hp_dir)
        docs.insert(0, doc)
        method = doc.get("inherit")
    return docs


def resolve(method: str, dataset: str, ipc: int, preset: str, hp_dir: Path | str | None = None) -> dict[str, Any]:
    """The hyperparameters of one cell (method x dataset x IPC) at one preset: the paper values and overrides of
    every ancestor then of the method itself, then (quick preset) the quick reductions in the same order."""
    if preset not in PRESETS:
        raise DdflowError(f"preset {preset!r} unknown; allowed: {', '.join(PRESETS)}")
    docs = _lineage(method, hp_dir)
    hp: dict[str, Any] = {}
    for doc in docs:
        hp = deep_merge(hp, doc.get("paper") or {})
        for rule in doc.get("overrides") or []:
            if _matches(rule.get("when", {}), dataset, ipc):
                hp = deep_merge(hp, rule.get("set") or {})
    if preset == "quick":
        for doc in docs:
            hp = _apply_quick(hp, doc, dataset, ipc)
    return hp


def _apply_quick(hp: dict, doc: dict, dataset: str, ipc: int) -> dict:
    hp = deep_merge(hp, doc.get("quick") or {})
    for rule in doc.get("quick_overrides") or []:
        if _matches(rule.get("when", {}), dataset, ipc):
            hp = deep_merge(hp, rule.get("set") or {})
    return hp
