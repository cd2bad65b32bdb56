"""Figures: a grid of every distilled set, and accuracy vs IPC per dataset (matplotlib, Agg backend).

Every figure is written twice, a PNG (FIG_DPI) and a vector PDF beside it (same name, .pdf); line figures are
FIG_SIZE inches with the legend outside the axes and each method's fixed colour and marker (report/styles.py)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data import get_info  # noqa: E402
from ..io import atomic_path, read_json  # noqa: E402
from .styles import method_style  # noqa: E402
from .tables import pool_cells  # noqa: E402

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that use it (a grid reads a .pt set): acc-vs-ipc starts without it (cli).

MAX_PER_CLASS = 10
MAX_CLASSES = 20
PAIRED_BASE = {"dream": "idc"}  # DREAM variants not named <base>-dream
FIG_SIZE = (6.4, 4.8)      # inches: a single-column paper figure at full width, text legible when scaled to it
FIG_DPI = 200
DISPLAY_PERCENTILES = (0.5, 99.5)  # a set's display range per channel: these percentiles of its values ...
IQR_FENCE = 3.0                    # ... within this many interquartile ranges (at least [0, 1]'s) of the quartiles


def vector_path(out: str | Path) -> Path:
    """The vector copy written beside a figure's PNG."""
    return Path(out).with_suffix(".pdf")


