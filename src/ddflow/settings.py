"""What each stage job runs with, resolved once. The workflow resolves it at parse time (workflow/rules/common.smk)
and hands it to the job as `--settings` JSON, so what Snakemake hashes is what the job runs with; the tools (the
commands run by hand without --settings, the smoke command, benchmarks, tests) resolve it here too. The stage runners
(ddflow.stages) never resolve hyperparameters.

- distillation: distill_settings = {hparams: the method's resolved hyperparameters, snapshots: the iterations the
  runner writes a snapshot at (the hparams' `snapshots`, with the paper rule's evaluation iterations when asked)};
- evaluation: eval_settings = the protocol settings (ddflow.protocols.protocol_settings) of the method whose
  evaluation settings apply (settings_method), with the paper rule's model count when asked;
- the whole-dataset bound: whole_settings = protocols.yaml `dc` updated by the stage file whole.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import hparams as hparams_mod
from .methods import get_method
from .protocols import protocol_settings
from .protocols.cell import load_protocols, with_dsa_strategy

WHOLE = "whole"           # the table rows' method id of the whole-dataset bound (not a registered method)
WHOLE_PROTOCOL = "dc"     # the loop it trains with


def settings_method(method: str, eval_as: str | None = None) -> str:
    """The registered method whose evaluation settings apply to a set: an imported set's `eval_as` (its config
    entry's, or the record's extras), else the set's own method."""
    return eval_as or method


def rule_iterations(total: int, rule: dict[str, Any]) -> list[int]:
    """The iterations before the last at which the paper evaluates its set during distillation: every N from 0
    (MTT, DREAM, FRePo, ISA) or the given fractions of the run, floored (IDC's n_iter // 10, // 5, // 2); the
    last iteration is the final set, evaluated by its own cell."""
    if rule.get("every") is not None:
        return list(range(0, total, int(rule["every"])))
    return sorted({int(total * f) for f in rule["fractions"] if int(total * f) < total})


def snapshot_iterations(hp: dict[str, Any], rule: dict[str, Any] | None = None) -> list[int]:
    """The hparams' snapshot iterations that a run of hp['iterations'] iterations reaches, sorted; with a paper
    rule (hparams.paper_rule), its evaluation iterations too."""
    total = int(hp.get("iterations", 0))
    extra = rule_iterations(total, rule) if rule else []
    return sorted({int(n) for n in hp.get("snapshots") or [] if 0 <= int(n) <= total} | set(extra))


def distill_settings(method: str, dataset: str, ipc: int, preset: str, hp_dir: str | Path | None = None,
                     overrides: dict[str, Any] | None = None, paper_rule: bool = False) -> dict[str, Any]:
    """{hparams, snapshots} of one distillation cell, checked (Method.check_hparams). `overrides` are merged into the
    resolved hyperparameters (and recorded with them). Snapshots beyond the run are refused by the config check (the
    hparams files); a shortened run (a tool's overrides, a test's hparams folder) keeps the snapshots it reaches.
    `paper_rule` adds the iterations of the method's hparams `paper_rule` (the paper's periodic test evaluations)
    to the snapshots."""
    cls = get_method(method)
    hp = hparams_mod.resolve(method, dataset, ipc, preset, hp_dir)
    if overrides:
        hp = hparams_mod.deep_merge(hp, overrides)
    where = f"{hparams_mod.hparams_file(method, hp_dir)} resolved for {dataset}, IPC {ipc}, preset {preset}"
    cls.check_hparams(hp, where, snapshots=False)
    rule = hparams_mod.paper_rule(method, dataset, ipc, preset, hp_dir) if paper_rule else None
    return {"hparams": hp, "snapshots": snapshot_iterations(hp, rule)}


def eval_settings(method: str, dataset: str, ipc: int, preset: str, protocol: str, hp_dir: str | Path | None = None,
                  models: int | None = None) -> dict[str, Any]:
    """The protocol settings an evaluation of a `method` set runs with (`method` = settings_method's answer);
    `models` replaces their model count (the paper rule evaluates snapshots with the paper's count)."""
    settings = protocol_settings(method, dataset, ipc, preset, protocol, hp_dir)
    if models is not None:
        settings["models"] = int(models)
    return settings


def whole_settings(dataset: str, preset: str, hp_dir: str | Path | None = None) -> dict[str, Any]:
    """The whole-dataset bound's settings: protocols.yaml `dc` updated by whole.yaml (epochs, models, augmentation,
    net) at the preset, checked."""
    base = load_protocols(hp_dir)[WHOLE_PROTOCOL]
    hparams_mod.check_file(WHOLE, hp_dir)
    settings = hparams_mod.deep_merge(base, hparams_mod.resolve(WHOLE, dataset, 0, preset, hp_dir))
    hparams_mod.check_values(settings, f"{hparams_mod.hparams_file(WHOLE, hp_dir)} resolved for {dataset}, preset "
                                       f"{preset}")
    return with_dsa_strategy(settings, dataset)


def distill_cell(method: str, dataset: str, ipc: int, seed: int, preset: str, device, data_path: str | Path,
                 out: str | Path, hp_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 paper_rule: bool = False, **runner: Any):
    """A tool's one call for one distillation: its settings resolved (distill_settings), then the runner
    (ddflow.stages.distill.run, whose keywords `runner` passes on)."""
    from .stages.distill import run

    settings = distill_settings(method, dataset, ipc, preset, hp_dir, overrides, paper_rule)
    return run(method, dataset, ipc, seed, preset, settings, device, data_path, out, **runner)
