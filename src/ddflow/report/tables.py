"""Paper tables as pandas views over evaluation cells: ours (mean ± std over all models of all seeds) beside the
paper's value and the difference, written as CSV (long, one row per cell), Markdown and LaTeX (paper layout)."""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import get_info
from ..errors import DdflowError
from ..io import atomic_path, read_yaml_mapping
from ..records.cell import load_cell
from . import paired, valrule
from .formats import html_page, latex_table
from .paper_rule import NOTE, add_columns, split_cells

DASH = "—"
_PM = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?))?\s*$")


TABLE_KINDS = ("cells", "timing", "xarch")    # results/tables/{name}.{csv,md,tex}: evaluation cells / run
                                              # timing / cells by architecture (report/xarch.py)
SPEC_KINDS = TABLE_KINDS + ("information", "recall", "figure")  # ISA's side tables, paper figures


def load_spec(path: str | Path) -> dict[str, Any]:
    """A paper table's or figure's spec (workflow/papers/*.yaml). `kind` (default cells) says what it is; a table
    needs name, title, rows, paper_datasets and paper_ipcs, an analysis or figure name, title and methods."""
    path = Path(path)
    spec = read_yaml_mapping(path, "no such table spec", "a spec is a mapping of keys", empty_ok=False)
    kind = spec.setdefault("kind", "cells")
    if kind not in SPEC_KINDS:
        raise DdflowError(f"{path}: kind {kind!r} unknown; allowed: {', '.join(SPEC_KINDS)}")
    needed = ("name", "title", "rows", "paper_datasets", "paper_ipcs") if kind in TABLE_KINDS else \
        ("name", "title", "methods")
    for key in needed:
        if key not in spec:
            raise DdflowError(f"{path}: {kind} spec lacks {key!r}")
    if kind in TABLE_KINDS:
        rows = spec["rows"]
        if not isinstance(rows, list) or not rows:
            raise DdflowError(f"{path}: 'rows' must be a non-empty list of rows (label, method, protocol, paper)")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not row.get("label"):
                raise DdflowError(f"{path}: row {i + 1} must be a mapping with a 'label' (got {row!r})")
    elif not isinstance(spec["methods"], list) or not spec["methods"]:
        raise DdflowError(f"{path}: 'methods' must be a non-empty list of method ids")
    return spec


def parse_paper_value(v: Any) -> tuple[float | None, float | None]:
    """'46.8±0.7' -> (46.8, 0.7); 91.7 -> (91.7, None); '-' or None -> (None, None)."""
    if v is None or (isinstance(v, str) and v.strip() in ("-", "", DASH)):
        return None, None
    if isinstance(v, (int, float)):
        return float(v), None
    m = _PM.match(str(v))
    if not m:
        raise DdflowError(f"paper value {v!r} is not 'mean' or 'mean±std'")
    return float(m.group(1)), (float(m.group(2)) if m.group(2) else None)