def save_figure(fig, out: str | Path, dpi: int = FIG_DPI) -> None:
    """Write a matplotlib figure as PNG at `out` and as PDF beside it (vector_path), each atomically; close it."""
    for path, fmt in ((Path(out), "png"), (vector_path(out), "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def legend_outside(ax, **kw) -> None:
    """The legend right of the axes (the saved figure grows to hold it), two columns past 18 entries."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
                  ncol=2 if len(handles) > 18 else 1, **kw)


def display_range(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float, int]:
    """A set's display range per channel and what it hides. x: (N, C, H, W) pixels, not clamped. Per channel the
    range spans [0, 1] and, beyond it, the DISPLAY_PERCENTILES of the set's finite values that lie within IQR_FENCE
    interquartile ranges of the quartiles (the width of [0, 1] where the interquartile range is narrower: sparse
    images such as MNIST's have most values at the background, and their strokes are not outliers). A set within
    [0, 1] is shown as it is; outlying values (even a few whole images) do not wash out the rest. Returns (low (C,),
    high (C,), fraction of the finite values outside the range (clipped), count of non-finite values)."""
    a = x.detach().double().cpu().numpy()
    finite = np.isfinite(a)
    lo, hi = np.zeros(a.shape[1]), np.ones(a.shape[1])
    for c in range(a.shape[1]):
        v = a[:, c][finite[:, c]]
        if v.size:
            q1, q3 = np.percentile(v, (25, 75))
            fence = IQR_FENCE * max(q3 - q1, 1.0)  # whole outlying images (a diverged few) stay out of it too
            v = v[(v >= q1 - fence) & (v <= q3 + fence)]
            p_lo, p_hi = np.percentile(v, DISPLAY_PERCENTILES)
            lo[c], hi[c] = min(0.0, p_lo), max(1.0, p_hi)
    below, above = a < lo[None, :, None, None], a > hi[None, :, None, None]
    clipped = float(((below | above) & finite).sum()) / max(int(finite.sum()), 1)
    return lo, hi, clipped, int((~finite).sum())


def range_note(lo: np.ndarray, hi: np.ndarray, clipped: float, nonfinite: int) -> str:
    """The grid title's line on the display range: '[0, 1]' or the per-channel ranges, and what was clipped."""
    if clipped == 0 and nonfinite == 0 and (lo == 0).all() and (hi == 1).all():
        return "pixels shown on [0, 1], none clipped"
    ranges = " / ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
    note = f"pixels shown on {ranges}{' per channel' if len(lo) > 1 else ''}"
    if clipped:
        note += f"; {100 * clipped:.2g} % of values outside, clipped"
    if nonfinite:
        note += f"; {nonfinite} non-finite values shown black"
    return note


def distilled_grid(distilled_path: str | Path, out: str | Path) -> None:
    import torch

    from ..records import load_distilled
    d = load_distilled(distilled_path)
    x = d.to_pixels(clamp=False)
    lo, hi, clipped, nonfinite = display_range(x)
    t_lo = torch.tensor(lo, dtype=x.dtype)[None, :, None, None]
    t_hi = torch.tensor(hi, dtype=x.dtype)[None, :, None, None]
    shown = torch.nan_to_num((x - t_lo) / (t_hi - t_lo), nan=0.0, posinf=0.0, neginf=0.0).clamp(0, 1)
    labels = d.hard_labels()
    classes = sorted(set(labels.tolist()))[:MAX_CLASSES]
    per = min(MAX_PER_CLASS, max(int((labels == c).sum()) for c in classes))
    fig, axes = plt.subplots(len(classes), per, figsize=(per * 0.8 + 0.5, len(classes) * 0.8 + 0.8), squeeze=False)
    for r, c in enumerate(classes):
        imgs = shown[labels == c][:per]
        for j in range(per):
            ax = axes[r][j]
            ax.axis("off")
            if j < len(imgs):
                im = imgs[j].permute(1, 2, 0).numpy()
                ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray" if im.shape[2] == 1 else None,
                          vmin=0, vmax=1)
    fig.suptitle(f"{d.method} · {get_info(d.dataset).paper_name} · IPC {d.ipc} · seed {d.seed}\n"
                 f"{range_note(lo, hi, clipped, nonfinite)}", fontsize=8)
    save_figure(fig, out, dpi=150)


def accuracy_vs_ipc(cell_paths: list[str | Path], dataset: str, out: str | Path) -> None:
    pooled = pool_cells(cell_paths)
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for (protocol, method, ds, ipc), v in pooled.items():
        if ds == dataset:
            series[(method, protocol)].append((ipc, v["mean"], v["std"]))
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    protocols = sorted({protocol for _, protocol in series})  # a method under a second protocol: dashed, ...
    for (method, protocol), pts in sorted(series.items()):
        pts.sort()
        colour, marker = method_style(method)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=marker, capsize=3,
                    color=colour, linestyle=("-", "--", ":", "-.")[protocols.index(protocol) % 4],
                    label=f"{method} ({protocol})")
    ax.set_xscale("log")
    ipcs = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{get_info(dataset).paper_name}: accuracy vs IPC")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, out)


def accuracy_vs_iteration(cell_paths: list[str | Path], dataset: str, ipc: int, out: str | Path,
                          title: str = "") -> None:
    """DREAM supp. Figure 1: test accuracy of snapshots against the distillation iteration, one line per method
    (methods with and without DREAM's representative matching share a colour, DREAM dashed)."""
    import torch  # the mean and std as the evaluation cells compute theirs (records.cell_record)
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in cell_paths:
        c = read_json(p, "evaluation cell")
        if c["dataset"] == dataset and int(c["ipc"]) == ipc and c.get("iterations") is not None:
            points[c["method"]][int(c["iterations"])].extend(c["accuracies"])
    fig, ax = plt.subplots(figsize=FIG_SIZE)

    def base(m: str) -> str:  # 'dream' is IDC with DREAM's representative matching
        return PAIRED_BASE.get(m, m.removesuffix("-dream"))

    for method in sorted(points):
        its = sorted(points[method])
        accs = [torch.tensor(points[method][i], dtype=torch.float64) for i in its]
        mean = [float(a.mean()) for a in accs]
        std = [float(a.std(unbiased=False)) if len(a) > 1 else 0.0 for a in accs]
        ax.errorbar(its, mean, yerr=std, marker=method_style(method)[1], capsize=3,
                    color=method_style(base(method))[0], linestyle="--" if base(method) != method else "-",
                    label=method)
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"{get_info(dataset).paper_name}, IPC {ipc}: accuracy vs iteration")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, out)
