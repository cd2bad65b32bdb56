"""Paired baselines (docs/fair.md): every real-initialised method starts from Random's images for the same seed and
IPC (ddflow.data.paired), model k of every cell is seeded alike, and the tables' paired difference to Random with its
t-interval (ddflow.report.paired)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddflow import hparams
from ddflow.data import RealData, denormalize, get_info
from ddflow.data.paired import init_order
from ddflow.data.validation import carve
from ddflow.errors import DdflowError
from ddflow.methods import get_method
from ddflow.protocols.cell import model_stream
from ddflow.records import load_distilled
from ddflow.report.paired import paired_differences, paired_summary
from ddflow.report.tables import build_table, write_table
from ddflow.settings import distill_cell
from ddflow.stages.distill import build_method
from test_distill import ROOT

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small(mnist5k):
    """600 real mnist5k digits (60 per class, in the file's order), as float tensors."""
    idx = torch.cat([torch.nonzero(mnist5k.y_train == c).flatten()[:60] for c in range(10)]).sort().values
    x = mnist5k.x_train[idx]
    return RealData(x, mnist5k.y_train[idx], x[:10].clone(), mnist5k.y_train[idx][:10].clone(), mnist5k.info)


def _random_rows(data: RealData, ipc: int, seed: int) -> torch.Tensor:
    """Random's picks (indices into the full training split), built as the runner builds it."""
    hp = hparams.resolve("random", "mnist5k", ipc, "quick")
    built = build_method("random", hp, data, ipc, torch.Generator().manual_seed(7), CPU, None,
                         init_order(data, "mnist5k", seed))
    built.method.init()
    return built.method.result()["train_indices"]


def test_the_order_is_nested_deterministic_and_per_seed(small):
    a, b, other = (init_order(small, "mnist5k", s) for s in (0, 0, 1))
    assert torch.equal(a.first(10), b.first(10))                               # same (dataset, seed): same draw
    assert not torch.equal(a.first(10), other.first(10))
    one, ten = a.first(1), a.first(10).view(10, 10)
    assert torch.equal(ten[:, 0], one)                                         # Random at IPC 10 holds IPC 1's
    assert all(bool((small.y_train[ten[c]] == c).all()) and len(set(ten[c].tolist())) == 10 for c in range(10))
    assert a.replaced(10) == 0
    with pytest.raises(DdflowError, match="class 0 has 60"):
        a.first(61)


# method -> (hparams overrides at the quick preset, the attribute holding its initial set after init())
CASES = {
    "dm": ({}, "images"), "dsa": ({}, "images"), "dc": ({"init": "real"}, "images"),
    "cafe": ({"init": "real"}, "images"),
    "frepo": ({"pool": 1, "width": 8}, "images"), "isa": ({"pool": 1, "width": 8}, "images"),
    "kip": ({"target_batch": 100}, "images"), "rcig": ({"pool": 1, "width": 8}, "images"), "dm-isa": ({}, "images"),
}


@pytest.mark.parametrize("method", sorted(CASES))
@pytest.mark.parametrize("ipc", [1, 10])
def test_a_real_initialised_method_starts_from_randoms_images(small, method, ipc):
    """The method's initial images, in its own space (normalised or ZCA), are Random's images of the same seed and
    IPC in that space: the same rows of the training split, in the same order."""
    overrides, attr = CASES[method]
    hp = hparams.deep_merge(hparams.resolve(method, "mnist5k", ipc, "quick"), overrides)
    order = init_order(small, "mnist5k", 3)
    built = build_method(method, hp, small, ipc, torch.Generator().manual_seed(11), CPU, None, order)
    built.method.init()
    expected = built.data.x_train[_random_rows(small, ipc, 3)].to(torch.float64)
    assert get_method(method).init_pairing(hp, ipc) == "same"
    assert torch.allclose(getattr(built.method, attr).detach().to(torch.float64), expected, atol=1e-6)


def test_idc_tiles_the_first_ipc_times_factor_squared_of_randoms_order(small):
    """IDC's 'mix' (ops.multiformation.tile): IPC x factor^2 images per class, the first of the same order, image
    block k in patch k: patch 0 (top-left) of the IPC stored images is Random's IPC images, resized (nested, not the
    same set)."""
    ipc = 2
    hp = hparams.resolve("idc", "mnist5k", ipc, "quick")
    assert hp["init"] == "mix" and get_method("idc").init_pairing(hp, ipc) == "nested"
    built = build_method("idc", hp, small, ipc, torch.Generator().manual_seed(0), CPU, None,
                         init_order(small, "mnist5k", 0))
    built.method.init()
    s = 28 // int(hp["factor"])
    px = denormalize(small.x_train[_random_rows(small, ipc, 0)], small.info).clamp(0, 1)
    assert torch.allclose(built.method.images.detach()[:, :, :s, :s], F.interpolate(px, size=(s, s)), atol=1e-6)
    random_init = hparams.deep_merge(hp, {"init": "random"})
    assert get_method("idc").init_pairing(random_init, 1) == "same"
    assert get_method("dream").init_pairing(hparams.resolve("dream", "mnist5k", 1, "quick"), 1) == "own"


def test_not_paired_inits_say_so():
    assert get_method("dd").init_pairing({"init": "noise"}, 1) == "own"
    assert get_method("dc").init_pairing({"init": "noise"}, 1) == "own"
    assert get_method("herding").init_pairing({}, 1) == "own"
    assert get_method("rtp").init_pairing({"init": "xavier"}, 1) == "own"
    assert get_method("idm").init_pairing({"init": "real", "factor": 2}, 1) == "own"
    assert get_method("idm").init_pairing({"init": "real", "factor": 1}, 1) == "same"
    assert get_method("haba").init_pairing({"init": "real", "bases_per_class": None}, 10) == "same"
    assert get_method("haba").init_pairing({"init": "real", "bases_per_class": 2}, 10) == "nested"


def test_a_method_holding_out_the_validation_split_takes_the_next_images_it_can_see(small):
    """Carved data: the order is the full split's with the validation images removed; where one of Random's first
    n is held out, the next one of the order takes its place and replaced() counts it."""
    full = init_order(small, "mnist5k", 0)
    randoms = full.first(2).view(10, 2)
    val = np.array(sorted({int(randoms[0, 0]), int(randoms[3, 1]), int(full.rows[5][5])}))
    carved = carve(small, val)
    order = init_order(carved, "mnist5k", 0)
    got = torch.as_tensor(carved.train_rows)[order.first(2)].view(10, 2)   # back to full-split indices
    assert torch.equal(got[0], torch.stack([randoms[0, 1], full.rows[0][2]]))
    assert torch.equal(got[3], torch.stack([randoms[3, 0], full.rows[3][2]]))
    others = [c for c in range(10) if c not in (0, 3)]
    assert torch.equal(got[others], randoms[others])
    assert order.replaced(2) == 2 and order.replaced(1) == 1


def test_the_runner_pairs_dm_with_random_and_records_it(mnist5k_path, tmp_path):
    """Through the runner: DM's set at iteration 0 (its initial set) is Random's set; both records say 'same'."""
    rnd = distill_cell("random", "mnist5k", 1, 4, "quick", CPU, mnist5k_path, tmp_path / "r.pt")
    distill_cell("dm", "mnist5k", 1, 4, "quick", CPU, mnist5k_path, tmp_path / "dm.pt",
                 overrides={"iterations": 1, "snapshots": [0]}, snapshot_dir=tmp_path / "snaps")
    dm0 = load_distilled(tmp_path / "snaps" / "it0.pt")
    assert torch.equal(dm0.images, rnd.images)
    assert rnd.extra["paired_init"] == dm0.extra["paired_init"] == "same" and dm0.extra["init_replaced"] == 0


def test_every_methods_cell_seeds_its_models_alike(small):
    """model_stream names the protocol and the cell, not the method: model k of DM's and of Random's cell start
    from the same generator state."""
    from ddflow.records import DistilledSet
    info = get_info("mnist5k")
    sets = [DistilledSet(images=torch.zeros(10, 1, 28, 28), labels=torch.arange(10), method=m, dataset="mnist5k",
                         ipc=1, seed=2, mean=info.mean, std=info.std) for m in ("random", "dm", "an-import")]
    streams = {model_stream("dc", s) for s in sets}
    assert len(streams) == 1 and "dm" not in next(iter(streams))


def _cell(tmp_path, method, seed, accs, ipc=1, protocol="dc", **extra):
    p = tmp_path / f"{protocol}-{method}-{ipc}-{seed}.json"
    p.write_text(json.dumps({"protocol": protocol, "method": method, "dataset": "mnist", "ipc": ipc, "seed": seed,
                             "accuracies": accs, **extra}))
    return p


def test_paired_difference_and_t_interval_by_hand(tmp_path):
    """d = method − Random per (seed, model): seed 0 (50−40, 52−45), seed 1 (48−41, 51−43) = 10, 7, 7, 8:
    mean 8, sd √2 (n − 1), t(0.975, 3) = 3.182446, half-width 3.182446 · √2 / 2 = 2.250329."""
    cells = [_cell(tmp_path, "dm", 0, [50.0, 52.0], paired_init="same", init_replaced=0),
             _cell(tmp_path, "dm", 1, [48.0, 51.0], paired_init="same", init_replaced=0),
             _cell(tmp_path, "random", 0, [40.0, 45.0]), _cell(tmp_path, "random", 1, [41.0, 43.0, 60.0]),
             _cell(tmp_path, "dsa", 0, [47.0], paired_init="own"),
             _cell(tmp_path, "dc", 0, [47.0, 48.0], ipc=10)]        # no Random at IPC 10: no pair
    found = paired_differences(cells)
    dm = found[("dc", "dm", "mnist", 1)]
    assert dm["diff"] == pytest.approx(8.0) and dm["pairs"] == 4 and dm["seeds"] == 2  # Random's model 3 unpaired
    assert dm["low"] == pytest.approx(8.0 - 2.250329, abs=1e-5) and dm["high"] == pytest.approx(10.250329, abs=1e-5)
    dsa = found[("dc", "dsa", "mnist", 1)]
    assert dsa["diff"] == pytest.approx(7.0) and dsa["low"] is None and dsa["init"] == "own"
    assert ("dc", "dc", "mnist", 10) not in found and ("dc", "random", "mnist", 1) not in found
    assert paired_summary([1.0, 1.0])["high"] == pytest.approx(1.0)         # no spread: a zero-width interval

    table = build_table(ROOT / "workflow" / "papers" / "dream_t1.yaml", cells, datasets=["mnist"], ipcs=[1, 10])
    df = table["df"].set_index(["method", "ipc"])
    assert df.loc[("dm", 1), "paired_diff"] == pytest.approx(8.0) and df.loc[("dm", 1), "paired_pairs"] == 4
    assert df.loc[("random", 1), "paired_pairs"] == 0
    write_table(table, tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| DM — vs Random "))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["+8.0 [+5.7, +10.3]", "—"]
    row = next(line for line in md.splitlines() if line.startswith("| DSA — vs Random "))
    assert "+7.0 (n = 1) (own init)" in row
    assert "| Random — vs Random" not in md and "| DC — vs Random" not in md
    assert "95 % t-interval" in md
