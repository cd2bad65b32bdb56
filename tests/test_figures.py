"""Figures fit for a paper: a fixed, distinct colour-and-marker pair per method, the legend outside the axes, a
readable size, a vector copy beside each PNG, and image grids drawn on a per-set display range that says when
values were clipped."""
import json

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

import ddflow.methods  # noqa: F401  (registers every method)
from ddflow.methods.registry import REGISTRY
from ddflow.records import DistilledSet
from ddflow.report import figures
from ddflow.report.figures import (
    FIG_DPI,
    FIG_SIZE,
    accuracy_vs_ipc,
    display_range,
    distilled_grid,
    legend_outside,
    range_note,
    vector_path,
)
from ddflow.report.styles import METHOD_STYLES, N_PAIRS, method_style


def test_every_registry_method_has_its_own_fixed_colour_and_marker_pair():
    missing = sorted(set(REGISTRY) - set(METHOD_STYLES))
    assert not missing, f"add {missing} to report/styles.py METHOD_ORDER"
    pairs = [METHOD_STYLES[m] for m in METHOD_STYLES]
    assert len(set(pairs)) == len(pairs) <= N_PAIRS                  # distinct across the whole table
    assert N_PAIRS - len(METHOD_STYLES) >= 10                       # spare pairs for imported sets and new methods
    for m in ("dd", "ld", "rtp", "kip", "rfad", "rcig", "rfad-isa", "rcig-isa"):
        assert m in METHOD_STYLES
    # the same method gets the same pair every call; an id outside the table gets a spare pair, never a table's
    assert method_style("dm") == method_style("dm") == METHOD_STYLES["dm"]
    assert method_style("my-import") == method_style("my-import") and method_style("my-import") not in pairs


def _cells(tmp_path, methods, ipcs=(1, 10)):
    out = []
    for i, m in enumerate(methods):
        for ipc in ipcs:
            p = tmp_path / f"{m}-{ipc}.json"
            p.write_text(json.dumps({"protocol": "dc", "method": m, "dataset": "mnist5k", "ipc": ipc, "seed": 0,
                                     "accuracies": [40.0 + i + ipc, 41.0 + i + ipc]}))
            out.append(p)
    return out


def test_accuracy_vs_ipc_is_readable_with_a_pdf_beside_it_and_one_pair_per_method(tmp_path, monkeypatch):
    drawn = {}
    save = figures.save_figure

    def capture(fig, out, **kw):  # the lines' styles and the legend's place, before the figure is closed
        ax = fig.axes[0]
        drawn["styles"] = {c.get_label(): (c.lines[0].get_color(), c.lines[0].get_marker()) for c in ax.containers}
        fig.canvas.draw()
        drawn["legend"], drawn["axes"] = ax.get_legend().get_window_extent(), ax.get_window_extent()
        save(fig, out, **kw)

    monkeypatch.setattr(figures, "save_figure", capture)
    methods = sorted(REGISTRY)
    out = tmp_path / "acc.png"
    accuracy_vs_ipc(_cells(tmp_path, methods), "mnist5k", out)
    assert vector_path(out).read_bytes()[:5] == b"%PDF-"
    w, h = Image.open(out).size
    assert w >= FIG_SIZE[0] * FIG_DPI * 0.9 and h >= FIG_SIZE[1] * FIG_DPI * 0.9, (w, h)
    styles = drawn["styles"]
    assert len(styles) == len(methods) and len(set(styles.values())) == len(methods)
    assert styles["dm (dc)"] == METHOD_STYLES["dm"]
    assert drawn["legend"].x0 >= drawn["axes"].x1                     # the legend is right of the axes


def test_legend_outside_leaves_the_axes_free():
    fig, ax = plt.subplots(figsize=FIG_SIZE)
    for i in range(20):
        ax.plot([0, 1], [i, i], label=f"method {i}")
    legend_outside(ax)
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    plt.close(fig)


