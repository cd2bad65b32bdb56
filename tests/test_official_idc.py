"""IDC and DREAM pinned to the official code: snu-mllab/Efficient-Dataset-Condensation (condense.py, train.py,
misc/utils.py at ceac95a) and lyq312318224/DREAM (condense.py at 595e3c1). Independent computations: a float64 bilinear
and nearest resize written from their index rules, a numpy sampler of the official rand_bbox.

Not tested here: the `idc` evaluation schedule (MultiStepLR milestones) and cutout under CutMix, which
tests/test_idc.py pins (test_protocol_follows_idcs_cutout_removal_and_counts_coinciding_milestones_twice).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddflow import hparams
from ddflow.augment.cutmix import cutmix_draw, maybe_cutmix
from ddflow.data import RealData, get_info
from ddflow.methods import get_method
from ddflow.methods import idc as idc_mod
from ddflow.ops.multiformation import decode, tile

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- independent resizes --------------------------------------------------------------------------------------
def _bilinear_1d(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix of bilinear resizing with align_corners=False (nn.Upsample's default):
    source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped below at 0; neighbours floor and floor + 1 (the last
    row repeats at the border)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        m[i, i0] += 1 - w
        m[i, i1] += w
    return m


def _bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size), separable bilinear in float64."""
    rows, cols = _bilinear_1d(img.shape[1], size), _bilinear_1d(img.shape[2], size)
    return np.einsum("ij,cjk,lk->cil", rows, img, cols)


