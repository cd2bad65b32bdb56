"""Hyperparameters as data: workflow/hparams/methods/<method>.yaml (one file per method or method family) and
workflow/hparams/stages/<name>.yaml (the settings of the other stages and the evaluation protocols: experts,
featnet, whole, protocols, analyses, validation, regimes). hparams_file(name) is where a name's file lives: the stage
names (STAGE_FILES) in stages/, every other name in methods/; a variant declared in its family's file (`variants:`)
has no file of its own.

File layout (every value carries a comment naming its source in the YAML itself):

    inherit: other-method      # optional: start from that file's resolved values (method variants)
    paper: {...}               # the paper / official-code defaults
    overrides:                 # dataset x IPC exceptions, applied in order, paper scale
      - when: {dataset: [mnist, mnist5k], ipc: [1]}
        set: {...}
    quick: {...}               # the quick preset's reductions (applied after the overrides)
    quick_overrides: [...]     # same form as overrides, quick preset only
    variants:                  # optional, a family's file only: variant id -> its fixed options, read by the method
      frepo-drop-hard10: {...} # registry (a variant resolves as `inherit: <family>`, its own options are no hparams)

Resolution = paper <- matching overrides <- (quick <- matching quick_overrides, if preset is quick), merged
key by key (nested dicts merge, everything else replaces).
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

from .errors import DdflowError
from .io import read_yaml_mapping

PRESETS = ("quick", "paper")
ENV_VAR = "DDFLOW_HPARAMS"
_ALLOWED_KEYS = {"inherit", "paper", "overrides", "quick", "quick_overrides", "source", "variants"}
METHODS, STAGES = "methods", "stages"   # the folder's two subfolders
STAGE_FILES = ("experts", "featnet", "whole", "protocols", "analyses", "validation", "regimes")


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


PACKAGED = Path(__file__).resolve().parent / "_hparams"  # workflow/hparams, shipped with the package (a link here)


def hparams_dir(hp_dir: Path | str | None = None) -> Path:
    """The hyperparameter folder: `hp_dir` when given (the workflow always passes its workflow/hparams), else
    $DDFLOW_HPARAMS, else ./workflow/hparams (run from a checkout's root: that checkout's files), else the copy shipped
    with the package (src/ddflow/_hparams, a link to workflow/hparams: an installed ddflow works from anywhere)."""
    if hp_dir:
        return Path(hp_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    local = Path("workflow") / "hparams"
    if local.is_dir():
        return local.resolve()
    if (PACKAGED / STAGES / "protocols.yaml").is_file():
        return PACKAGED
    raise DdflowError(f"no hyperparameter folder: pass --hparams-dir (the workflow/hparams folder of a ddflow "
                      f"checkout) or set ${ENV_VAR}; this install lacks its own copy ({PACKAGED})")


def subfolder(name: str) -> str:
    """The subfolder of a name's file: stages/ for the stage and protocol settings, methods/ for the rest."""
    return STAGES if name in STAGE_FILES else METHODS


def hparams_file(name: str, hp_dir: Path | str | None = None) -> Path:
    """The file of a method's or a stage's hyperparameters: <folder>/<subfolder(name)>/<name>.yaml (a variant:
    its family's file, variant_family)."""
    folder = hparams_dir(hp_dir)
    own = folder / subfolder(name) / f"{name}.yaml"
    family = None if own.is_file() or subfolder(name) == STAGES else variant_family(name, folder)
    return folder / METHODS / f"{family}.yaml" if family else own