def pool_cells(cell_paths: list[str | Path]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """Group evaluation cells by (protocol, method, dataset, ipc) and pool every model of every seed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in cell_paths:
        c = load_cell(p)
        groups[(c["protocol"], c["method"], c["dataset"], int(c["ipc"]))].append(c)
    pooled = {}
    for key, cells in groups.items():
        accs = [a for c in cells for a in c["accuracies"]]
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        pooled[key] = {"mean": mean, "std": std, "n_models": len(accs), "n_seeds": len(cells),
                       "seeds": sorted(c["seed"] for c in cells),
                       "regimes": sorted({str((c.get("labels_used") or {}).get("regime")) for c in cells
                                          if (c.get("labels_used") or {}).get("regime")}),
                       "presets": {str(c["preset"]) for c in cells if c.get("preset")},
                       "devices": {str((c.get("provenance") or {}).get("device", "unknown")) for c in cells}}
    return pooled


def pooled_runs(pooled: dict[tuple, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(presets, devices) of the pooled cells, sorted: what a table's title says ours ran with."""
    return (sorted({p for v in pooled.values() for p in v["presets"]}),
            sorted({d for v in pooled.values() for d in v["devices"]}))


def comparison_record(row: dict[str, Any], spec: dict[str, Any], protocol: str, where: dict[str, Any],
                      ours: dict[str, Any] | None, paper: Any) -> dict[str, Any]:
    """One record of a table's long CSV: the spec row, the protocol, `where` (the cell's columns: dataset, IPC,
    architecture, ...), ours pooled (pool_cells; None: not run), the paper's value (parse_paper_value), their
    difference and the paper's source."""
    p_mean, p_std = parse_paper_value(paper)
    return {
        "row": row["label"], "method": row.get("method") or "", "protocol": protocol, **where,
        "ours_mean": ours["mean"] if ours else None, "ours_std": ours["std"] if ours else None,
        "n_models": ours["n_models"] if ours else 0, "n_seeds": ours["n_seeds"] if ours else 0,
        "paper_mean": p_mean, "paper_std": p_std,
        "difference": (ours["mean"] - p_mean) if ours and p_mean is not None else None,
        "paper_source": row.get("source", spec.get("source", "")),
    }


def build_table(spec_path: str | Path, cell_paths: list[str | Path], datasets: list[str],
                ipcs: list[int], extra_rows: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """`extra_rows`: rows the config adds after the spec's (imported sets, ddflow.interop.imports)."""
    spec = load_spec(spec_path)
    spec["rows"] = list(spec["rows"]) + list(extra_rows)
    cell_paths, rule_paths = split_cells(cell_paths)  # config paper_rule: snapshot cells at the paper's cadence
    pooled = pool_cells(cell_paths)
    compare_as = spec.get("compare_as", {})
    records = []
    for row in spec["rows"]:
        for ds in datasets:
            paper_ds = compare_as.get(ds, ds)
            for ipc in ipcs:
                pv = (row.get("paper") or {}).get(paper_ds, {}) or {}
                key = (row.get("protocol", "dc"), row.get("method"), ds, ipc)
                # a cell of IPC 0 (the whole training split, ddflow.stages.whole) fills every IPC column of its row
                ours = (pooled.get(key) or pooled.get(key[:3] + (0,))) if row.get("method") else None
                where = {"dataset": ds, "paper_dataset": paper_ds, "ipc": ipc}
                records.append({**comparison_record(row, spec, row.get("protocol", ""), where, ours, pv.get(ipc)),
                                "regime": "/".join(ours["regimes"]) if ours else "",
                                "paper_note": row.get("note", "")})
    df = pd.DataFrame.from_records(records)
    presets, devices = pooled_runs(pooled)
    table = paired.add_columns({"spec": spec, "df": df, "datasets": datasets, "ipcs": ipcs, "presets": presets,
                                "devices": devices}, cell_paths)
    if not rule_paths:
        return table
    # the snapshot candidates: chosen on the test split (the paper's rule) and on the validation split
    return valrule.add_columns(add_columns(table, cell_paths, rule_paths), cell_paths, rule_paths)


def _fmt(mean, std, digits=1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(r) -> str:
    """One dataset x IPC cell, compact as papers print it: "ours ± std (paper; Δ)"; "— (paper)" where we did not
    run it, "ours (—)" where the paper has no value, "—" where neither has one."""
    ours, paper = _fmt(r.ours_mean, r.ours_std), _fmt(r.paper_mean, r.paper_std)
    if ours == DASH:
        return DASH if paper == DASH else f"{DASH} ({paper})"
    if paper == DASH:
        return f"{ours} ({DASH})"
    return f"{ours} ({paper}; {r.difference:+.1f})"


def column_heads(table: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(dataset, ipc, dataset head) per column; the head names the paper's column where it is another dataset."""
    spec, cols = table["spec"], []
    for ds in table["datasets"]:
        paper_ds = spec.get("compare_as", {}).get(ds, ds)
        name = get_info(ds).paper_name
        head = name if paper_ds == ds else f"{name} (paper: {get_info(paper_ds).paper_name})"
        cols += [(ds, ipc, head) for ipc in table["ipcs"]]
    return cols


def wide(table: dict[str, Any]) -> pd.DataFrame:
    """The paper's layout: one row per method, one column per dataset x IPC (two header levels: dataset, IPC),
    each cell "ours ± std (paper; Δ)"; under a method's row its paired difference to Random (report/paired.py)."""
    df, spec, cols = table["df"], table["spec"], column_heads(table)
    out = pd.DataFrame(DASH, index=pd.Index([r["label"] for r in spec["rows"]], name="Method"),
                       columns=pd.MultiIndex.from_tuples([(h, f"IPC {ipc}") for _, ipc, h in cols]), dtype=object)
    for r in df.itertuples():
        head = next(h for ds, ipc, h in cols if ds == r.dataset and ipc == r.ipc)
        out.loc[r.row, (head, f"IPC {r.ipc}")] = _cell(r)
    if table.get("paper_rule"):
        out = valrule.add_rows(out, table, cols, DASH)
    return paired.add_rows(out, table, cols, DASH)


CELL_FORMAT = (f"Each cell: ours mean ± std (the paper's value; Δ = ours − paper); {DASH} (paper) = not run here; "
               f"ours ({DASH}) = not reported in the paper.")


def notes(table: dict[str, Any]) -> list[str]:
    spec, df = table["spec"], table["df"]
    lines = [f"Source of paper values: {spec.get('source', '')}"
             + (f" [{spec['source_bib']}]." if spec.get("source_bib") else ".")]
    if spec.get("bib"):
        lines.append("BibTeX keys (docs/references.bib): "
                     + "; ".join(f"{label} [{key}]" for label, key in spec["bib"].items()) + ".")
    for ds in table["datasets"]:
        paper_ds = spec.get("compare_as", {}).get(ds, ds)
        if paper_ds != ds:
            lines.append(f"{get_info(ds).paper_name} is compared with the paper's {get_info(paper_ds).paper_name} "
                         f"column: a smaller training set, so the values are not expected to match.")
    lines += row_notes(spec)
    ran = df[df.n_models > 0]
    if len(ran) and "regime" in ran:
        lines.append(protocol_regimes(ran))
    if len(ran):
        models, seeds = sorted(set(ran.n_models)), sorted(set(ran.n_seeds))
        lines.append(f"Ours: final-epoch test accuracy (%), mean ± std (population) over all evaluation models of all "
                     f"distillation seeds ({'/'.join(map(str, models))} models from {'/'.join(map(str, seeds))} "
                     f"seed(s) per cell); {DASH} = not run or not reported.")
    lines.append(CELL_FORMAT)
    lines.append(paired.NOTE)
    if table.get("paper_rule"):
        lines.append(NOTE)
    if table.get("valrule"):
        lines.append(valrule.NOTE)
    elif len(ran):
        lines.append(valrule.NO_CANDIDATES)
    for line in spec.get("notes", []):
        lines.append(line)
    if "quick" in table.get("presets", []):
        lines.append("Quick preset: reduced iterations, epochs and models (the `quick:` sections of "
                     "workflow/hparams) on the configured data; these values are NOT comparable with the paper's.")
    return lines


def title(table: dict[str, Any]) -> str:
    """The spec's title, then the preset(s) and device(s) our cells were made with."""
    t = table["spec"]["title"]
    if table.get("presets"):
        t += f" — ours: preset {', '.join(table['presets'])}, device {', '.join(table['devices'])}"
    return t


def write_outputs(out_prefix: str | Path, df: pd.DataFrame, md_lines: list[str], tex: str | None = None,
                  float_format: str = "%.4f", html: str | None = None) -> None:
    """{out_prefix}.csv (df), .md (the lines) and, when given, .tex and .html, each written atomically; the Markdown
    and LaTeX end with a comment saying what made them (ddflow.runtime.provenance; a CSV has no comment syntax its
    readers all accept, and the HTML page is the report's view of the same table, so they carry none)."""
    from ..runtime import provenance
    made_by = json.dumps(provenance(), sort_keys=True)
    out_prefix = Path(out_prefix)
    with atomic_path(out_prefix.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    with atomic_path(out_prefix.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(md_lines) + f"\n\n<!-- made by: {made_by} -->\n")
    if tex is not None:
        with atomic_path(out_prefix.with_suffix(".tex")) as tmp:
            tmp.write_text(tex.rstrip("\n") + f"\n% made by: {made_by}\n")
    if html is not None:
        with atomic_path(out_prefix.with_suffix(".html")) as tmp:
            tmp.write_text(html)


def write_table(table: dict[str, Any], out_prefix: str | Path) -> None:
    spec = table["spec"]
    w = wide(table)
    flat = w.copy()
    flat.columns = [f"{a} {b}" for a, b in w.columns]      # Markdown has one header row: "MNIST IPC 1"
    lines = notes(table)
    md = [f"# {title(table)}", "", flat.to_markdown(), ""] + [f"- {n}" for n in lines]
    tex = latex_table(w, title(table), f"tab:{spec['name']}", lines)   # header: dataset over its IPCs
    write_outputs(out_prefix, table["df"], md, tex, html=html_page(w, title(table), lines))


def protocol_regimes(ran: pd.DataFrame) -> str:
    """The note naming each row's protocol with the label regime its cells trained on (the cells' `labels_used`,
    ddflow.protocols.regimes): "Random, DM = dc · hard; FRePo = frepo · learned"."""
    groups: dict[str, list[str]] = defaultdict(list)
    for r in ran.itertuples():
        key = f"{r.protocol} · {r.regime}" if r.regime else f"{r.protocol} (regime not recorded)"
        if r.row not in groups[key]:
            groups[key].append(r.row)
    return ("Protocol · label regime of ours (hard = class labels, learned = the set's own learned labels; "
            "docs/fair.md): " + "; ".join(f"{', '.join(rows)} = {k}" for k, rows in groups.items()) + ".")


def row_notes(spec: dict[str, Any]) -> list[str]:
    """One note line per row that names its own source of paper values or has a note (every table kind)."""
    lines = []
    for r in spec["rows"]:
        if r.get("source") and r.get("source") != spec.get("source"):
            lines.append(f"{r['label']}: paper values from {r['source']}.")
        if r.get("note"):
            lines.append(f"{r['label']}: {r['note']}")
    return lines