def _nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(C, H, W) -> (C, h, w), F.interpolate's default 'nearest': source index floor(i * H / h)."""
    ri = [min(i * img.shape[1] // h, img.shape[1] - 1) for i in range(h)]
    ci = [min(j * img.shape[2] // w, img.shape[2] - 1) for j in range(w)]
    return img[:, ri][:, :, ci]


@pytest.mark.parametrize("size,factor", [(28, 2), (28, 3), (32, 2)])
def test_decode_upsamples_every_crop_bilinearly_in_crop_major_order(size, factor):
    """condense.py Synthesizer.decode_zoom (lines 102-121): pad a size not divisible by the factor with 0.5 at the
    bottom / right, crops of ceil(size / factor) taken row-major (i, then j) and concatenated crop by crop, resized
    by nn.Upsample(size, mode='bilinear') (line 51, align_corners False); labels repeated in the same order."""
    g = torch.Generator().manual_seed(size + factor)
    x = torch.rand(3, 2, size, size, generator=g)
    y = torch.tensor([4, 1, 7])
    out, labels = decode(x, y, factor)
    assert out.shape == (3 * factor * factor, 2, size, size)
    assert labels.tolist() == [4, 1, 7] * factor * factor
    s = math.ceil(size / factor)
    padded = np.full((3, 2, s * factor, s * factor), 0.5)
    padded[:, :, :size, :size] = x.double().numpy()
    k = 0
    for i in range(factor):
        for j in range(factor):
            for n in range(3):
                crop = padded[n, :, i * s:(i + 1) * s, j * s:(j + 1) * s]
                ref = torch.from_numpy(_bilinear(crop, size)).float()
                torch.testing.assert_close(out[k * 3 + n], ref, rtol=0, atol=1e-5)
            k += 1


@pytest.mark.parametrize("size,factor", [(28, 2), (28, 3), (32, 3)])
def test_tile_resizes_each_image_nearest_into_its_patch(size, factor):
    """condense.py Synthesizer.init 'mix' (lines 63-84; DREAM condense.py lines 539-568): images [k*n, (k+1)*n)
    go to patch k (row-major), each F.interpolate(..., size=(h_r, w_r)) with the default mode 'nearest'; patch
    sides size // factor, the first size % factor rows / columns of patches one pixel larger."""
    n = 2
    g = torch.Generator().manual_seed(size * factor)
    parts = torch.rand(n * factor * factor, 3, size, size, generator=g)
    out = tile(parts, factor)
    assert out.shape == (n, 3, size, size)
    s, rem = size // factor, size % factor
    sides = [s + 1 if i < rem else s for i in range(factor)]
    starts = np.concatenate([[0], np.cumsum(sides)])
    src = parts.double().numpy()
    for i in range(factor):
        for j in range(factor):
            k = i * factor + j
            for m in range(n):
                ref = _nearest(src[k * n + m], sides[i], sides[j])
                got = out[m, :, starts[i]:starts[i + 1], starts[j]:starts[j + 1]]
                assert torch.equal(got, torch.from_numpy(ref).float()), (i, j, m)


# ---- CutMix ----------------------------------------------------------------------------------------------------
def _official_boxes(rng: np.random.Generator, draws: int, height: int, width: int, beta: float) -> np.ndarray:
    """misc/utils.py rand_bbox (lines 170-186) with lam ~ Beta(beta, beta) (train.py line 203), written for an
    (N, C, height, width) batch: cut ratio sqrt(1 - lam), sides int(side * ratio), uniform integer centre, the box
    centre +- side // 2 clipped to the image. Rows: (y1, y2, x1, x2)."""
    lam = rng.beta(beta, beta, draws)
    cut = np.sqrt(1.0 - lam)
    ch, cw = (height * cut).astype(int), (width * cut).astype(int)
    cy, cx = rng.integers(0, height, draws), rng.integers(0, width, draws)
    return np.stack([np.clip(cy - ch // 2, 0, height), np.clip(cy + ch // 2, 0, height),
                     np.clip(cx - cw // 2, 0, width), np.clip(cx + cw // 2, 0, width)], 1)


def _chi2_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Chi-square statistic of two samples of small integers having one distribution (bins with >= 5 expected)."""
    values = np.union1d(a, b)
    ca = np.array([(a == v).sum() for v in values], float)
    cb = np.array([(b == v).sum() for v in values], float)
    keep = (ca + cb) * min(len(a), len(b)) / (len(a) + len(b)) >= 5
    ca, cb = ca[keep], cb[keep]
    k1, k2 = math.sqrt(len(b) / len(a)), math.sqrt(len(a) / len(b))
    stat = float((((k1 * ca - k2 * cb) ** 2) / (ca + cb)).sum())
    return stat, int(keep.sum()) - 1


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_cutmix_boxes_follow_rand_bbox_exactly_and_in_distribution(beta):
    """misc/utils.py rand_bbox (lines 170-186) and train.py train_epoch (lines 200-209): every draw obeys the box
    rules for its own lam (side int(side * sqrt(1 - lam)), centre +- side // 2 clipped, the own-label weight
    1 - box area / image area), and the boxes of 20000 draws match 200000 draws of an independent numpy sampler
    (chi-square per coordinate and for the area). A non-square 24 x 32 image pins which side is which."""
    height, width = 24, 32
    g = torch.Generator().manual_seed(0)
    boxes, lams = [], []
    for _ in range(20000):
        d = cutmix_draw(2, height, width, g, beta)
        y1, y2, x1, x2 = d["box"]
        lam = d["lam"]
        ch, cw = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        assert any((y1, y2) == (min(max(c - ch // 2, 0), height), min(c + ch // 2, height)) for c in range(height))
        assert any((x1, x2) == (min(max(c - cw // 2, 0), width), min(c + cw // 2, width)) for c in range(width))
        assert d["keep"] == pytest.approx(1 - (y2 - y1) * (x2 - x1) / (height * width))
        boxes.append((y1, y2, x1, x2))
        lams.append(lam)
    ours = np.array(boxes)
    ref = _official_boxes(np.random.default_rng(1), 200000, height, width, beta)
    columns = [ours[:, c] for c in range(4)] + [(ours[:, 1] - ours[:, 0]) * (ours[:, 3] - ours[:, 2]) // 16]
    ref_cols = [ref[:, c] for c in range(4)] + [(ref[:, 1] - ref[:, 0]) * (ref[:, 3] - ref[:, 2]) // 16]
    for name, a, b in zip(("y1", "y2", "x1", "x2", "area"), columns, ref_cols):
        stat, df = _chi2_two_sample(a, b)
        # mean df, sd sqrt(2 df): 6 sd is far beyond chance (the seeds are fixed: the test is deterministic)
        assert stat < df + 6 * math.sqrt(2 * df), (name, stat, df)
    # lam itself ~ Beta(beta, beta): its mean 1/2 and variance 1 / (4 (2 beta + 1))
    lam = np.array(lams)
    assert abs(lam.mean() - 0.5) < 0.02 and abs(lam.var() - 1 / (4 * (2 * beta + 1))) < 0.01


def test_cutmix_is_applied_with_probability_mix_p():
    """train.py line 200-201: `r = np.random.rand(1); if r < args.mix_p and mixup == 'cut'`."""
    g = torch.Generator().manual_seed(3)
    hits = sum(maybe_cutmix(2, 8, 8, g, 0.3, 1.0) is not None for _ in range(4000))
    assert abs(hits / 4000 - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)


# ---- the condensation loop ---------------------------------------------------------------------------------------
def _class_constant_data(seed=0, per_class=12):
    """Every image of class c is the same random pixel pattern u_c (in [0.05, 0.95]), normalised."""
    info = get_info("mnist5k")
    g = torch.Generator().manual_seed(seed)
    u = 0.05 + 0.9 * torch.rand(10, 1, 28, 28, generator=g)
    y = torch.arange(10).repeat(per_class)
    x = (u[y] - info.mean[0]) / info.std[0]
    return RealData(x, y, x[:10].clone(), y[:10].clone(), info)


def _random_data(seed=0, per_class=12):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat(per_class)
    x = torch.randn(len(y), 1, 28, 28, generator=g)
    return RealData(x, y, x[:10].clone(), y[:10].clone(), get_info("mnist5k"))


def _method(name, data, ipc=2, **over):
    hp = hparams.resolve(name, "mnist5k", ipc, "quick")
    hp.update({"net": "ConvNetW32", "inner_loops": 1, "n_data": 8, "batch_real": 4, "batch_syn_max": 8, **over})
    if name == "dream":
        hp["representative"] = {"every": 1, "pool": None, "kmeans_iters": 3}
    m = get_method(name)(hp, data, ipc, torch.Generator().manual_seed(5), CPU)
    m.init()
    return m


def _spy_nets(monkeypatch):
    """Every network the IDC module builds, with the inputs of each forward call and its weights when built."""
    built = []
    real = idc_mod.build_net

    def spy(*a, **kw):
        net = real(*a, **kw)
        rec = {"net": net, "inputs": [], "state": {k: v.clone() for k, v in net.state_dict().items()}}
        net.register_forward_pre_hook(lambda mod, args: rec["inputs"].append(args[0].detach().clone()))
        built.append(rec)
        return net

    monkeypatch.setattr(idc_mod, "build_net", spy)
    return built


def test_matching_augments_real_and_synthetic_batch_with_one_shared_draw(monkeypatch):
    """condense.py line 532: `img_aug = aug(torch.cat([img, img_syn]))` with aug = DiffAug(batch=True) (line 362):
    ONE draw for the real and the synthetic batch. Every image of class c here is the same pattern and the
    synthetic images start as such real images (init random, factor 1): under one shared draw every image the
    matching network sees for class c is the same, and differs from the un-augmented pattern."""
    data = _class_constant_data()
    built = _spy_nets(monkeypatch)
    m = _method("idc", data, factor=1, init="random", aug_match="color_crop_cutout", n_data=0)  # no net update
    m.step(0)
    inputs = built[-1]["inputs"]
    assert len(inputs) == 2 * 10                         # per class: the real batch, then the synthetic batch
    for c in range(10):
        real, syn = inputs[2 * c], inputs[2 * c + 1]
        assert len(real) == 4 and len(syn) == 2
        both = torch.cat([real, syn])
        torch.testing.assert_close(both, both[:1].expand_as(both), rtol=0, atol=1e-5)
        assert (both[0] - data.x_train[c]).abs().max() > 0.1  # the draw did transform the images


def test_one_image_optimiser_step_per_class_on_that_class_only(monkeypatch):
    """condense.py lines 526-541: for c in range(nclass): the class's matching loss, optim_img.zero_grad(),
    loss.backward(), optim_img.step(): nclass steps per inner loop, each with the gradient of one class's images."""
    m = _method("idc", _random_data(), inner_loops=2)
    grads = []
    real_step = m.opt.step

    def step(*a, **kw):
        grads.append(m.images.grad.detach().clone())
        return real_step(*a, **kw)

    monkeypatch.setattr(m.opt, "step", step)
    m.step(0)
    assert len(grads) == 2 * 10
    for k, gr in enumerate(grads):
        c = k % 10
        rows = gr.flatten(1).abs().sum(1)
        assert (rows[2 * c:2 * c + 2] > 0).all()
        assert rows.sum() == rows[2 * c:2 * c + 2].sum()   # nothing from the other classes


@pytest.mark.parametrize("n_data,batches", [(10, 3), (8, 2), (3, 1)])
def test_network_update_sees_n_data_rounded_up_to_whole_real_batches(monkeypatch, n_data, batches):
    """train.py train_epoch lines 189-252 on loader_real (batches of batch_real, condense.py lines 458-466):
    `num_exp += len(target); if n_data > 0 and num_exp >= n_data: break`: whole batches until at least n_data
    images were seen, i.e. ceil(n_data / batch_real) batches of batch_real distinct images."""
    built = _spy_nets(monkeypatch)
    m = _method("idc", _random_data(), n_data=n_data, batch_real=4)
    m.step(0)
    inputs = built[-1]["inputs"][2 * 10:]                 # after the 10 classes' real + synthetic forwards
    assert [len(x) for x in inputs] == [4] * batches


def test_dream_first_outer_iteration_matches_with_the_kmeans_network(monkeypatch):
    """DREAM condense.py line 517: the model is built before the initialisation, which clusters with it (lines
    526-533 kmean; 539-568 mix, k-means-selected unless f2_init is random); line 601
    `if it % args.fix_iter == 0 and it != 0`: outer iteration 0 keeps that model (a fresh one from iteration 1 on)."""
    built = _spy_nets(monkeypatch)
    m = _method("dream", _random_data(), ipc=1, n_data=4)
    assert m.hp["init"] == "kmeans" and len(built) == 1                                 # the k-means network
    used = []
    real_match = m._match_class

    def match(net, c, idx):
        used.append((net, {k: v.clone() for k, v in net.state_dict().items()}))
        return real_match(net, c, idx)

    m._match_class = match
    m.step(0)
    assert len(built) == 1 and used[0][0] is built[0]["net"]
    for k, v in built[0]["state"].items():               # untouched since the clustering
        assert torch.equal(used[0][1][k], v), k
    m.step(1)
    assert len(built) == 2 and used[-1][0] is built[1]["net"]
