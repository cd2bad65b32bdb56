"""ISA's analyses (docs/paper-values.md P6): Fig. 5 (discarding the hardest vs the easiest samples), the information
test, recall of the real data by the synthetic set, and Fig. 6 (a 2-D embedding of real and synthetic images). Fig. 8
(accuracy vs distillation step) is ddflow.report.figures.accuracy_vs_iteration over snapshot cells.

Fixed feature space (recall, information test, Fig. 6): the dataset's feature net (rule featnet: the default ConvNet
trained on the full training split, the net herding selects with), embed() features. Synthetic images are mapped
back to the normalised space the feature net was trained in (ZCA-space sets through the inverse ZCA).

Devices: the feature net's device does the work. `features` moves every input chunk there (distilled sets load on
the CPU, the real data and the net may sit on CUDA), labels follow their features, and arrays for the figures come
back through `.cpu()`.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..data import RealData, get_info  # noqa: E402
from ..errors import DdflowError  # noqa: E402
from ..io import read_json  # noqa: E402
from ..nets import embed_chunked  # noqa: E402
from ..ops.krr import centred_onehot, krr_predict, krr_targets, krr_weights  # noqa: E402
from ..records import DistilledSet, load_distilled  # noqa: E402
from ..seeding import generator  # noqa: E402
from .figures import FIG_SIZE, legend_outside, save_figure  # noqa: E402
from .formats import html_page  # noqa: E402
from .tables import write_outputs  # noqa: E402

FIG5_PERCENTS = (10, 20, 30)


def net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def features(net: torch.nn.Module, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """embed() features on the net's device, whatever device `x` is on."""
    return embed_chunked(net, x, chunk=chunk, device=net_device(net))


def _write_table(df: pd.DataFrame, out_prefix: str | Path, title: str, notes: list[str]) -> None:
    md = [f"# {title}", "", df.to_markdown(index=False, floatfmt=".4f"), ""] + [f"- {n}" for n in notes]
    write_outputs(out_prefix, df, md, html=html_page(df.round(4), title, notes, index=False))


