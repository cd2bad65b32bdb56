"""Cross-architecture tables (kind `xarch`, as MTT's Table 3 and DM's cross-architecture table): rows = methods,
columns = evaluation networks, for one dataset x IPC; ours (mean ± std over all models of all seeds) beside the
paper's value and Δ per network.

A spec (workflow/papers/xarch*.yaml) is a cells table (ddflow.report.tables.load_spec) with `kind: xarch` and
  dataset, ipc         the one setting of the table (our dataset; `compare_as` maps it to the paper's column)
  architectures        the columns: ConvNet (the row's own protocol) or any net its protocol admits
                       (ddflow.protocols.xarch.ADMITTED; the cell's protocol is `{protocol}-{net}`)
  rows[].paper         {architecture: 'mean±std'} as printed in the paper (for the paper's dataset and IPC)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..data import get_info
from ..errors import DdflowError
from ..protocols.xarch import column_protocol
from . import paired
from .formats import html_page, latex_table
from .tables import DASH, _fmt, comparison_record, load_spec, pool_cells, pooled_runs, row_notes, write_outputs


def load_xarch_spec(path: str | Path) -> dict[str, Any]:
    """A `kind: xarch` spec, its extra keys checked: dataset known, ipc a whole number >= 1, architectures a
    non-empty list every row's protocol admits, paper values keyed by those architectures."""
    spec = load_spec(path)
    if spec["kind"] != "xarch":
        raise DdflowError(f"{path}: kind {spec['kind']!r}, expected 'xarch'")
    for key in ("dataset", "ipc", "architectures"):
        if key not in spec:
            raise DdflowError(f"{path}: xarch spec lacks {key!r}")
    get_info(spec["dataset"])
    if not isinstance(spec["ipc"], int) or spec["ipc"] < 1:
        raise DdflowError(f"{path}: 'ipc' must be a whole number >= 1, got {spec['ipc']!r}")
    archs = spec["architectures"]
    if not isinstance(archs, list) or not archs:
        raise DdflowError(f"{path}: 'architectures' must be a non-empty list of network names")
    for i, row in enumerate(spec["rows"]):
        for arch in archs:
            try:
                column_protocol(row.get("protocol", "dc"), arch)
            except DdflowError as e:
                raise DdflowError(f"{path}: rows[{i}] ({row['label']}): {e}") from None
        unknown = set(row.get("paper") or {}) - set(archs)
        if unknown:
            raise DdflowError(f"{path}: rows[{i}] ({row['label']}).paper names {sorted(unknown)}, not among "
                              f"'architectures' {archs}")
    return spec


def xarch_cells(spec: dict[str, Any], methods: list[str]) -> list[tuple[str, str, str, int]]:
    """(protocol, method, dataset, ipc) of every cell of the table whose row's method is in `methods`."""
    return [(column_protocol(r.get("protocol", "dc"), a), r["method"], spec["dataset"], int(spec["ipc"]))
            for r in spec["rows"] if r.get("method") in methods for a in spec["architectures"]]


def build_xarch_table(spec_path: str | Path, cell_paths: list[str | Path]) -> dict[str, Any]:
    spec = load_xarch_spec(spec_path)
    pooled = pool_cells(cell_paths)
    ds, ipc = spec["dataset"], int(spec["ipc"])
    records = []
    for row in spec["rows"]:
        base = row.get("protocol", "dc")
        for arch in spec["architectures"]:
            protocol = column_protocol(base, arch)
            ours = pooled.get((protocol, row.get("method"), ds, ipc)) if row.get("method") else None
            where = {"architecture": arch, "dataset": ds, "paper_dataset": spec.get("compare_as", {}).get(ds, ds),
                     "ipc": ipc}
            records.append(comparison_record(row, spec, protocol, where, ours, (row.get("paper") or {}).get(arch)))
    presets, devices = pooled_runs(pooled)
    return paired.add_columns({"spec": spec, "df": pd.DataFrame.from_records(records), "presets": presets,
                               "devices": devices}, cell_paths)


def xarch_wide(table: dict[str, Any]) -> pd.DataFrame:
    """One row per method; per architecture the columns ours, paper, Δ and the paired difference to Random
    (report/paired.py)."""
    spec, df = table["spec"], table["df"]
    out = pd.DataFrame(index=pd.Index([r["label"] for r in spec["rows"]], name="Method"),
                       columns=pd.MultiIndex.from_tuples([(a, sub) for a in spec["architectures"]
                                                          for sub in ("ours", "paper", "Δ", paired.LABEL)]),
                       dtype=object)
    for r in df.itertuples():
        out.loc[r.row, (r.architecture, "ours")] = _fmt(r.ours_mean, r.ours_std)
        out.loc[r.row, (r.architecture, "paper")] = _fmt(r.paper_mean, r.paper_std)
        out.loc[r.row, (r.architecture, "Δ")] = DASH if pd.isna(r.difference) else f"{r.difference:+.1f}"
        out.loc[r.row, (r.architecture, paired.LABEL)] = paired.cell_text(r, DASH)
    return out


def xarch_notes(table: dict[str, Any]) -> list[str]:
    spec, df = table["spec"], table["df"]
    ds = spec["dataset"]
    paper_ds = spec.get("compare_as", {}).get(ds, ds)
    lines = [f"Source of paper values: {spec.get('source', '')}.",
             f"Ours: {get_info(ds).paper_name}, IPC {spec['ipc']}; each column trains fresh networks of that "
             "architecture on the distilled set with the row's protocol (ConvNet: the protocol itself; other "
             "networks: `{protocol}-{network}`, ddflow.protocols.xarch), networks as DC's networks.py."]
    if paper_ds != ds:
        lines.append(f"{get_info(ds).paper_name} is compared with the paper's {get_info(paper_ds).paper_name}: a "
                     "smaller training set, so the values are not expected to match.")
    lines += row_notes(spec)
    ran = df[df.n_models > 0]
    if len(ran):
        lines.append(f"Ours: final-epoch test accuracy (%), mean ± std (population) over all evaluation models of all "
                     f"distillation seeds ({'/'.join(map(str, sorted(set(ran.n_models))))} models per cell); "
                     f"{DASH} = not run or not reported.")
    lines.append(paired.NOTE)
    lines += list(spec.get("notes", []))
    if "quick" in table.get("presets", []):
        lines.append("Quick preset: reduced iterations, epochs and models (the `quick:` sections of "
                     "workflow/hparams) on the configured data; these values are NOT comparable with the paper's.")
    return lines


def write_xarch_table(table: dict[str, Any], out_prefix: str | Path) -> None:
    spec = table["spec"]
    t = spec["title"]
    if table.get("presets"):
        t += f" — ours: preset {', '.join(table['presets'])}, device {', '.join(table['devices'])}"
    w = xarch_wide(table)
    flat = w.copy()
    flat.columns = [f"{a} {b}" for a, b in w.columns]
    lines = xarch_notes(table)
    md = [f"# {t}", "", flat.to_markdown(), ""] + [f"- {n}" for n in lines]
    write_outputs(out_prefix, table["df"], md, latex_table(w, t, f"tab:{spec['name']}", lines),
                  html=html_page(w, t, lines))
