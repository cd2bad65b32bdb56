"""The fair-comparison outputs of a grid: `ddflow robust-scores` (report/robust.py), `ddflow cost-storage` and
`ddflow acc-vs-storage` (report/storage.py): their command lines and the accuracy-versus-storage figure."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..data import get_info
from ..errors import DdflowError


def _json_arg(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DdflowError(f"{what}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise DdflowError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def accuracy_vs_storage(df, dataset: str, out: str | Path) -> None:
    """Test accuracy against bytes stored per class (log scale), one line per method through its IPCs, each method
    in its fixed colour and marker (report/styles.py). `df`: build_cost_storage's frame."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .figures import FIG_SIZE, legend_outside, plt, save_figure
    from .styles import method_style

    series: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for r in df.itertuples():
        if r.dataset == dataset and r.accuracy is not None and r.accuracy == r.accuracy:
            series[r.method].append((r.bytes_per_class, r.accuracy, r.ipc))
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for method, pts in sorted(series.items()):
        pts.sort()
        colour, marker = method_style(method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour, label=method)
        for x, y, ipc in pts:
            ax.annotate(str(ipc), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
    ax.set_xscale("log")
    xs = [p[0] for pts in series.values() for p in pts]
    if xs:  # at least a factor 4 of range, ticks at 1, 2, 5 x 10^k written out (bytes)
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bytes stored per class (float32; labels 0 when hard)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{get_info(dataset).paper_name}: accuracy vs storage (points labelled by IPC)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    save_figure(fig, out)


def cmd_robust(a) -> None:
    from ..records import load_distilled
    from .robust import build_robust, write_robust
    soft = {}
    for p in a.distilled:
        r = load_distilled(p)
        soft[(r.method, r.dataset, r.ipc)] = r.soft_labels
    df = build_robust(a.cells, _json_arg(a.protocols, "--protocols"), soft, _json_arg(a.settings, "--settings"))
    write_robust(df, a.out_prefix)


def cmd_cost_storage(a) -> None:
    from .storage import build_cost_storage, write_cost_storage
    write_cost_storage(build_cost_storage(a.distilled, a.cells, _json_arg(a.protocols, "--protocols")),
                       a.out_prefix)


def cmd_acc_vs_storage(a) -> None:
    from .storage import build_cost_storage
    accuracy_vs_storage(build_cost_storage(a.distilled, a.cells, _json_arg(a.protocols, "--protocols")),
                        a.dataset, a.out)


def add_parser(sub) -> None:
    def common(p):
        p.add_argument("--protocols", required=True, help="JSON {method: the protocol its row reads}")
        p.add_argument("--distilled", nargs="*", default=[], help="distilled records (results/distilled/...pt)")
        p.add_argument("cells", nargs="*", help="evaluation cells (results/eval/...json)")

    p = sub.add_parser("robust-scores", help="DD-Ranking's label- and augmentation-robust scores of a grid")
    common(p)
    p.add_argument("--settings", default="{}",
                   help="JSON: label_weight, augmentation_weight, variant protocol templates")
    p.add_argument("--out-prefix", required=True)
    p.set_defaults(fn=cmd_robust)
    p = sub.add_parser("cost-storage", help="cost (time, device-hours, memory) and storage of a grid's sets")
    common(p)
    p.add_argument("--out-prefix", required=True)
    p.set_defaults(fn=cmd_cost_storage)
    p = sub.add_parser("acc-vs-storage", help="accuracy vs bytes stored per class, one dataset")
    common(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_acc_vs_storage)
