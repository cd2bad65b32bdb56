"""The validation rule: the row "ours (validation rule)" under "ours (final)" and "ours (paper's rule)".

The candidates are those of the paper's rule (ddflow.report.paper_rule): per distillation seed, the final set and
the snapshots at the paper's evaluation cadence (hparams `paper_rule`), each evaluated once. Every evaluation cell
given the validation split (ddflow.data.validation) also scores its trained models on it (`val_accuracies`: the
same models, which never saw those images; the split is carved from the training split, so it never overlaps the
test split). Per seed the candidate with the best mean validation accuracy is chosen (ties: the earliest iteration,
as the paper's rule breaks them), and only its test mean is reported; then the mean (± the population std) over
seeds. The test split chooses nothing. Beside it, the paper's rule minus the validation rule: how much choosing on
the test split inflates the number.

A method without a paper rule has one candidate, its final set: its validation-rule value is "ours (final)", and
the table prints no extra row for it (the note says so).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import DdflowError
from .paper_rule import LABEL as PAPER_LABEL
from .paper_rule import cell_text, choose_per_seed, selection_columns
from .paper_rule import select as paper_rule_select

LABEL = "ours (validation rule)"
RULE = "the validation rule"
NOTE = (f"{LABEL}: per seed, of the same candidates as the paper's rule (the final set and the snapshots at the "
        f"paper's cadence), the one with the best mean accuracy on the validation split (held out of the training "
        f"split, never trained on, disjoint from the test split; ties: the earliest); its test accuracy reported "
        f"once; ± = std over seeds; \"it\" = the chosen iteration(s); \"paper's rule +x\" = the paper's rule minus "
        f"this row, what choosing on the test split adds. Rows without it have one candidate, the final set: their "
        f"validation-rule value is ours (final).")

NO_CANDIDATES = (f"{LABEL}: no row here has snapshot candidates (config paper_rule off, or methods that report "
                 f"their final set), so the validation split chooses among the final set only: ours (final) is also "
                 f"the validation-rule value of every row.")


def _val_mean(c: dict[str, Any], where: Any) -> float:
    val = c.get("val_accuracies")
    if not val:
        raise DdflowError(f"{where}: evaluation cell has no val_accuracies (made without the validation split): "
                          f"the validation rule needs every candidate scored on it; remake the cell")
    return sum(val) / len(val)


def chosen_per_seed(finals: dict[int, tuple[int, float, float]],
                    snapshots: dict[int, dict[int, tuple[float, float]]], where: str) -> dict[int, tuple[int, float]]:
    """seed -> (chosen iteration, its test mean): the candidate with the largest validation mean, the earliest
    iteration on a tie (paper_rule.choose_per_seed). finals: seed -> (final iteration, val mean, test mean);
    snapshots: seed -> {iteration: (val mean, test mean)}. Every seed needs both."""
    return choose_per_seed({s: (it, (val, test)) for s, (it, val, test) in finals.items()}, snapshots, where, RULE)


def _val_candidate(c: dict[str, Any], where: Any) -> tuple[float, float]:
    """The validation rule's candidate: chosen on the validation mean, reporting the test mean."""
    return _val_mean(c, where), sum(c["accuracies"]) / len(c["accuracies"])


def select(final_paths: list[str | Path], rule_paths: list[str | Path]) -> dict[tuple, dict[str, Any]]:
    """(protocol, method, dataset, ipc) -> {mean, std (over seeds), iterations (seed -> chosen), n_seeds} for every
    group that has snapshot cells: the paper's rule's selection (paper_rule.select) on the validation mean."""
    return paper_rule_select(final_paths, rule_paths, _val_candidate, RULE)


def add_columns(table: dict[str, Any], final_paths: list[str | Path], rule_paths: list[str | Path]) -> dict:
    """The table with the validation-rule columns in its long CSV (valrule_mean, valrule_std, valrule_iterations,
    and rule_inflation = paper_rule_mean - valrule_mean; add after paper_rule.add_columns) and `valrule` set."""
    df = table["df"]
    rows = selection_columns(df, select(final_paths, rule_paths), "valrule")
    df["rule_inflation"] = [p - c["mean"] if c and p is not None and not _missing(p) else None
                            for c, p in zip(rows, df["paper_rule_mean"])]
    table["valrule"] = True
    return table


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def valrule_text(r, dash: str) -> str:
    """One wide-table cell of the validation-rule row: "mean ± std (it N; paper's rule +x.x)"."""
    if _missing(r.valrule_mean):
        return dash
    words = str(r.valrule_iterations).split()
    its = "/".join(map(str, sorted({int(w.split(":it")[1]) for w in words})))
    value = f"{r.valrule_mean:.1f}" if len(words) == 1 else f"{r.valrule_mean:.1f} ± {r.valrule_std:.1f}"
    inflation = "" if _missing(r.rule_inflation) else f"; paper's rule {r.rule_inflation:+.1f}"
    return f"{value} (it {its}{inflation})"


def add_rows(out, table: dict[str, Any], cols: list[tuple[str, int, str]], dash: str):
    """The wide table with "{label} — ours (paper's rule)" and "{label} — ours (validation rule)" under each row
    that has snapshot candidates."""
    import pandas as pd

    df = table["df"]
    labels = [r["label"] for r in table["spec"]["rows"]]
    extra = [(PAPER_LABEL, "paper_rule_mean", cell_text)]
    if table.get("valrule"):
        extra.append((LABEL, "valrule_mean", valrule_text))
    have = {(r.row, name) for r in df.itertuples() for name, col, _ in extra if not _missing(getattr(r, col))}
    index = [x for label in labels
             for x in [label] + [f"{label} — {name}" for name, _, _ in extra if (label, name) in have]]
    wide = pd.DataFrame(dash, index=pd.Index(index, name=out.index.name), columns=out.columns, dtype=object)
    wide.loc[out.index] = out
    for r in df.itertuples():
        head = next(h for ds, ipc, h in cols if ds == r.dataset and ipc == r.ipc)
        for name, _, text in extra:
            if (r.row, name) in have:
                wide.loc[f"{r.row} — {name}", (head, f"IPC {r.ipc}")] = text(r, dash)
    return wide
