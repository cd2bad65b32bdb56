"""What a distilled set stores and what it cost: storage counts per kind of set, the cost-and-storage table of a
grid and the accuracy-versus-storage figure.

Storage counts the numbers a set needs to be used as its method evaluates it, as float32 (4 bytes each):
- images: every stored image value (N x C x H x W). Hard labels cost nothing: a set is stored class by class with
  the same count per class, so the label of an image is its position.
- learned labels (FRePo, ISA, EAD, TESLA ...): N x classes more.
- a learned evaluation lr (MTT, TESLA, HaBa ...): one more.
- multi-formation (IDC, DREAM, IDM, factor f > 1): the stored images only; each holds f x f images at 1/f of the
  resolution, so the set trains on f^2 x N images for the floats of N.
- HaBa: the bases and every hallucinator parameter (and the lr), not the images generated from them.
- RTP: the memory bases and the addressing coefficients (one row per decoded image), not the decoded images; its
  IPC is a budget of floats (images' worth per class) that these stay within.
- DD: the images and one learned lr per unrolled step (the record's `dd.step_lrs`; 30 at the paper's IPC 10).
Not counted: the normalisation or ZCA transform (a property of the dataset, as every paper counts it).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from ..data import get_info
from ..errors import DdflowError
from ..io import read_json
from ..records import DistilledSet, load_distilled
from .formats import html_page, latex_table
from .tables import DASH, write_outputs

BYTES_PER_FLOAT = 4


def _images(r: DistilledSet) -> int:
    return int(r.images.numel())


def _labels(r: DistilledSet) -> int:
    return int(r.labels.numel()) if r.soft_labels else 0


def _lr(r: DistilledSet) -> int:
    return 1 if r.lr is not None else 0


def storage_images(r: DistilledSet) -> dict[str, int]:
    """A set of images with hard labels (Random, Herding, DC, DSA, DM, CAFE, ...)."""
    return {"images": _images(r), "trained_images": len(r.images)}


def storage_learned(r: DistilledSet) -> dict[str, int]:
    """Images with learned labels and/or a learned lr (MTT, TESLA, FRePo, ISA, EAD, ...)."""
    return {"images": _images(r), "labels": _labels(r), "lr": _lr(r), "trained_images": len(r.images)}


def storage_multiformation(r: DistilledSet) -> dict[str, int]:
    """IDC / DREAM / IDM: the stored images; each decodes into factor^2 images of 1/factor the resolution."""
    f = int(r.factor)
    return {"images": _images(r), "labels": _labels(r), "lr": _lr(r), "trained_images": len(r.images) * f * f}


def storage_haba(r: DistilledSet) -> dict[str, int]:
    """HaBa: bases plus every hallucinator parameter plus the learned lr; its images are generated from them. The
    count is the one the method recorded (`extra["haba"]["storage"]`, ddflow.ops.hallucinator.storage), not a second
    count of the state dict."""
    counted = (r.extra.get("haba") or {}).get("storage")
    if not isinstance(counted, dict) or not {"bases", "hallucinators"} <= set(counted):
        raise DdflowError(f"{r.cell}: a HaBa set without its storage count (extra haba.storage) in its record")
    return {"bases": int(counted["bases"]), "hallucinators": int(counted["hallucinators"]), "lr": _lr(r),
            "trained_images": len(r.images)}


def storage_rtp(r: DistilledSet) -> dict[str, int]:
    """RTP: the memories (bases) plus the addressing coefficients; its images are decoded from them (one per row)."""
    basis, coeffs = r.extra.get("rtp_basis"), r.extra.get("rtp_coeffs")
    if not isinstance(basis, torch.Tensor) or not isinstance(coeffs, torch.Tensor):
        raise DdflowError(f"{r.cell}: an RTP set without rtp_basis / rtp_coeffs in its record")
    return {"bases": int(basis.numel()), "coefficients": int(coeffs.numel()), "trained_images": len(r.images)}
def storage_steps(r: DistilledSet) -> dict[str, int]:
    """DD: the images plus one learned lr per unrolled step (the steps replay the images in a stored order)."""
    return {"images": _images(r), "lr": len(r.extra["dd"]["step_lrs"]), "trained_images": len(r.images)}


STORAGE: dict[str, Callable[[DistilledSet], dict[str, int]]] = {
    "images": storage_images, "learned": storage_learned, "multi-formation": storage_multiformation,
    "haba": storage_haba, "rtp": storage_rtp, "steps": storage_steps}


def set_kind(r: DistilledSet) -> str:
    if "haba_bases" in r.extra:
        return "haba"
    if "rtp_basis" in r.extra:
        return "rtp"
    if isinstance(r.extra.get("dd"), dict):
        return "steps"
    if int(r.factor) > 1:
        return "multi-formation"
    if r.soft_labels or r.lr is not None:
        return "learned"
    return "images"


def storage(r: DistilledSet) -> dict[str, Any]:
    """kind, the float count of each part, `floats` (their sum), `bytes_per_class`, `ipc_equivalent` (floats in
    images of the dataset's size, per class) and `trained_images` (what a network trains on per epoch)."""
    kind = set_kind(r)
    parts = STORAGE[kind](r)
    info = get_info(r.dataset)
    floats = sum(v for k, v in parts.items() if k != "trained_images")
    return {"kind": kind, **parts, "floats": floats, "bytes_per_class": floats * BYTES_PER_FLOAT / info.classes,
            "ipc_equivalent": floats / (info.classes * info.channels * info.size ** 2)}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def build_cost_storage(distilled: list[str | Path], cell_paths: list[str | Path], protocols: dict[str, str]
                       ) -> pd.DataFrame:
    """One row per (method, dataset, IPC): storage (from the first seed's record: the same for every seed), the
    distillation's wall time, device-hours and peak memory (over seeds), the evaluation's seconds under the
    method's protocol and its accuracy."""
    groups: dict[tuple, list[DistilledSet]] = defaultdict(list)
    for p in distilled:
        r = load_distilled(p)
        groups[(r.method, r.dataset, r.ipc)].append(r)
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for p in cell_paths:
        c = read_json(p, "evaluation cell")
        if protocols.get(c["method"]) == c["protocol"]:
            cells[(c["method"], c["dataset"], int(c["ipc"]))].append(c)
    rows = []
    for key in sorted(groups):
        recs, evs = groups[key], cells.get(key, [])
        st = storage(recs[0])
        secs = [r.seconds for r in recs if r.seconds is not None]
        accs = [a for c in evs for a in c["accuracies"]]
        devices = sorted({str((r.extra.get("provenance") or {}).get("device", "unknown")) for r in recs})
        rows.append({
            "method": key[0], "dataset": key[1], "ipc": key[2], "seeds": len(recs), "kind": st["kind"],
            "floats": st["floats"], "bytes_per_class": st["bytes_per_class"], "ipc_equivalent": st["ipc_equivalent"],
            "images_floats": st.get("images", 0), "labels_floats": st.get("labels", 0), "lr_floats": st.get("lr", 0),
            "bases_floats": st.get("bases", 0), "hallucinator_floats": st.get("hallucinators", 0),
            "coefficient_floats": st.get("coefficients", 0),
            "trained_images": st["trained_images"],
            "distill_seconds": _mean(secs), "device_hours": sum(secs) / 3600 if secs else None,
            "device": ", ".join(devices),
            "peak_rss_mb": max((r.extra.get("peak_rss_mb") or 0 for r in recs), default=0) or None,
            "peak_cuda_mb": max((r.extra.get("peak_cuda_mb") or 0 for r in recs), default=0) or None,
            "protocol": protocols.get(key[0], ""),
            "eval_seconds": _mean([c.get("seconds") for c in evs]),
            "eval_models": _mean([c.get("n_models") for c in evs]),
            "eval_peak_rss_mb": max((c.get("peak_rss_mb") or 0 for c in evs), default=0) or None,
            "accuracy": sum(accs) / len(accs) if accs else None})
    return pd.DataFrame.from_records(rows)


def _num(v, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    return format(v, fmt)


def cost_view(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "Method": df.method, "Dataset": df.dataset, "IPC": df.ipc.astype(str), "Stores": df.kind,
        "Floats": [_num(v, ",d") for v in df.floats], "Bytes/class": [_num(v, ",.0f") for v in df.bytes_per_class],
        "IPC equiv.": [_num(v, ".2f") for v in df.ipc_equivalent],
        "Trained images": [_num(v, ",d") for v in df.trained_images],
        "Distill (s)": [_num(v, ".1f") for v in df.distill_seconds],
        "Device-h": [_num(v, ".4f") for v in df.device_hours],
        "Peak MB": [_num(c if c is not None and not (isinstance(c, float) and math.isnan(c)) else r, ".0f")
                    for r, c in zip(df.peak_rss_mb, df.peak_cuda_mb)],
        "Eval (s)": [_num(v, ".1f") for v in df.eval_seconds]})
    return out.set_index("Method")


def cost_notes(df: pd.DataFrame) -> list[str]:
    devices = sorted({d for v in df.get("device", []) for d in str(v).split(", ")}) if len(df) else []
    return [
        "Stores: images = images with hard labels (free: the position gives the class); learned = images plus "
        "learned labels (N × classes) and/or a learned evaluation lr (1); multi-formation = stored images, each "
        "decoded into factor² smaller images (Trained images counts those); haba = bases plus hallucinator "
        "parameters plus the lr (the generated images are not stored); rtp = memory bases plus addressing "
        "coefficients (RTP's IPC is this float budget; each coefficient row decodes into one image). Floats as "
        "float32 (4 bytes); IPC equiv. = "
        "floats per class in images of the dataset's size. The dataset's normalisation or ZCA is not counted.",
        "Distill (s): wall time of one distillation (mean over seeds); Device-h: their sum over seeds / 3600 (one "
        f"device per job; devices: {', '.join(devices) or DASH}); Peak MB: peak CUDA memory on a GPU, else the "
        "process's peak resident memory; Eval (s): one evaluation cell (all its models) under the method's protocol, "
        "mean over seeds. Read from the distilled records and evaluation cells of this run.",
    ]


def write_cost_storage(df: pd.DataFrame, out_prefix: str | Path, title: str = "Cost and storage of the distilled sets"
                       ) -> None:
    view = cost_view(df) if len(df) else pd.DataFrame({"Method": [], "Stores": []}).set_index("Method")
    lines = cost_notes(df)
    md = [f"# {title}", "", view.to_markdown() if len(view) else "(no sets)", ""] + [f"- {n}" for n in lines]
    tex = latex_table(view, title, "tab:cost_storage", lines)
    write_outputs(out_prefix, df, md, tex, html=html_page(view, title, lines))