def variants(family: str, hp_dir: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """The variants a family's file declares (`variants:`): {variant id: its fixed options}."""
    path = hparams_dir(hp_dir) / METHODS / f"{family}.yaml"
    out = _read(path, family).get("variants") or {}
    if not isinstance(out, dict) or not all(isinstance(v, dict) for v in out.values()):
        raise DdflowError(f"{path}: variants must map each variant id to a mapping of its fixed options")
    return out


def variant_family(name: str, hp_dir: Path | str | None = None) -> str | None:
    """The family whose file declares `name` among its variants, or None."""
    folder = hparams_dir(hp_dir) / METHODS
    for path in sorted(folder.glob("*.yaml")):
        if name in (_read(path, path.stem).get("variants") or {}):
            return path.stem
    return None


def _read(path: Path, name: str) -> dict:
    doc = read_yaml_mapping(path, f"no hyperparameter file for {name!r} (methods/<method>.yaml, or a stage's "
                                  f"stages/<name>.yaml: {', '.join(STAGE_FILES)})",
                            "an hparams file is a mapping (paper:, overrides:, quick:, ...)")
    unknown = set(doc) - _ALLOWED_KEYS
    if unknown:
        raise DdflowError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    return doc


def load_file(method: str, hp_dir: Path | str | None = None) -> dict:
    """A name's file; a variant's is `inherit: <family>` (its family's file declares it)."""
    path = hparams_file(method, hp_dir)
    if path.stem != method:
        return {"inherit": path.stem}
    return _read(path, method)


def _named_lineage(method: str, hp_dir: Path | str | None) -> list[tuple[str, dict]]:
    """(name, file) of the method and its `inherit` ancestors, root first."""
    chain, seen = [], set()
    while method is not None:
        if method in seen:
            raise DdflowError(f"hparams: inheritance cycle through {method!r}")
        seen.add(method)
        doc = load_file(method, hp_dir)
        chain.insert(0, (method, doc))
        method = doc.get("inherit")
    return chain


def _lineage(method: str, hp_dir: Path | str | None) -> list[dict]:
    """The method's file and its `inherit` ancestors, root first."""
    return [doc for _, doc in _named_lineage(method, hp_dir)]


def resolve(method: str, dataset: str, ipc: int, preset: str, hp_dir: Path | str | None = None) -> dict[str, Any]:
    """The hyperparameters of one cell (method x dataset x IPC) at one preset: the paper values and overrides of
    every ancestor then of the method itself, then (quick preset) the quick reductions in the same order."""
    hp = _resolve(method, dataset, ipc, preset, hp_dir)
    hp.pop(PAPER_RULE, None)  # not a distillation hyperparameter: read by paper_rule() only (records stay as they were)
    return hp


def _resolve(method: str, dataset: str, ipc: int, preset: str, hp_dir: Path | str | None) -> dict[str, Any]:
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


# ---- the papers' selection rule (config `paper_rule`) -----------------------------------------------
PAPER_RULE = "paper_rule"
_RULE_KEYS = {"every", "fractions", "models"}


def paper_rule(method: str, dataset: str, ipc: int, preset: str,
               hp_dir: Path | str | None = None) -> dict[str, Any] | None:
    """The paper's periodic test evaluations of one cell (the `paper_rule` section, resolved like the other keys:
    paper <- overrides <- quick): {every: N} (every N iterations from 0) or {fractions: [...]} (at those fractions
    of the run), with `models` per evaluation; None for a method whose paper reports the final set."""
    out = _resolve(method, dataset, ipc, preset, hp_dir).get(PAPER_RULE) or None
    if out is not None:
        check_paper_rule(out, f"{hparams_file(method, hp_dir)} resolved for {dataset}, IPC {ipc}, preset {preset}")
    return out


def check_paper_rule(rule: Any, where: str) -> None:
    """A resolved `paper_rule`: a mapping with `models` >= 1 and exactly one of `every` (>= 1) or `fractions`
    (numbers in [0, 1)); errors name the cell."""
    if not isinstance(rule, dict):
        raise DdflowError(f"{where}: paper_rule must be a mapping {{every | fractions, models}}, got {rule!r}")
    unknown = set(rule) - _RULE_KEYS
    if unknown:
        raise DdflowError(f"{where}: paper_rule has unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    models = rule.get("models")
    if isinstance(models, bool) or not isinstance(models, int) or models < 1:
        raise DdflowError(f"{where}: paper_rule.models = {models!r}; expected a whole number >= 1")
    every, fractions = rule.get("every"), rule.get("fractions")
    if (every is None) == (fractions is None):
        raise DdflowError(f"{where}: paper_rule needs exactly one of every (N iterations) or fractions (of the "
                          f"run), got every={every!r}, fractions={fractions!r}")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise DdflowError(f"{where}: paper_rule.every = {every!r}; expected a whole number >= 1")
    if fractions is not None and (not isinstance(fractions, list) or not fractions or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f < 1 for f in fractions)):
        raise DdflowError(f"{where}: paper_rule.fractions = {fractions!r}; expected a list of numbers in [0, 1)")


def _apply_quick(hp: dict, doc: dict, dataset: str, ipc: int) -> dict:
    hp = deep_merge(hp, doc.get("quick") or {})
    for rule in doc.get("quick_overrides") or []:
        if _matches(rule.get("when", {}), dataset, ipc):
            hp = deep_merge(hp, rule.get("set") or {})
    return hp


# ---- checks (config.check runs them before any job) ------------------------------------------------------------
def _kind(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "mapping"}.get(type(v), type(v).__name__)


def _sections(doc: dict, path: Path) -> list[tuple[str, dict]]:
    """(name, mapping) of every section of a file that sets values, checked for shape."""
    out = []
    for key in ("paper", "quick"):
        sec = doc.get(key) or {}
        if not isinstance(sec, dict):
            raise DdflowError(f"{path}: '{key}' must be a mapping of hyperparameters, got {type(sec).__name__}")
        out.append((key, sec))
    for key in ("overrides", "quick_overrides"):
        rules = doc.get(key) or []
        if not isinstance(rules, list):
            raise DdflowError(f"{path}: '{key}' must be a list of {{when: ..., set: ...}} rules")
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or not isinstance(rule.get("set"), dict):
                raise DdflowError(f"{path}: {key}[{i}] must be a mapping with 'when' and a 'set' mapping")
            out.append((f"{key}[{i}].set", rule["set"]))
    return out


def check_file(method: str, hp_dir: Path | str | None = None) -> None:
    """Every key a section sets is a hyperparameter of the method (set in a `paper:` section of its lineage) and has
    the type of its paper value (null and 'auto' defaults take any type); errors name the file and the key."""
    lineage = _named_lineage(method, hp_dir)
    files = [hparams_file(name, hp_dir) for name, _ in lineage]
    sections = [(path, _sections(doc, path)) for path, (_, doc) in zip(files, lineage)]
    paper: dict[str, Any] = {}
    for _, doc in lineage:
        paper = deep_merge(paper, doc.get("paper") or {})
    for path, secs in sections:
        for section, values in secs:
            for key, value in values.items():
                if key not in paper:
                    raise DdflowError(f"{path}: {section}.{key} is not a hyperparameter of {method!r} (no paper "
                                      f"value); known: {', '.join(sorted(paper))}")
                want, got = _kind(paper[key]), _kind(value)
                if want and got and want != got and paper[key] != "auto":
                    raise DdflowError(f"{path}: {section}.{key} = {value!r} is a {got}; {method}'s {key} is a {want} "
                                      f"(paper value {paper[key]!r})")


_POSITIVE_INT = ("iterations", "models", "epochs", "steps", "batch", "inner_loops", "outer_loops", "experts", "block",
                 "pool", "t_m", "syn_steps", "expert_epochs", "max_start_epoch", "factor")
# What a setting may ask, at most: each bound is 20x or more the largest value any paper asks (FRePo's 500k
# iterations, DC's 1000 evaluation epochs, DM's 5000-image real batches, 20 models), so only a typo or a unit
# mistake reaches one; a run asking more would run for weeks or exhaust memory without a word.
MAX_COUNT = {"iterations": 10**7, "steps": 10**7, "epochs": 10**5, "expert_epochs": 10**5, "max_start_epoch": 10**5,
             "models": 1000, "experts": 10**4, "block": 10**4, "syn_steps": 10**4, "inner_loops": 10**5,
             "outer_loops": 10**5, "pool": 10**6, "t_m": 10**4, "factor": 64}
MAX_BATCH = 10**6      # images in one batch (ImageNet-1k's training split is 1.28M)
MAX_LR = 1e6           # MTT's pixel learning rates reach 1e4 (ImageNet subsets), HaBa's hallucinator lr 100
_UNIT = ("momentum", "cutmix_p", "mix_p", "p_flip", "dropout", "alpha", "lr_alpha")  # fractions in [0, 1]


def check_values(hp: dict[str, Any], where: str, inits: tuple[str, ...] | None = None, snapshots: bool = True) -> None:
    """Ranges of one resolved cell (the method's and each eval section's): every number finite (a NaN learning rate
    would distil a NaN set that evaluates at chance), counts whole numbers in [1, MAX_COUNT] (a negative
    `iterations` would write an undistilled "distilled" set, `models: 0` fail after a whole distillation,
    `iterations: 10**12` run until stopped), batch sizes in [1, MAX_BATCH], learning rates in (0, MAX_LR], weight
    decay >= 0, momenta and probabilities in [0, 1], `snapshots` within [0, iterations] (unless `snapshots` is
    False: the runner with overrides that shorten a run keeps the snapshots it reaches), and `init` one of `inits`
    (the method's initialisations, when given)."""
    def fail(name: str, v: Any, expected: str) -> None:
        raise DdflowError(f"{where}: {name} = {v!r}; expected {expected}")

    def walk(d: dict, prefix: str) -> None:
        for key, v in d.items():
            key = str(key)
            name = f"{prefix}{key}"
            if isinstance(v, dict):
                walk(v, f"{name}.")
                continue
            if isinstance(v, list):
                for i, x in enumerate(v):
                    if isinstance(x, float) and not math.isfinite(x):
                        fail(f"{name}[{i}]", x, "a finite number")
                continue
            if v is None or v == "auto" or isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                fail(name, v, "a finite number")
            batch = key.startswith("batch") or key.endswith("_batch")
            counted = key in _POSITIVE_INT or batch
            if counted:
                top = MAX_BATCH if batch else MAX_COUNT.get(key, 10**7)
                if not isinstance(v, int) or not 1 <= v <= top:
                    fail(name, v, f"a whole number >= 1 and <= {top:,}")
            if key.startswith("lr") and key not in ("lr_alpha", "lr_img_base_size"):
                if not isinstance(v, (int, float)) or not 0 < v <= MAX_LR:
                    fail(name, v, f"a learning rate > 0 and <= {MAX_LR:g}")
            if key == "weight_decay" and (not isinstance(v, (int, float)) or v < 0):
                fail(name, v, "a weight decay >= 0")
            if key in _UNIT and (not isinstance(v, (int, float)) or not 0 <= v <= 1):
                fail(name, v, "a number in [0, 1]")
    walk(hp, "")
    snaps, total = hp.get("snapshots"), hp.get("iterations")
    if snapshots and snaps and isinstance(total, int):
        beyond = [n for n in snaps if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= total]
        if beyond:
            fail("snapshots", snaps, f"iterations within the run, 0 to iterations = {total} (outside: {beyond})")
    if inits is not None and "init" in hp and hp["init"] not in inits:
        fail("init", hp["init"], f"one of {', '.join(inits)}")