def _set(images: torch.Tensor) -> DistilledSet:
    """A CIFAR-10 set (10 classes) of the given (10 x ipc, 3, 32, 32) images: a record that loads."""
    n = images.shape[0]
    return DistilledSet(images=images, labels=torch.arange(n) % 10, method="haba", dataset="cifar10", ipc=n // 10,
                        seed=0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), space="pixels")


def test_a_set_within_0_1_is_shown_as_it_is_and_says_nothing_was_clipped():
    lo, hi, clipped, nonfinite = display_range(torch.rand(4, 1, 8, 8))
    assert (lo, hi, clipped, nonfinite) == ([0.0], [1.0], 0.0, 0)
    assert range_note(lo, hi, clipped, nonfinite) == "pixels shown on [0, 1], none clipped"


def test_a_grid_of_a_set_with_outliers_says_its_range_and_what_was_clipped(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g) * 2 - 0.5           # values in [-0.5, 1.5] ...
    x[0, 0, 0, 0], x[1, 2, 3, 3] = 7e7, float("nan")             # ... one huge outlier, one NaN
    lo, hi, clipped, nonfinite = display_range(x)
    assert hi[0] < 2 and lo[1] < 0 and hi[1] > 1                   # the outlier does not set the range
    assert 0 < clipped < 0.05 and nonfinite == 1
    y = torch.cat([x[:3]] * 4)
    y[0] = 7e7                                                     # a whole diverged image (1 of 12)
    lo, hi, clipped, _ = display_range(y)
    assert (hi < 2).all() and clipped > 1 / 12
    assert "1 non-finite" in range_note(*display_range(x))
    # a stored set is finite (a record with NaN does not load: ddflow.records.check_record), but may hold outliers
    s = torch.rand(20, 3, 32, 32, generator=g) * 2 - 0.5
    s[0, 0, 0, 0] = 7e7
    path = tmp_path / "s0.pt"
    _set(s).save(path)
    titles = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure",
                        lambda fig, out, **kw: (titles.append(fig._suptitle.get_text()), save(fig, out, **kw)))
    out = tmp_path / "grid.png"
    distilled_grid(path, out)
    assert "clipped" in titles[0] and "per channel" in titles[0] and "non-finite" not in titles[0], titles[0]
    assert "none clipped" not in titles[0]
    assert out.stat().st_size > 1000 and vector_path(out).read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("value", [1e9, -1e9])
def test_a_set_of_huge_values_everywhere_is_drawn_on_its_own_range(value):
    x = torch.full((2, 1, 4, 4), value) + torch.arange(16.0).reshape(1, 1, 4, 4)
    lo, hi, clipped, _ = display_range(x)
    assert (hi[0] > 0.9e9) if value > 0 else (lo[0] < -0.9e9)      # the range follows the set, not [0, 1]
    assert clipped < 0.05


def test_one_grid_command_draws_each_set_into_its_own_file_and_refuses_unpaired_paths(tmp_path, capsys):
    """Rule grid_figures draws every set of a dataset in one process: each --distilled into the --out at its place."""
    from ddflow.cli import main
    g = torch.Generator().manual_seed(1)
    sets = [tmp_path / f"s{i}.pt" for i in (1, 2)]
    for ipc, path in zip((1, 10), sets):
        _set(torch.rand(10 * ipc, 3, 32, 32, generator=g)).save(path)
    outs = [tmp_path / "a" / "one.png", tmp_path / "b" / "two.png"]
    assert main(["grid", "--distilled", *map(str, sets), "--out", *map(str, outs)]) == 0
    assert Image.open(outs[0]).size[0] < Image.open(outs[1]).size[0]  # IPC 1, then IPC 10: ten images a row
    assert all(vector_path(p).read_bytes()[:5] == b"%PDF-" for p in outs)
    assert main(["grid", "--distilled", *map(str, sets), "--out", str(tmp_path / "c.png")]) == 2
    assert "2 --distilled sets but 1 --out paths" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
