"""DREAM's supplementary Table 2 (seconds per inner loop: clustering, image update, whole loop; IDC vs DREAM) from
the distilled records' own `timing` (written by the idc/dream methods), beside the paper's values."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from ..data import get_info
from ..errors import DdflowError
from ..records import load_distilled
from .formats import html_page, latex_table
from .tables import DASH, load_spec, write_outputs

COLUMNS = ("clustering", "update_images", "inner_loop")
HEADS = ("Clustering", "Update images", "Inner loop")
WIDE = ("Dataset", "IPC", "Method", *(f"{h} {w}" for h in HEADS for w in ("ours", "paper")), "device", "preset")


def build_timing_table(spec_path: str | Path, distilled_paths: list[str | Path]) -> dict:
    spec = load_spec(spec_path)
    if spec.get("kind") != "timing":
        raise DdflowError(f"{spec_path}: not a timing table spec (kind: timing)")
    runs: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for p in distilled_paths:
        d = load_distilled(p)
        if "timing" not in d.extra:
            raise DdflowError(f"{p}: distilled record without 'timing' (method {d.method!r})")
        runs[(d.method, d.dataset, int(d.ipc))].append({"timing": d.extra["timing"], "preset": d.preset})
    records = []
    for row in spec["rows"]:
        for (method, ds, ipc), ds_runs in sorted(runs.items()):
            if method != row["method"]:
                continue
            paper_ds = (spec.get("compare_as") or {}).get(ds, ds)
            paper = (row.get("paper") or {}).get(paper_ds) or {}
            rec = {"row": row["label"], "method": method, "dataset": ds, "ipc": ipc, "n_runs": len(ds_runs),
                   "inner_loops": sum(r["timing"]["inner_loops"] for r in ds_runs),
                   "device": ", ".join(sorted({str(r["timing"].get("device", "?")) for r in ds_runs})),
                   "preset": ", ".join(sorted({str(r.get("preset")) for r in ds_runs}))}
            for col in COLUMNS:
                vals = [r["timing"][f"{col}_s"] for r in ds_runs if r["timing"].get(f"{col}_s") is not None]
                rec[f"ours_{col}_s"] = sum(vals) / len(vals) if vals else None
                rec[f"paper_{col}_s"] = paper.get(col)
            records.append(rec)
    return {"spec": spec, "df": pd.DataFrame.from_records(records)}


def _fmt(v) -> str:
    return DASH if v is None or pd.isna(v) else f"{v:.3g}"


def write_timing_table(table: dict, out_prefix: str | Path) -> None:
    spec, df = table["spec"], table["df"]
    rows = []
    for r in df.to_dict("records"):
        item = {"Dataset": get_info(r["dataset"]).paper_name, "IPC": r["ipc"], "Method": r["row"]}
        for col, head in zip(COLUMNS, HEADS):
            item[f"{head} ours"] = _fmt(r[f"ours_{col}_s"])
            item[f"{head} paper"] = _fmt(r[f"paper_{col}_s"])
        item["device"] = r["device"]
        item["preset"] = r["preset"]
        rows.append(item)
    wide = pd.DataFrame(rows, columns=list(WIDE))  # the heads also when no run has timing (an empty table)
    notes = [f"Source of paper values: {spec.get('source', '')}; {DASH} = not applicable or not reported."]
    notes += list(spec.get("notes", []))
    md = [f"# {spec['title']}", "", wide.to_markdown(index=False) if len(wide) else "(no runs)", ""]
    md += [f"- {n}" for n in notes]
    tex = latex_table(wide, spec["title"], f"tab:{spec['name']}", notes, index=False)
    write_outputs(out_prefix, df, md, tex, float_format="%.5f", html=html_page(wide, spec["title"], notes, index=False))
