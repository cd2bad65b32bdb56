"""Checks of the workflow config that need the library (names, IPC against class sizes), run at parse time so a
bad config fails before any job starts. The JSON schema (workflow/schemas) has already checked types and keys."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .data import DATASETS, class_counts, get_info
from .data.sources import as_labels
from .errors import DdflowError
from .hparams import PRESETS, check_file, check_values, hparams_file, paper_rule, resolve
from .methods import REGISTRY
from .protocols.cell import load_protocols
from .report.tables import TABLE_KINDS, load_spec

WHOLE = "whole"         # ddflow.stages.whole.METHOD: the table rows' id of the whole-dataset bound
GRID_KEYS = ("datasets", "methods", "ipcs", "seeds", "tables", "figures")
FIGURES = ("dream_fig1",)


def _scalar(v: Any) -> Any:
    """A command-line string as YAML would read it (null, true/false, an integer, a number), else unchanged."""
    if not isinstance(v, str):
        return v
    if v in ("null", "None", "~"):
        return None
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if re.fullmatch(r"[-+]?\d+", v):
        return int(v)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", v):
        return float(v)
    return v


_IMPORT_SCALARS = ("ipc", "seed", "lr", "normalize_as")


def coerce_cli_types(config: dict[str, Any]) -> dict[str, Any]:
    """`--config 'ipcs=[1,10]'` arrives as strings (Snakemake parses nested values with YAML's BaseLoader): turn
    integer strings in ipcs/seeds (top level, each grid and its method_ipcs) and in imports entries (ipc, seed, a
    numeric lr, a null normalize_as) into numbers and 'null' into None, in place, before the schema sees them. A
    `grid` that is not a mapping (`--config grid=null`) is a clear error: the presets' grids are required."""
    def ints(v):
        if isinstance(v, list):
            return [int(x) if isinstance(x, str) and x.lstrip("-").isdigit() else x for x in v]
        return v

    for key in GRID_KEYS + ("hparams_dir", "imports"):
        if config.get(key) in ("null", "None", "~"):
            config[key] = None
    for key in ("ipcs", "seeds"):
        config[key] = ints(config.get(key))
    if isinstance(config.get("paper_rule"), str) and config["paper_rule"].lower() in ("true", "false", "auto"):
        config["paper_rule"] = {"true": True, "false": False}.get(config["paper_rule"].lower(), "auto")
    if "grid" in config and not isinstance(config["grid"], dict):
        raise DdflowError(f"config key 'grid' = {config['grid']!r}: the presets' grids are required (grid.quick, "
                          f"grid.paper, as in config.yaml); to choose what runs, set datasets, methods, ipcs, seeds "
                          f"or tables instead")
    for grid in (config.get("grid") or {}).values():
        if isinstance(grid, dict):
            for key in ("ipcs", "seeds"):
                if key in grid:
                    grid[key] = ints(grid[key])
            if isinstance(grid.get("method_ipcs"), dict):
                grid["method_ipcs"] = {m: ints(v) for m, v in grid["method_ipcs"].items()}
    for entry in (config.get("imports") or {}).values() if isinstance(config.get("imports"), dict) else []:
        if isinstance(entry, dict):
            for key in _IMPORT_SCALARS:
                if key in entry:
                    entry[key] = _scalar(entry[key])
    return config


def workdir_relative(path: str | Path) -> Path:
    """`path` relative to the working directory (where Snakemake runs and its jobs start), for the workflow's
    parameters: they hold no absolute path, so a finished run folder copied or moved elsewhere finds its jobs'
    parameters unchanged and reruns nothing."""
    return Path(os.path.relpath(Path(path).expanduser().resolve(), Path.cwd()))


def effective_grid(config: dict[str, Any]) -> dict[str, list]:
    """Top-level datasets/methods/ipcs/seeds/tables when set, else the preset's grid from config['grid']."""
    preset = config.get("preset")
    if preset not in PRESETS:
        raise DdflowError(f"config key 'preset' = {preset!r}; allowed: {', '.join(PRESETS)}")
    base = (config.get("grid") or {}).get(preset) or {}
    grid = {}
    for key in GRID_KEYS:
        value = config.get(key)
        grid[key] = list(value) if value is not None else list(base.get(key) or [])
    # a preset may run some methods at fewer IPCs (e.g. a costly method at IPC 1 only in the default run); IPCs
    # set on the command line apply to every method
    grid["method_ipcs"] = {} if config.get("ipcs") is not None else dict(base.get("method_ipcs") or {})
    return grid


def paper_rule_on(config: dict[str, Any]) -> bool:
    """Whether the run evaluates the snapshot candidates at the paper's cadence (hparams `paper_rule`) that the rows
    "ours (paper's rule)" and "ours (validation rule)" choose from: config `paper_rule` true / false, or auto (the
    default) = at the quick preset only (its cadence is a few cheap evaluations; at the paper preset it multiplies a
    cell's evaluations by up to 50)."""
    value = config.get("paper_rule", "auto")
    if value in (None, "auto"):
        return config.get("preset") == "quick"
    if not isinstance(value, bool):
        raise DdflowError(f"config key 'paper_rule' = {value!r}; allowed: true, false, auto")
    return value


def method_ipcs(grid: dict[str, Any], method: str) -> list[int]:
    """The IPCs the grid runs `method` at: the grid's IPCs, restricted by its `method_ipcs` entry when it has one."""
    only = grid.get("method_ipcs", {}).get(method)
    return [i for i in grid["ipcs"] if only is None or i in only]


def table_rows(spec_path: str | Path) -> list[tuple[str, str]]:
    """(method, protocol) of every table row that names a method."""
    return [(r["method"], r.get("protocol", "dc")) for r in load_spec(spec_path)["rows"] if r.get("method")]


def _min_class_count(dataset: str, config: dict[str, Any]) -> tuple[int | None, str]:
    src = (config.get("data") or {}).get(dataset) or {}
    if src.get("npz"):
        path = Path(src["npz"]).expanduser()
        if not path.exists():
            raise DdflowError(f"config data.{dataset}.npz: {path} does not exist")
        try:
            with np.load(path) as z:
                missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
                y, y_test = (None, None) if missing else (z["y_train"], z["y_test"])
        except Exception as e:
            raise DdflowError(f"config data.{dataset}.npz: cannot read y_train from {path} ({e})") from None
        if missing:
            raise DdflowError(f"config data.{dataset}.npz: {path} lacks array(s) {', '.join(missing)}; a dataset "
                              f"npz holds x_train, y_train, x_test, y_test")
        as_labels(y_test, get_info(dataset).classes, f"config data.{dataset}.npz: {path}", "y_test")
        y = as_labels(y, get_info(dataset).classes, f"config data.{dataset}.npz: {path}", "y_train")
        counts = class_counts(y, get_info(dataset).classes)
        return int(counts.min()), str(path)
    return get_info(dataset).min_train_per_class, f"the standard {dataset} training split"


def check(config: dict[str, Any], hparams_dir: str | Path, papers_dir: str | Path) -> dict[str, list]:
    grid = effective_grid(config)
    for key in ("datasets", "methods", "ipcs", "seeds"):
        if not grid[key]:
            raise DdflowError(f"config key {key!r} is empty (and the {config['preset']} grid gives none)")
    for d in grid["datasets"]:
        if d not in DATASETS:
            raise DdflowError(f"config key 'datasets': unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    for d in (config.get("data") or {}):
        if d not in DATASETS:
            raise DdflowError(f"config key 'data': unknown dataset {d!r}; known: {', '.join(DATASETS)}")
    for m in grid["methods"]:
        if m in (config.get("imports") or {}):
            raise DdflowError(f"config key 'methods': {m!r} is an imported set; `imports` evaluates and tables it")
        if m not in REGISTRY:
            raise DdflowError(f"config key 'methods': unknown method {m!r}; implemented: {', '.join(sorted(REGISTRY))}")
        check_file(m, hparams_dir)
        for d in grid["datasets"]:
            for i in method_ipcs(grid, m):
                where = f"{hparams_file(m, hparams_dir)} resolved for {d}, IPC {i}, preset {config['preset']}"
                REGISTRY[m].check_hparams(resolve(m, d, int(i), config["preset"], hparams_dir), where)
                paper_rule(m, d, int(i), config["preset"], hparams_dir)  # its shape, checked whether used or not
    for name in ("experts", "featnet", "analyses", "validation", WHOLE):
        if hparams_file(name, hparams_dir).exists():
            check_file(name, hparams_dir)
            for d in grid["datasets"]:
                check_values(resolve(name, d, 0, config["preset"], hparams_dir),
                             f"{hparams_file(name, hparams_dir)} resolved for {d}, preset {config['preset']}")
    load_protocols(hparams_dir)
    for m, ipcs in grid["method_ipcs"].items():   # entries for methods not run (e.g. --config methods=...) are unused
        if m in grid["methods"] and not set(ipcs) & set(grid["ipcs"]):
            raise DdflowError(f"config key 'grid.{config['preset']}.method_ipcs.{m}': IPCs {ipcs} share no IPC with "
                              f"the grid's ipcs {grid['ipcs']}, so {m!r} would not run")
    for f in grid["figures"]:
        if f not in FIGURES:
            raise DdflowError(f"config key 'figures': unknown figure {f!r}; known: {', '.join(FIGURES)}")
    for t in grid["tables"]:
        path = Path(papers_dir) / f"{t}.yaml"
        if not path.exists() or load_spec(path)["kind"] not in TABLE_KINDS:
            known = sorted(p.stem for p in Path(papers_dir).glob("*.yaml") if load_spec(p)["kind"] in TABLE_KINDS)
            raise DdflowError(f"config key 'tables': unknown table {t!r}; known: {', '.join(known)}")
        for method, protocol in table_rows(path):
            if method == WHOLE:  # the whole-dataset bound (ddflow.stages.whole): a cell per dataset, not a method
                continue
            if method not in REGISTRY:  # a row without `method` is a paper-only row; a named one must exist
                raise DdflowError(f"{path}: a row names method {method!r}, which is not implemented; known: "
                                  f"{', '.join(sorted(REGISTRY))} (leave `method` out for a paper-only row)")
            if method in grid["methods"] and protocol not in REGISTRY[method].protocols:
                raise DdflowError(f"table {t}: protocol {protocol!r} does not fit method {method!r} "
                                  f"(fits: {', '.join(REGISTRY[method].protocols)})")
    for d in grid["datasets"]:
        smallest, where = _min_class_count(d, config)
        too_big = [i for i in grid["ipcs"] if smallest is not None and i > smallest]
        if too_big:
            raise DdflowError(f"config key 'ipcs': IPC {too_big} larger than the smallest class of {d} "
                              f"({smallest} images in {where})")
    return grid


def check_imports(config: dict[str, Any], grid: dict[str, list], hparams_dir: str | Path,
                  papers_dir: str | Path) -> dict[str, Any]:
    """config['imports'] checked (ddflow.interop.imports.check_entry: names, files, protocols, settings). An entry's
    `tables` name the configured tables of kind cells it joins; by default the configured accuracy tables that take
    imported sets (spec `imports: true`: general accuracy tables, not one paper's claims or analyses) when its dataset
    and IPC are among the configured ones (the tables' columns)."""
    from .interop.imports import check_imports as check_entries
    imports = check_entries(config.get("imports"), config["preset"], hparams_dir)
    specs = {t: load_spec(Path(papers_dir) / f"{t}.yaml") for t in grid["tables"]}
    cell_tables = [t for t, s in specs.items() if s["kind"] == "cells"]
    for t, s in specs.items():
        if not isinstance(s.get("imports", False), bool):
            raise DdflowError(f"{Path(papers_dir) / t}.yaml: imports = {s['imports']!r}; true or false (whether "
                              "imported sets join this table by default)")
    for name, entry in imports.items():
        if entry.tables is None:
            shown = entry.dataset in grid["datasets"] and entry.ipc in grid["ipcs"]
            entry.tables = [t for t in cell_tables if specs[t].get("imports") is True] if shown else []
        for t in entry.tables:
            if t not in cell_tables:
                raise DdflowError(f"config imports.{name}.tables: {t!r} is not a configured table of kind cells "
                                  f"(configured: {', '.join(cell_tables) or 'none'})")
    return imports


_SMALLEST: dict[tuple[str, str], tuple[int | None, str]] = {}


def check_target(wildcards: Mapping[str, str], config: dict[str, Any], imports: Mapping[str, Any] = ()) -> None:
    """The wildcards of a job the DAG is about to hold (a target path the user named, or one a rule asks for):
    a known dataset, an IPC >= 1 within the dataset's smallest class, a method that is implemented or imported, and
    a protocol that fits it. workflow/rules/common.smk calls this from the input functions, so `snakemake -n
    results/eval/dc/dm/mnist/ipc0/s0.json` is refused when the DAG is built instead of failing inside the job."""
    from .protocols import PROTOCOLS
    from .protocols.regimes import VARIANT_IDS
    from .protocols.xarch import XARCH
    shown = ", ".join(f"{k}={v}" for k, v in dict(wildcards).items())
    dataset, ipc, method = wildcards.get("dataset"), wildcards.get("ipc"), wildcards.get("method")
    if dataset is not None and dataset not in DATASETS:
        raise DdflowError(f"target with {shown}: unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if ipc is not None:
        if int(ipc) < 1:
            raise DdflowError(f"target with {shown}: IPC {int(ipc)}; an IPC is a whole number >= 1")
        if dataset is not None:
            npz = ((config.get("data") or {}).get(dataset) or {}).get("npz")
            key = (dataset, str(npz))
            if key not in _SMALLEST:  # read once per dataset, not once per job of the DAG
                _SMALLEST[key] = _min_class_count(dataset, config)
            smallest, where = _SMALLEST[key]
            if smallest is not None and int(ipc) > smallest:
                raise DdflowError(f"target with {shown}: IPC {int(ipc)} larger than the smallest class of {dataset} "
                                  f"({smallest} images in {where})")
    if method is not None and method not in REGISTRY and method not in imports:
        raise DdflowError(f"target with {shown}: unknown method {method!r}; implemented: {', '.join(sorted(REGISTRY))}"
                          + (f"; imported: {', '.join(imports)}" if imports else ""))
    protocol = wildcards.get("protocol")
    if protocol is not None and method is not None:
        if protocol not in PROTOCOLS:
            raise DdflowError(f"target with {shown}: unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        fits = imports[method].protocols if method in imports else REGISTRY[method].protocols
        base = VARIANT_IDS.get(protocol, XARCH.get(protocol, ("",)))[0]
        if protocol not in fits and base not in fits:
            raise DdflowError(f"target with {shown}: protocol {protocol!r} does not fit {method!r} (fits: "
                              f"{', '.join(fits)}, their cross-architecture protocols and label / augmentation "
                              "variants)")
