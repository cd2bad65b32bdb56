"""Figures: a grid of every distilled set, and accuracy vs IPC per dataset (matplotlib, Agg backend)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..data import get_info  # noqa: E402
from ..io import atomic_path, read_json  # noqa: E402
from ..records import load_distilled  # noqa: E402
from .tables import pool_cells  # noqa: E402

MAX_PER_CLASS = 10
MAX_CLASSES = 20
PAIRED_BASE = {"dream": "idc"}  # DREAM variants not named <base>-dream


def save_figure(fig, out: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def distilled_grid(distilled_path: str | Path, out: str | Path) -> None:
    d = load_distilled(distilled_path)
    x = d.to_pixels()
    labels = d.hard_labels()
    classes = sorted(set(labels.tolist()))[:MAX_CLASSES]
    per = min(MAX_PER_CLASS, max(int((labels == c).sum()) for c in classes))
    fig, axes = plt.subplots(len(classes), per, figsize=(per * 0.8 + 0.5, len(classes) * 0.8 + 0.6), squeeze=False)
    for r, c in enumerate(classes):
        imgs = x[labels == c][:per]
        for j in range(per):
            ax = axes[r][j]
            ax.axis("off")
            if j < len(imgs):
                im = imgs[j].permute(1, 2, 0).numpy()
                ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray" if im.shape[2] == 1 else None,
                          vmin=0, vmax=1)
    fig.suptitle(f"{d.method} · {get_info(d.dataset).paper_name} · IPC {d.ipc} · seed {d.seed}",
                 fontsize=9)
    save_figure(fig, out)


def accuracy_vs_ipc(cell_paths: list[str | Path], dataset: str, out: str | Path) -> None:
    pooled = pool_cells(cell_paths)
    series: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for (protocol, method, ds, ipc), v in pooled.items():
        if ds == dataset:
            series[(method, protocol)].append((ipc, v["mean"], v["std"]))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (method, protocol), pts in sorted(series.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    label=f"{method} ({protocol})")
    ax.set_xscale("log")
    ipcs = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ipcs, [str(i) for i in ipcs])
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{get_info(dataset).paper_name}: accuracy vs IPC")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    save_figure(fig, out)


def accuracy_vs_iteration(cell_paths: list[str | Path], dataset: str, ipc: int, out: str | Path,
                          title: str = "") -> None:
    """DREAM supp. Figure 1: test accuracy of snapshots against the distillation iteration, one line per method
    (methods with and without DREAM's representative matching share a colour, DREAM dashed)."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for p in cell_paths:
        c = read_json(p, "evaluation cell")
        if c["dataset"] == dataset and int(c["ipc"]) == ipc and c.get("iterations") is not None:
            points[c["method"]][int(c["iterations"])].extend(c["accuracies"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    def base(m: str) -> str:  # 'dream' is IDC with DREAM's representative matching
        return PAIRED_BASE.get(m, m.removesuffix("-dream"))

    bases = sorted({base(m) for m in points})
    colours = {b: f"C{i}" for i, b in enumerate(bases)}
    for method in sorted(points):
        its = sorted(points[method])
        accs = [torch.tensor(points[method][i], dtype=torch.float64) for i in its]
        mean = [float(a.mean()) for a in accs]
        std = [float(a.std(unbiased=False)) if len(a) > 1 else 0.0 for a in accs]
        ax.errorbar(its, mean, yerr=std, marker="o", capsize=3, color=colours[base(method)],
                    linestyle="--" if base(method) != method else "-", label=method)
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"{get_info(dataset).paper_name}, IPC {ipc}: accuracy vs iteration")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    save_figure(fig, out)
