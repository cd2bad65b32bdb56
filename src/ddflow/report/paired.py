"""The paired difference to Random: columns of a table's long CSV, and a row "{label} — vs Random" under each method
row of its wide layout (Markdown, LaTeX, HTML).

Random and every method that starts from real images start from the same images for a seed and IPC
(ddflow.data.paired), and model k of every cell is seeded alike (ddflow.protocols.cell.model_stream). So for a
method's cell and Random's cell under the same protocol, dataset, IPC and seed, d = acc(method, model k) −
acc(Random, model k) measures the method, not the draw. The column prints the mean of d over every (seed, model)
pair both have, with a 95 % t-interval: mean ± t(0.975, n − 1) · sd / √n over the n pairs (sd with n − 1). The pairs
of one seed share its distilled sets, so the interval treats seed-to-seed variation as the models see it; with one
seed and a few models it is wide (t(0.975, 1) = 12.7 for two pairs), and with one pair there is none. "—" where
Random's cell (same protocol, dataset and IPC) or the method's is missing, and on Random's own row.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..records.cell import load_cell

RANDOM = "random"
LABEL = "vs Random"
COLUMNS = ("paired_diff", "paired_low", "paired_high", "paired_pairs", "paired_seeds", "paired_init",
           "paired_replaced")
#: what the wide cell adds after the interval for an initial set that is not exactly Random's
INIT_WORDS = {"same": "", "nested": " (nested init)", "own": " (own init)", "unknown": " (init unknown)"}
NOTE = (f"{LABEL}: the paired difference to Random under the same protocol, dataset, IPC and seed, mean over "
        "(seed, model) pairs [95 % t-interval over those pairs] (model k of both cells starts from the same "
        "initialisation; n = 1 pair: no interval); wide with one seed and few models. The method's initial set is "
        "Random's unless marked: (nested init) = drawn from the same per-class order but more or fewer images "
        "(IDC's IPC x factor^2 tiled images, HaBa's bases), (own init) = not a draw of real images (noise, k-means, "
        "herding, learned bases) or its own draw (IDM's patches), so only the seed and the evaluation models are "
        "paired; (k replaced) = k of Random's images were in the validation split the method holds out and the next "
        "ones of the order took their place (docs/fair.md, Paired baselines). — = Random's cell missing.")


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def paired_summary(diffs: list[float]) -> dict[str, Any]:
    """{diff, low, high, pairs} of the paired differences: their mean and 95 % t-interval (low = high = None for
    one pair)."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return {"diff": mean, "low": None, "high": None, "pairs": n}
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"diff": mean, "low": mean - half, "high": mean + half, "pairs": n}


def _init(cells: list[dict[str, Any]]) -> tuple[str, int]:
    """(the cells' initial-set pairing: the record's paired_init, copied into the cell; "unknown" for cells without
    it or with several, the images replaced over the seeds)."""
    kinds = {str(c.get("paired_init") or "unknown") for c in cells}
    return (kinds.pop() if len(kinds) == 1 else "unknown"), sum(int(c.get("init_replaced") or 0) for c in cells)


def paired_differences(cell_paths: list[str | Path]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """(protocol, method, dataset, ipc) -> {diff, low, high, pairs, seeds, init} for every method other than Random
    whose group has a Random group under the same protocol, dataset and IPC sharing at least one seed."""
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for p in cell_paths:
        c = load_cell(p)
        groups[(c["protocol"], c["method"], c["dataset"], int(c["ipc"]))][int(c["seed"])] = c
    out = {}
    for (protocol, method, dataset, ipc), seeds in groups.items():
        random = groups.get((protocol, RANDOM, dataset, ipc))
        if method == RANDOM or not random:
            continue
        common = sorted(set(seeds) & set(random))
        diffs = [float(a) - float(b) for s in common
                 for a, b in zip(seeds[s]["accuracies"], random[s]["accuracies"])]  # model k with model k
        if diffs:
            init, replaced = _init([seeds[s] for s in common])
            out[(protocol, method, dataset, ipc)] = {**paired_summary(diffs), "seeds": len(common), "init": init,
                                                     "replaced": replaced}
    return out


def add_columns(table: dict[str, Any], cell_paths: list[str | Path]) -> dict[str, Any]:
    """The table's long CSV with the paired columns (COLUMNS; empty where there is no pair)."""
    found = paired_differences(cell_paths)
    df = table["df"]
    rows = [found.get((r.protocol, r.method, r.dataset, r.ipc)) for r in df.itertuples()]
    for col, key in zip(COLUMNS, ("diff", "low", "high", "pairs", "seeds", "init", "replaced")):
        df[col] = [p[key] if p else (0 if key in ("pairs", "seeds", "replaced") else None) for p in rows]
    return table


def cell_text(r, dash: str) -> str:
    """One wide cell: "+3.1 [+1.0, +5.2]", "+3.1 (n = 1)", with the init mark; the dash without a pair."""
    if not getattr(r, "paired_pairs", 0):
        return dash
    spread = (f" [{r.paired_low:+.1f}, {r.paired_high:+.1f}]" if r.paired_low is not None
              and not (isinstance(r.paired_low, float) and math.isnan(r.paired_low)) else " (n = 1)")
    mark = INIT_WORDS.get(str(r.paired_init), f" ({r.paired_init} init)")
    if r.paired_init == "same" and int(r.paired_replaced):
        mark = f" ({int(r.paired_replaced)} replaced)"
    return f"{r.paired_diff:+.1f}{spread}{mark}"


def add_rows(out, table: dict[str, Any], cols: list[tuple[str, int, str]], dash: str):
    """The wide table with a row "{label} — vs Random" under each row (and its paper-rule row) that has a paired
    difference in some column: the paper's layout keeps one column per dataset x IPC."""
    import pandas as pd

    df = table["df"]
    have = {r.row for r in df.itertuples() if getattr(r, "paired_pairs", 0)}
    labels = {r["label"] for r in table["spec"]["rows"]}
    index, current, names = [], None, list(out.index)
    for i, name in enumerate(names):   # a spec row's group (its row, its paper-rule row) ends at the next spec row
        index.append(name)
        current = name if name in labels else current
        if current in have and (i + 1 == len(names) or names[i + 1] in labels):
            index.append(f"{current} — {LABEL}")
    wide = pd.DataFrame(dash, index=pd.Index(index, name=out.index.name), columns=out.columns, dtype=object)
    wide.loc[out.index] = out
    for r in df.itertuples():
        if r.row in have:
            head = next(h for ds, ipc, h in cols if ds == r.dataset and ipc == r.ipc)
            wide.loc[f"{r.row} — {LABEL}", (head, f"IPC {r.ipc}")] = cell_text(r, dash)
    return wide
