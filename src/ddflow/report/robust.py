"""Robust scores (DD-Ranking, Li et al. 2025): the label-robust score (LRS) and the augmentation-robust score (ARS)
of every distilled cell of a grid, from ddflow's own evaluation cells.

Definitions (DD-Ranking README "Label-Robust Score" / "Augmentation-Robust Score"; code ddranking/metrics/
soft_label.py compute_metrics lines 561-564, aug_robust.py lines 577-580), accuracies as fractions in [0, 1]:

    HLR = acc(real, hard) - acc(syn, hard)             hard-label recovery (lower is better)
    IOR = acc(syn, any) - acc(random, any)             improvement over a same-size random subset, same protocol
    alpha = w IOR - (1 - w) HLR,   LRS = (e^alpha - e^-1) / (e - e^-1)
    beta = g (acc(syn, aug) - acc(random, aug)) + (1 - g) (acc(syn, no aug) - acc(random, no aug)),
    ARS = (e^beta - e^-1) / (e - e^-1)

alpha and beta lie in [-1, 1] only for fractions, where the normalisation maps them onto [0, 1]. DD-Ranking's code
feeds its accuracies in percent (its `validate` returns top-1 in %), so alpha spans [-100, 100] and the score
saturates: 0 below about -3 %, e^alpha ~ 10^43 at +100 %; `ddranking_code_lrs` / `_ars` in the CSV give that value
for comparison. The weights w (label_weight), g (augmentation_weight) are settings
(workflow/hparams/stages/analyses.yaml robust_scores).

Cells: acc(syn, any) is the method's cell under its own protocol; acc(random, any) the `random` method's cell
under the same protocol, dataset and IPC; acc(real, hard) the whole-dataset cell (ddflow.stages.whole). A set with
hard labels is its own hard-label evaluation; a set with learned labels needs a cell under the hard-label variant of
its protocol; ARS needs the protocol with and without augmentation: the `-aug` and `-noaug` variant cells when both
exist (the same settings on both sides), else the protocol's own cell for the side it is. Variant protocol names are
templates (settings: `hard_label_protocol`, `aug_protocol`, `no_aug_protocol`; the variants themselves:
ddflow.protocols.regimes); a missing cell prints "—". The Protocol column prints the label regime beside the name.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DdflowError
from ..io import read_json
from .formats import html_page, latex_table
from .tables import DASH, pool_cells, write_outputs

WHOLE = "whole"
RANDOM = "random"
DEFAULTS = {"label_weight": 0.5, "augmentation_weight": 0.5, "hard_label_protocol": "{protocol}-hard",
            "aug_protocol": "{protocol}-aug", "no_aug_protocol": "{protocol}-noaug", "variant_methods": None,
            "variant_ipcs": None}


def normalise(x: float) -> float:
    """DD-Ranking's map of a weighted difference in [-1, 1] onto [0, 1]: (e^x - e^-1) / (e - e^-1)."""
    return (math.exp(x) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def check_settings(settings: dict[str, Any], where: str = "robust_scores") -> dict[str, Any]:
    """The settings with defaults filled in; an unknown key, a weight outside [0, 1] or a template without
    `{protocol}` is an error naming the key."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise DdflowError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    for key in ("label_weight", "augmentation_weight"):
        _check_weight(key, s[key], where)
    for key in ("hard_label_protocol", "aug_protocol", "no_aug_protocol"):
        if not isinstance(s[key], str) or "{protocol}" not in s[key] or s[key] == "{protocol}":
            raise DdflowError(f"{where}.{key} = {s[key]!r}; expected a protocol name template containing "
                              "'{protocol}' and more (e.g. '{protocol}-noaug')")
    for key in ("variant_methods", "variant_ipcs"):
        v = s[key]
        if v is not None and not (isinstance(v, list) and all(isinstance(x, (str if key == "variant_methods" else int))
                                                               and not isinstance(x, bool) for x in v)):
            raise DdflowError(f"{where}.{key} = {v!r}; expected null (all) or a list of "
                              f"{'method ids' if key == 'variant_methods' else 'IPCs'}")
    return s


def _check_weight(name: str, w: Any, where: str = "robust_scores") -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
        raise DdflowError(f"{where}.{name} = {w!r}; a weight must be a number in [0, 1]")
    w = float(w)
    return w


def label_robust(real_hard: float, syn_hard: float, syn_any: float, rdm_any: float, w: float = 0.5) -> dict:
    """HLR, IOR, alpha and LRS from accuracies given as fractions in [0, 1]."""
    for v in (real_hard, syn_hard, syn_any, rdm_any):
        if not 0.0 <= v <= 1.0:
            raise DdflowError(f"accuracy {v} is not a fraction in [0, 1] (a percentage?)")
    w = _check_weight("label_weight", w)
    hlr, ior = real_hard - syn_hard, syn_any - rdm_any
    alpha = w * ior - (1 - w) * hlr
    return {"hlr": hlr, "ior": ior, "alpha": alpha, "lrs": normalise(alpha)}


def augmentation_robust(syn_aug: float, rdm_aug: float, syn_naug: float, rdm_naug: float, g: float = 0.5) -> dict:
    """ARS and beta from accuracies given as fractions in [0, 1]."""
    for v in (syn_aug, rdm_aug, syn_naug, rdm_naug):
        if not 0.0 <= v <= 1.0:
            raise DdflowError(f"accuracy {v} is not a fraction in [0, 1] (a percentage?)")
    g = _check_weight("augmentation_weight", g)
    beta = g * (syn_aug - rdm_aug) + (1 - g) * (syn_naug - rdm_naug)
    return {"beta": beta, "ars": normalise(beta)}


def _percent_score(x: float) -> float:
    """The normalisation as DD-Ranking's code applies it, to a difference in percent (may overflow to inf)."""
    try:
        return normalise(x)
    except OverflowError:
        return math.inf


def augmented(settings: dict[str, Any]) -> bool:
    """Whether a protocol's settings train with augmentation: `augment` other than none/false, or a mixup."""
    if "augment" in settings:
        return settings["augment"] not in (None, False, "none", "")
    return bool(settings.get("mixup") or settings.get("strategy"))


def _augmentation_by_group(cell_paths: list[str | Path]) -> dict[tuple, bool]:
    out = {}
    for p in cell_paths:
        c = read_json(p, "evaluation cell")
        out[(c["protocol"], c["method"], c["dataset"], int(c["ipc"]))] = augmented(c.get("settings") or {})
    return out


def build_robust(cell_paths: list[str | Path], protocols: dict[str, str], soft: dict[tuple[str, str, int], bool],
                 settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per (method, dataset, IPC) of `protocols` (method -> its protocol) that has a cell. `soft`:
    (method, dataset, ipc) -> whether the set has learned labels. Accuracies in the frame are fractions."""
    s = check_settings(settings or {})
    w, g = float(s["label_weight"]), float(s["augmentation_weight"])
    pooled = pool_cells(cell_paths)
    aug = _augmentation_by_group(cell_paths)

    def acc(protocol, method, ds, ipc):
        v = pooled.get((protocol, method, ds, ipc))
        return None if v is None else v["mean"] / 100.0

    rows = []
    for (p, m, ds, ipc) in sorted(pooled):
        if protocols.get(m) != p or m == WHOLE:
            continue
        hard_p = s["hard_label_protocol"].format(protocol=p)
        syn_any, rdm_any = acc(p, m, ds, ipc), acc(p, RANDOM, ds, ipc)
        is_soft = bool(soft.get((m, ds, ipc), False))
        syn_hard = acc(hard_p, m, ds, ipc) if is_soft else syn_any
        real = pooled.get(("dc", WHOLE, ds, 0))
        real_hard = None if real is None else real["mean"] / 100.0
        aug_p, naug_p = s["aug_protocol"].format(protocol=p), s["no_aug_protocol"].format(protocol=p)
        pa, pn = (p, naug_p) if aug[(p, m, ds, ipc)] else (aug_p, p)
        if all(acc(q, n, ds, ipc) is not None for q in (aug_p, naug_p) for n in (m, RANDOM)):
            pa, pn = aug_p, naug_p   # both variants made: the same settings on both sides (the quick preset's)
        syn_aug, rdm_aug, syn_naug, rdm_naug = (acc(pa, m, ds, ipc), acc(pa, RANDOM, ds, ipc),
                                                acc(pn, m, ds, ipc), acc(pn, RANDOM, ds, ipc))
        needed = {f"{hard_p if is_soft else p}/{m}": syn_hard, f"whole/{ds}": real_hard, f"{p}/{RANDOM}": rdm_any,
                  f"{pa}/{m}": syn_aug, f"{pa}/{RANDOM}": rdm_aug, f"{pn}/{m}": syn_naug, f"{pn}/{RANDOM}": rdm_naug}
        row = {"method": m, "protocol": p, "dataset": ds, "ipc": ipc, "labels": "learned" if is_soft else "hard",
               "real_hard": real_hard, "syn_hard": syn_hard, "syn_any": syn_any, "random_any": rdm_any,
               "syn_aug": syn_aug, "random_aug": rdm_aug, "syn_no_aug": syn_naug, "random_no_aug": rdm_naug,
               "hlr": None, "ior": None, "lrs": None, "ars": None, "ddranking_code_lrs": None,
               "ddranking_code_ars": None, "label_weight": w, "augmentation_weight": g,
               "missing": ", ".join(_missing(needed))}
        if rdm_any is not None:
            row["ior"] = syn_any - rdm_any
        if syn_hard is not None and real_hard is not None:
            row["hlr"] = real_hard - syn_hard
        if row["hlr"] is not None and row["ior"] is not None:
            row["lrs"] = label_robust(real_hard, syn_hard, syn_any, rdm_any, w)["lrs"]
            row["ddranking_code_lrs"] = _percent_score(100 * (w * row["ior"] - (1 - w) * row["hlr"]))
        if None not in (syn_aug, rdm_aug, syn_naug, rdm_naug):
            row["ars"] = augmentation_robust(syn_aug, rdm_aug, syn_naug, rdm_naug, g)["ars"]
            row["ddranking_code_ars"] = _percent_score(
                100 * (g * (syn_aug - rdm_aug) + (1 - g) * (syn_naug - rdm_naug)))
        rows.append(row)
    return pd.DataFrame.from_records(rows, columns=list(_COLUMNS))


_COLUMNS = ("method", "protocol", "dataset", "ipc", "labels", "real_hard", "syn_hard", "syn_any", "random_any",
            "syn_aug", "random_aug", "syn_no_aug", "random_no_aug", "hlr", "ior", "lrs", "ars",
            "ddranking_code_lrs", "ddranking_code_ars", "label_weight", "augmentation_weight", "missing")


def _missing(needed: dict[str, float | None]) -> list[str]:
    return [name for name, v in needed.items() if v is None]


def _f(v, digits=3, signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def robust_view(df: pd.DataFrame) -> pd.DataFrame:
    """The printed table: one row per method x dataset x IPC, its protocol with its label regime ("dc · hard",
    "frepo · learned": ddflow.protocols.regimes), fractions to three places, "—" where a cell is missing."""
    out = pd.DataFrame({
        "Method": df.method, "Protocol": [f"{p} · {r}" for p, r in zip(df.protocol, df.labels)],
        "Dataset": df.dataset, "IPC": df.ipc.astype(str),
        "HLR": [_f(v, signed=True) for v in df.hlr], "IOR": [_f(v, signed=True) for v in df.ior],
        "LRS": [_f(v) for v in df.lrs], "ARS": [_f(v) for v in df.ars]})
    return out.set_index("Method")


def robust_notes(df: pd.DataFrame) -> list[str]:
    w = df.label_weight.iloc[0] if len(df) else DEFAULTS["label_weight"]
    g = df.augmentation_weight.iloc[0] if len(df) else DEFAULTS["augmentation_weight"]
    lines = [
        "DD-Ranking's scores from ddflow's own cells, accuracies as fractions: HLR = acc(whole training split, hard "
        "labels) − acc(set, hard labels); IOR = acc(set) − acc(Random, same IPC, seed and protocol); "
        f"LRS = (e^α − e^−1)/(e − e^−1) with α = {w:g}·IOR − {1 - w:g}·HLR; ARS the same map of "
        f"β = {g:g}·(set − Random, with augmentation) + {1 - g:g}·(set − Random, without).",
        "Differences from DD-Ranking's code: its code feeds percentages into a map defined on [−1, 1] (α up to ±100: "
        "the score is ~0 below −3 points and overflows above; the CSV's ddranking_code_* columns give that value); "
        "it chooses the evaluation lr and epoch on the test split (ours: the protocol's lr, final epoch); it scores "
        "each evaluation run and averages the scores (ours: the score of the means pooled over seeds × models); "
        "its random subset is redrawn per run and evaluated with a teacher's soft labels in soft mode (ours: the "
        "Random method's cells under the method's protocol).",
        f"{DASH}: a needed cell is missing; the CSV's `missing` column names it (protocol/method). LRS needs the "
        "whole-dataset cell, a hard-label cell of a learned-label set (`{protocol}-hard`: its images with their "
        "class index) and Random under the method's protocol; ARS the `{protocol}-aug` / `{protocol}-noaug` cells of "
        "the set and of Random (both when made, else the protocol's own cell for its side). The run makes them for "
        "robust_scores' variant_methods / variant_ipcs (workflow/hparams/stages/analyses.yaml; the quick preset: "
        "fewer models and epochs, stages/regimes.yaml cell_settings).",
    ]
    return lines


def write_robust(df: pd.DataFrame, out_prefix: str | Path, title: str = "Robust scores (DD-Ranking's LRS and ARS)"
                 ) -> None:
    view, lines = robust_view(df), robust_notes(df)
    body = view.to_markdown(disable_numparse=True) if len(view) else "(no cells)"   # keeps the signs: +0.000
    md = [f"# {title}", "", body, ""] + [f"- {n}" for n in lines]
    tex = latex_table(view, title, "tab:robust_scores", lines)
    write_outputs(out_prefix, df, md, tex, html=html_page(view, title, lines))