# ---- Fig. 5 ------------------------------------------------------------------------------------------------
def fig5(cell_paths: list[str | Path], dataset: str, ipc: int, out: str | Path) -> None:
    """Accuracy after discarding the 10/20/30 % hardest vs easiest samples of every real batch, against FRePo."""
    acc: dict[str, list[float]] = defaultdict(list)
    for p in cell_paths:
        c = read_json(p, "evaluation cell")
        if c["dataset"] == dataset and int(c["ipc"]) == ipc:
            acc[c["method"]].extend(c["accuracies"])
    if "frepo" not in acc:
        raise DdflowError("fig5 needs the frepo cell (no discarding)")
    base = torch.tensor(acc["frepo"], dtype=torch.float64)
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for which, colour, name in (("hard", "C3", "hardest"), ("easy", "C2", "easiest")):
        xs, ms, ss = [0], [float(base.mean())], [float(base.std(unbiased=False))]
        for pct in FIG5_PERCENTS:
            a = acc.get(f"frepo-drop-{which}{pct}")
            if a:
                t = torch.tensor(a, dtype=torch.float64)
                xs.append(pct), ms.append(float(t.mean())), ss.append(float(t.std(unbiased=False)))
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, color=colour, label=f"discard {name}")
    ax.axhline(float(base.mean()), color="grey", linestyle=":", label="Ori (FRePo)")
    ax.set_xlabel("samples discarded from each real batch (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"ISA Fig. 5: {get_info(dataset).paper_name}, IPC {ipc}")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, out)


# ---- information test ----------------------------------------------------------------------------------------
def information_test(distilled: DistilledSet, data: RealData, net: torch.nn.Module, batch: int = 1024,
                     batches: int = 5, hard: float = 0.8, reg: float = 1e-6) -> dict[str, float]:
    """P6's information test on real batches ranked by the distilled set's per-sample KRR error (feature-net
    features): (a) KRR-predict the 20 % easiest from the 80 % hardest, (b) the 20 % hardest from the 80 % easiest
    (`hard` = 0.8). MSE = mean over samples and classes of (prediction - centred one-hot)^2, averaged over
    `batches` batches. The real batches depend on (dataset, IPC, seed) only: every method's row sees the same ones."""
    info = data.info
    g = generator("isa-information", info.name, distilled.ipc, distilled.seed)
    phi_s = features(net, distilled.to_normalized())
    w = krr_weights(phi_s, krr_targets(distilled.labels, info.classes).to(phi_s.device), reg)
    res = {"easy_from_hard": 0.0, "hard_from_easy": 0.0}
    for _ in range(batches):
        idx = torch.randperm(len(data.y_train), generator=g)[:batch]
        phi = features(net, data.x_train[idx])
        y = centred_onehot(data.y_train[idx].to(phi.device), info.classes)
        err = (krr_predict(phi, phi_s, w) - y).square().mean(-1)
        order = err.argsort(descending=True)                     # hardest first
        n_big = int(hard * len(order))
        hard_big, easy_small = order[:n_big], order[n_big:]      # 80 % hardest / 20 % easiest
        easy_big, hard_small = order.flip(0)[:n_big], order.flip(0)[n_big:]  # 80 % easiest / 20 % hardest
        for key, sup, tgt in (("easy_from_hard", hard_big, easy_small), ("hard_from_easy", easy_big, hard_small)):
            pred = krr_predict(phi[tgt], phi[sup], krr_weights(phi[sup], y[sup], reg))
            res[key] += float((pred - y[tgt]).square().mean()) / batches
    return res


# ---- recall ----------------------------------------------------------------------------------------------------
def recall(real: torch.Tensor, syn: torch.Tensor, k: int = 5) -> float:
    """Kynkaanniemi et al. (2019) improved recall with Sajjadi et al.'s reading in ISA: the fraction of real samples
    inside the union of balls around the synthetic samples, each ball's radius the distance to its k-th nearest
    other synthetic sample (k limited to the set size - 1)."""
    if len(syn) < 2:
        raise DdflowError("recall needs at least 2 synthetic samples")
    kk = min(k, len(syn) - 1)
    d_ss = torch.cdist(syn, syn)
    radius = d_ss.topk(kk + 1, dim=1, largest=False).values[:, -1]     # +1: the zero distance to itself
    d_rs = torch.cdist(real, syn)
    return float((d_rs <= radius.unsqueeze(0)).any(1).double().mean())


def recall_table(distilled_paths: list[str | Path], data: RealData, net: torch.nn.Module, out_prefix: str | Path,
                 k: int = 5, n_real: int = 2000, paper: dict[str, float] | None = None) -> pd.DataFrame:
    """Recall of each distilled set; `paper` = the paper's values by method (workflow/papers/isa_recall.yaml)."""
    g = generator("isa-recall", data.info.name)
    idx = torch.randperm(len(data.y_train), generator=g)[:n_real]
    real = features(net, data.x_train[idx])
    rows = []
    for p in distilled_paths:
        d = load_distilled(p)
        syn = features(net, d.to_normalized())
        rows.append({"method": d.method, "dataset": d.dataset, "ipc": d.ipc, "seed": d.seed,
                     "k": min(k, len(syn) - 1), "recall": recall(real, syn, k)})
    df = pd.DataFrame(rows)
    notes = [f"Recall (P6: Sajjadi et al. 2018 / k-NN balls): the fraction of {len(real)} random real training images "
             f"inside the union of k-nearest-neighbour balls around the synthetic images, in the feature space of the "
             "dataset's feature net (ConvNet trained on the full training split, rule featnet)."]
    if paper:
        notes.append("Paper (CIFAR10): " + ", ".join(f"{v} ({m})" for m, v in paper.items()) + ".")
    _write_table(df, out_prefix, "ISA recall of the real data by the synthetic set", notes)
    return df


def information_table(distilled_paths: list[str | Path], data: RealData, net: torch.nn.Module,
                      out_prefix: str | Path, batch: int, batches: int,
                      paper: dict[str, float] | None = None) -> pd.DataFrame:
    """The information test of each distilled set; `paper` = the paper's MSEs (workflow/papers/isa_information.yaml)."""
    rows = []
    for p in distilled_paths:
        d = load_distilled(p)
        r = information_test(d, data, net, batch, batches)
        rows.append({"method": d.method, "dataset": d.dataset, "ipc": d.ipc, "seed": d.seed, **r})
    df = pd.DataFrame(rows)
    notes = [f"Real batches of {batch} ({batches} batches) split by the distilled set's per-sample KRR error in the "
             "feature net's feature space: easy_from_hard = MSE of predicting the 20 % easiest from the 80 % hardest "
             "by KRR, hard_from_easy = the 20 % hardest from the 80 % easiest."]
    if paper:
        notes.append("Paper (P6): " + " vs ".join(f"{v} ({k.replace('_', ' ')})" for k, v in paper.items()) + ".")
    _write_table(df, out_prefix, "ISA information test", notes)
    return df


# ---- Fig. 6 ----------------------------------------------------------------------------------------------------
def fig6(distilled_paths: list[str | Path], data: RealData, net: torch.nn.Module, out: str | Path,
         classes: tuple[int, ...] = (0, 1, 2), n_real: int = 300) -> None:
    """PCA (fitted on the real images' features) of three classes' real images with each method's synthetic images
    of those classes (labels: argmax of the learned labels)."""
    g = generator("isa-fig6", data.info.name)
    real_x, real_y = [], []
    for c in classes:
        idx = (data.y_train == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)[:n_real // len(classes)]]
        real_x.append(data.x_train[idx]), real_y.append(data.y_train[idx])
    phi = features(net, torch.cat(real_x))
    y = torch.cat(real_y).cpu()
    mean = phi.mean(0)
    _, _, v = torch.linalg.svd(phi - mean, full_matrices=False)
    proj = lambda f: ((f - mean) @ v[:2].T).cpu().numpy()  # noqa: E731
    pr = proj(phi)
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for i, c in enumerate(classes):
        m = (y == c).numpy()
        ax.scatter(pr[m, 0], pr[m, 1], s=6, alpha=0.25, color=f"C{i}", label=f"real class {c}")
    markers = "*^sDPX"
    for j, p in enumerate(distilled_paths):
        d = load_distilled(p)
        lab = d.hard_labels()
        keep = torch.isin(lab, torch.tensor(classes))
        ps = proj(features(net, d.to_normalized()[keep]))
        for i, c in enumerate(classes):
            m = (lab[keep] == c).numpy()
            ax.scatter(ps[m, 0], ps[m, 1], s=90, marker=markers[j % len(markers)], color=f"C{i}",
                       edgecolors="black", linewidths=0.8, label=d.method if i == 0 else None)
    ax.set_title(f"ISA Fig. 6: {data.info.paper_name}, real vs synthetic (PCA of feature-net features)")
    legend_outside(ax)
    save_figure(fig, out)
