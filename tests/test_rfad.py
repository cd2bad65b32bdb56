"""RFAD (yolky/RFAD) and rfad-isa: the networks and their initialisation, the random-feature kernel against an exact
NNGP computed here, the KRR losses and AdaBelief against direct computations, early stopping, rfad-isa reducing to
rfad, the finite-network protocol rfad-nn, resume equality."""
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddflow import hparams
from ddflow.data import RealData, get_info
from ddflow.methods import get_method
from ddflow.nets.rfad import NETS, build_rfad_net
from ddflow.ops.adabelief import AdaBelief
from ddflow.ops.rfad import platt_loss, random_features, rfad_isa_loss, rfad_kernel, rfad_mse, rfad_predict
from ddflow.protocols.rfad import rfad_nn_batch, rfad_nn_loss
from ddflow.settings import distill_cell as run
from test_distill import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TINY = {"width": 8, "n_models": 1, "batch_real": 16, "n_batches": 2, "valid_models": 2, "valid_every": 2,
        "iterations": 5}


# -- networks -------------------------------------------------------------------------------------------------
def test_rfad_nets_have_the_official_shapes_and_counts():
    """models.py ConvNet_wide (k 2 x 128 = 256 channels, chopped head: run_distillation.py line 140; distillation.py
    line 169 asks 4096 features = 256 x 4 x 4 at 32 px) and ConvNet (width 1024, GaussianLinear head: training.py
    line 24). Every conv pads 1, also on 1-channel data (models.py line 140), so 28 px pools to 14, 7, 3."""
    wide = NETS["RFADConvNetWide"](3, 10, 32)
    assert wide(torch.zeros(2, 3, 32, 32)).shape == (2, 4096)
    assert NETS["RFADConvNetWide"](1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape == (2, 256 * 3 * 3)
    assert sum(p.numel() for p in wide.parameters()) == (3 * 9 + 1) * 256 + 2 * (256 * 9 + 1) * 256
    net = NETS["RFADConvNet"](3, 10, 32)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in net.parameters()) == ((3 * 9 + 1) * 1024 + 2 * (1024 * 9 + 1) * 1024
                                                        + (1024 * 16 + 1) * 10)


def test_rfad_init_is_gaussian_with_fan_in_variance_and_bias_std_point_one():
    """models.py lines 161, 169 (Conv2d_gaussian) and 196, 202 (GaussianLinear): N(0, 2/fan_in) weights, N(0, 0.1^2)
    biases."""
    net = build_rfad_net(3, 10, 32, 256, 3, torch.Generator().manual_seed(0))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs[1:]:
        assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
        assert float(conv.bias.detach().std()) == pytest.approx(0.1, rel=0.15)
    assert float(net.classifier.weight.detach().std()) == pytest.approx(math.sqrt(2 / (256 * 16)), rel=0.05)
    again = build_rfad_net(3, 10, 32, 256, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    from ddflow.nets import build_net  # the network lookup keeps RFAD's initialisation
    looked_up = build_net("RFADConvNet", 1, 10, 28, torch.Generator().manual_seed(1))
    direct = build_rfad_net(1, 10, 28, 1024, 3, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(looked_up.parameters(), direct.parameters()))


# -- the kernel -------------------------------------------------------------------------------------------------
def _relu_expectation(cov: torch.Tensor) -> torch.Tensor:
    """E[relu(u) relu(v)] for (u, v) jointly Gaussian with covariance `cov` over all index pairs (arc-cosine, n=1)."""
    d = torch.sqrt(torch.diagonal(cov))
    norm = torch.outer(d, d)
    cos = (cov / norm).clamp(-1, 1)
    theta = torch.arccos(cos)
    return norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)


def exact_rfad_nngp(x: torch.Tensor, depth: int) -> torch.Tensor:
    """RFAD's kernel in the infinite-width limit, computed directly: the NNGP of ConvNet_wide (3x3 convs with zero
    padding, W_std^2 = 2, b_std^2 = 0.01, ReLU, 2x2 average pooling) with the full spatial covariance, then the
    readout 2 * mean over positions + 0.01 (kernels.py DCConvNetKernel's Dense layer). float64, over every
    (image, position) pair."""
    n, c, h, w = x.shape
    x = x.double()
    k = torch.einsum("achw,bcij->ahwbij", x, x) / c          # input covariance (a, p; b, q)
    for _ in range(depth):
        kp = F.pad(k, (1, 1, 1, 1, 0, 0, 1, 1, 1, 1))           # zero padding of both positions
        kp = kp.permute(0, 3, 1, 2, 4, 5)                       # (a, b, ph, pw, qh, qw)
        s = sum(kp[:, :, 1 + dh:1 + dh + h, 1 + dw:1 + dw + w, 1 + dh:1 + dh + h, 1 + dw:1 + dw + w]
                for dh in (-1, 0, 1) for dw in (-1, 0, 1))
        sigma = 2.0 * s / 9 + 0.01                               # conv: W_std^2 / fan_in summed, + b_std^2
        flat = sigma.permute(0, 2, 3, 1, 4, 5).reshape(n * h * w, n * h * w)
        act = _relu_expectation(flat).reshape(n, h, w, n, h, w)
        h, w = h // 2, w // 2                                    # 2x2 average pooling on both positions
        k = act[:, :2 * h, :2 * w, :, :2 * h, :2 * w].reshape(n, h, 2, w, 2, n, h, 2, w, 2).mean((2, 4, 7, 9))
    diag = torch.diagonal(k.reshape(n, h * w, n, h * w), dim1=1, dim2=3)   # (a, b, position)
    return 2.0 * diag.mean(-1) + 0.01


def test_random_feature_kernel_converges_to_the_exact_nngp_as_width_grows():
    """RFAD's kernel 2 phi phi^T + 0.01 of random ConvNet_wide features (distillation.py lines 179-183) is a
    Monte-Carlo estimate of the NNGP kernel: its relative error against the exact kernel shrinks with the number of
    features, at about 1 / sqrt(width x models)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 8, 8, generator=g)
    exact = exact_rfad_nngp(x, depth=3)
    errs = {}
    for width in (8, 64, 512):
        e = []
        for rep in range(4):
            nets = [build_rfad_net(2, None, 8, width, 3, torch.Generator().manual_seed(100 * rep + m)).double()
                    for m in range(4)]
            with torch.no_grad():
                phi = random_features(nets, x.double())
            e.append(float((rfad_kernel(phi, phi) - exact).norm() / exact.norm()))
        errs[width] = sum(e) / len(e)
    assert errs[512] < errs[64] < errs[8], errs
    assert errs[512] < 0.06, errs             # Monte-Carlo error ~ 1 / sqrt(4 models x 512) = 0.022 at 1x1 features
    assert errs[8] / errs[512] > 3.0, errs   # 1/sqrt(width): a factor 8 expected over 64x the width


def test_rfad_prediction_and_losses_equal_a_direct_computation():
    """distillation.py lines 183-184 and 219-229: K_ss = 2 phi phi^T + 0.01 + jit * trace/n * I solved in float64;
    preds = (2 phi_t phi_s^T + 0.01) W; Platt CE(exp(k) preds, y); MSE 0.5 * mean((y - preds)^2)."""
    g = torch.Generator().manual_seed(1)
    phi_s, phi_t = torch.randn(5, 7, generator=g), torch.randn(9, 7, generator=g)
    y_s, y = torch.randn(5, 3, generator=g), torch.randint(3, (9,), generator=g)
    jit = 5e-3
    ks = 2 * phi_s.numpy().astype(np.float64) @ phi_s.numpy().T + 0.01
    ks = ks + jit * np.eye(5) * np.trace(ks) / 5
    expected = (2 * phi_t.numpy().astype(np.float64) @ phi_s.numpy().T + 0.01) @ np.linalg.solve(ks, y_s.numpy())
    pred = rfad_predict(phi_t, phi_s, y_s, jit)
    assert pred.dtype == torch.float64
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-9, atol=1e-9)
    k = torch.tensor(0.7, dtype=torch.float64)
    logits = np.exp(0.7) * expected
    ce = np.mean([-(logits[i, y[i]] - np.log(np.exp(logits[i]).sum())) for i in range(9)])
    assert float(platt_loss(pred, y, k)) == pytest.approx(ce, rel=1e-9)
    y1 = F.one_hot(y, 3).double() - 1 / 3
    assert float(rfad_mse(pred, y1)) == pytest.approx(0.5 * np.mean((y1.numpy() - expected) ** 2), rel=1e-9)


def test_rfad_isa_loss_is_a_direct_integral_and_reduces_to_the_mse():
    """ISA's closed form (isa.py proto_train_step) on RFAD's KRR: the mean over l in [0, eps] of the squared residual
    at readout(phi_i) + l (readout(phi_i) - readout(phi_j)), computed by the midpoint rule; keep 1, eps 0 = RFAD's
    MSE."""
    g = torch.Generator().manual_seed(2)
    phi_s, phi_t = torch.randn(4, 6, generator=g), torch.randn(5, 6, generator=g)
    y_s, y_t = torch.randn(4, 3, generator=g), F.one_hot(torch.randint(3, (5,), generator=g), 3).float() - 1 / 3
    jit, eps = 5e-3, 0.5
    assert float(rfad_isa_loss(phi_t, y_t, phi_s, y_s, jit, 1.0, 0.0)) == pytest.approx(
        float(rfad_mse(rfad_predict(phi_t, phi_s, y_s, jit), y_t.double())), rel=1e-12)
    pred = rfad_predict(phi_t, phi_s, y_s, jit)
    err = (pred - y_t.double()).square().mean(1)
    kept = sorted(range(5), key=lambda i: -float(err[i]))[:4]      # floor(0.8 * 5) = 4 hardest
    z = F.normalize(phi_t[kept], dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2)
    partner = [kept[int(j)] for j in sim.argmax(1)]
    total, n = 0.0, 400
    for i, j in zip(kept, partner):
        for step in range(n):
            lam = (step + 0.5) / n * eps
            point = phi_t[i:i + 1] + lam * (phi_t[i:i + 1] - phi_t[j:j + 1])
            r = rfad_predict(point, phi_s, y_s, jit)[0] - (y_t[i] + lam * (y_t[i] - y_t[j])).double()
            total += float(r.square().mean()) / n
    expected = 0.5 * total / len(kept)
    assert float(rfad_isa_loss(phi_t, y_t, phi_s, y_s, jit, 0.8, eps)) == pytest.approx(expected, rel=1e-6)


def test_adabelief_follows_the_paper_update():
    """AdaBelief (Zhuang et al. 2020, Algorithm 2) as torch_optimizer/adabelief.py lines 146-191 computes it: eps added
    to the stored s_t, bias corrections on m and sqrt(s); RFAD passes eps 1e-16 (distillation.py lines 61-72)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = AdaBelief([p], lr=0.1, eps=1e-3)
    grads = [torch.tensor([0.5, 1.0]), torch.tensor([-0.2, 3.0]), torch.tensor([0.1, 0.0])]
    m, s, theta = np.zeros(2), np.zeros(2), np.array([1.0, -2.0])
    for t, gr in enumerate(grads, 1):
        gn = gr.double().numpy()
        m = 0.9 * m + 0.1 * gn
        s = 0.999 * s + 0.001 * (gn - m) ** 2 + 1e-3
        theta = theta - 0.1 / (1 - 0.9 ** t) * m / (np.sqrt(s) / np.sqrt(1 - 0.999 ** t) + 1e-3)
        p.grad = gr.double()
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-12)


# -- the method -------------------------------------------------------------------------------------------------
def _carved(mnist5k, n_val=20):
    y = mnist5k.y_train
    val = torch.cat([torch.nonzero(y == c).flatten()[:n_val // 10] for c in range(10)])
    fit = torch.ones(len(y), dtype=torch.bool)
    fit[val] = False
    idx = torch.nonzero(fit).flatten()
    return RealData(mnist5k.x_train[idx], y[idx], mnist5k.x_test, mnist5k.y_test, mnist5k.info,
                    x_val=mnist5k.x_train[val], y_val=y[val])


def _method(method, data, **changes):
    hp = hparams.resolve(method, "mnist5k", 1, "quick")
    hp.update(TINY, **changes)
    m = get_method(method)(hp, data, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    return m


def test_rfad_isa_without_selection_and_augmentation_is_rfad_with_the_mse(mnist5k):
    data = _carved(mnist5k)
    rfad, isa = _method("rfad", data, platt=False), _method("rfad-isa", data, keep=1.0, eps=0.0)
    for it in range(3):
        assert torch.equal(rfad.step(it)["loss"], isa.step(it)["loss"])
    assert torch.equal(rfad.images, isa.images) and torch.equal(rfad.transform, isa.transform)
    on = _method("rfad-isa", data)
    on.step(0), on.step(1)
    assert not torch.equal(on.images, isa.images)
    with pytest.raises(Exception, match="platt false"):
        _method("rfad-isa", data, platt=True)


def test_rfad_learns_images_transform_and_temperature_and_returns_the_best_set(mnist5k):
    """distillation.py lines 59-72: X, T (identity at start) and k move; best.npz holds X_best @ T_best (line 141)."""
    m = _method("rfad", _carved(mnist5k))
    x0 = m.images.detach().clone()
    assert torch.equal(m.transform, torch.eye(784))
    for it in range(5):
        m.step(it)
    assert not torch.equal(m.images, x0) and not torch.equal(m.transform, torch.eye(784))
    assert float(m.log_temp.detach()) != 0.0
    res = m.result()
    best = m.best
    assert torch.allclose(res["images"], (best["images"].flatten(1) @ best["transform"]).view(10, 1, 28, 28))
    assert torch.equal(res["labels"], torch.arange(10))        # labels not learned: the class labels
    assert res["rfad_log_temp"] == pytest.approx(float(best["log_temp"]))
    assert res["best_iter"] in (0, 2, 4, 5)


def test_rfad_early_stopping_follows_the_official_rule(mnist5k):
    """distillation.py lines 104, 130-147: validation every 40 iterations; stop at the first check later than
    best_iter + patience (and than patience); the best set is the one with the lowest validation loss."""
    m = _method("rfad", _carved(mnist5k), patience=1000, valid_every=40)
    losses = {0: 3.0, 40: 2.0, 80: 1.0}
    stops = []
    for it in range(0, 1400, 40):
        m.record_validation(it, losses.get(it, 1.5), 0.5)
        stops.append((it, m.stopped))
        if m.stopped:
            break
    assert m.best_iter == 80 and m.best_loss == 1.0
    assert stops[-1] == (1120, True) and stops[-2] == (1080, False)


def test_rfad_resumes_exactly(mnist5k_path, tmp_path):
    """A killed distillation resumed from its resume file equals an uninterrupted one (random networks, real
    batches, AdaBelief state, the best set so far)."""
    from ddflow.data import load_real
    from ddflow.data.validation import write_split
    y = load_real(mnist5k_path, get_info("mnist5k")).y_train.numpy()
    split = tmp_path / "val.npz"
    write_split(y, 10, {"per_class": 5, "seed": 0}, "mnist5k", split)
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    common = dict(inputs={"validation": str(split)}, hp_dir=hp_dir, overrides=dict(TINY, iterations=6), save_every=1)
    full = run("rfad", "mnist5k", 1, 0, "quick", CPU, mnist5k_path, tmp_path / "full.pt", **common)
    resume = tmp_path / "r.resume.pt"
    assert run("rfad", "mnist5k", 1, 0, "quick", CPU, mnist5k_path, tmp_path / "b.pt", resume=resume,
               stop_after=3, **common) is None
    again = run("rfad", "mnist5k", 1, 0, "quick", CPU, mnist5k_path, tmp_path / "b.pt", resume=resume, **common)
    assert torch.equal(full.images, again.images) and torch.equal(full.labels, again.labels)
    assert full.extra["best_iter"] == again.extra["best_iter"]
    assert full.extra["rfad_log_temp"] == again.extra["rfad_log_temp"]
    assert "validation split" in full.extra["seen"]


# -- rfad-nn --------------------------------------------------------------------------------------------------
def test_rfad_nn_batch_keeps_the_official_label_scaling_quirk():
    """training.py lines 40-50: the whole set (<= 513 images) with labels x label_scale; a drawn batch (with
    replacement) keeps its labels unscaled."""
    x, y = torch.randn(6, 1, 4, 4), torch.randn(6, 3)
    xb, yb = rfad_nn_batch(x, y, 513, 8.0, "unscaled", torch.Generator())
    assert torch.equal(xb, x) and torch.equal(yb, 8.0 * y)
    g = torch.Generator().manual_seed(0)
    xb, yb = rfad_nn_batch(x, y, 4, 8.0, "unscaled", g)
    idx = torch.randint(6, (4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(xb, x[idx]) and torch.equal(yb, y[idx])
    _, yb = rfad_nn_batch(x, y, 4, 8.0, "scaled", torch.Generator().manual_seed(0))
    assert torch.equal(yb, 8.0 * y[idx])


def test_rfad_nn_loss_is_centred_mse_with_decay_towards_the_initialisation():
    """training.py lines 59-73: mean((f - f0 - y)^2) / s^2 + wd * sum ||theta - theta0||^2."""
    net = build_rfad_net(1, 3, 8, 4, 2, torch.Generator().manual_seed(0))
    net0 = build_rfad_net(1, 3, 8, 4, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    x, y = torch.randn(5, 1, 8, 8), torch.randn(5, 3)
    got = rfad_nn_loss(net, net0, x, y, 8.0, 1e-3, True)
    n_params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        expected = ((net(x) - net0(x) - y) ** 2).mean() / 64 + 1e-3 * n_params * 1e-4
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    uncentred = rfad_nn_loss(net, net0, x, y, 8.0, 1e-3, False)
    with torch.no_grad():
        expected = ((net(x) - y) ** 2).mean() / 64 + 1e-3 * sum(float(p.square().sum()) for p in net.parameters())
    assert float(uncentred) == pytest.approx(float(expected), rel=1e-5)


# -- import ---------------------------------------------------------------------------------------------------
def test_rfad_best_npz_imports_for_rfad_nn(tmp_path):
    """distillation.py line 146: best.npz = images (N, C, H, W) in the distillation's space, labels (N, classes)
    targets (one_hot - 1/C unless learned), valid_loss, k, jit; as the released distilled_images_final sets."""
    from ddflow.errors import DdflowError
    from ddflow.interop.imports import build_records, check_entry, settings_method
    g = torch.Generator().manual_seed(0)
    order = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])           # any class order: the import sorts by class
    images = torch.randn(10, 1, 28, 28, generator=g)
    labels = F.one_hot(order, 10).float() - 0.1
    path = tmp_path / "best.npz"
    np.savez(path, images=images.numpy(), labels=labels.numpy(), valid_loss=np.float64(1.15), k=np.float32(3.7),
             jit=np.float64(5e-3))
    entry = check_entry("rfad-released", {"path": str(path), "format": "rfad", "dataset": "mnist5k", "ipc": 1,
                                          "space": "normalized"}, "quick")
    assert entry.protocols == ["rfad-nn"] and entry.eval_as == "rfad"
    (rec,) = build_records(entry, "quick")
    back = torch.argsort(order)
    assert torch.equal(rec.images, images[back]) and torch.equal(rec.labels, labels[back])
    assert rec.extra["rfad_log_temp"] == pytest.approx(3.7) and rec.extra["rfad_jit"] == 5e-3
    assert settings_method(rec) == "rfad"
    np.savez(tmp_path / "bad.npz", images=images.numpy(), labels=order.numpy())
    with pytest.raises(DdflowError, match=r"\(N, classes\) targets"):
        build_records(check_entry("x", {"path": str(tmp_path / "bad.npz"), "format": "rfad", "dataset": "mnist5k",
                                        "ipc": 1, "space": "normalized"}, "quick"), "quick")


def test_rfad_nn_keeps_the_best_validation_network_and_stops_after_patience(monkeypatch, mnist5k):
    """training.py lines 75-93: validation accuracy every `valid_every` iterations before that iteration's step; a
    strictly better accuracy keeps a copy of the network; stop once i >= best_iter + patience."""
    import copy

    import ddflow.protocols.rfad as proto
    scripted = iter([0.1, 0.5, 0.5, 0.3, 0.4, 0.9])
    seen = []

    def fake_accuracy(net, x, y, device, out0=0.0):
        seen.append(copy.deepcopy(net))
        return next(scripted)

    monkeypatch.setattr(proto, "centred_accuracy", fake_accuracy)
    data = _carved(mnist5k)
    settings = {**hparams.resolve("rfad", "mnist5k", 1, "quick")["eval"]["rfad-nn"], "width": 4, "depth": 3,
                "centering": True, "batch": 513, "minibatch_labels": "unscaled", "iterations": 100,
                "valid_every": 2, "patience": 5}
    x, y = data.x_train[:10], F.one_hot(data.y_train[:10], 10).float() - 0.1
    best, net0, acc = proto.train_rfad_nn(x, y, data, settings, torch.Generator().manual_seed(0), CPU, "t")
    # checks at 0, 2, 4, 6: best at 2 (0.5; the equal 0.5 at 4 is not better); the stop test runs every iteration
    # (training.py line 89), so the loop breaks at i = 7 >= 2 + 5, before the check at 8
    assert len(seen) == 4 and acc == 0.5
    assert all(torch.equal(a, b) for a, b in zip(best.parameters(), seen[1].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(best.parameters(), seen[0].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(net0.parameters(), seen[0].parameters()))


def test_rfad_zca_kind_is_rfads_get_zca_matrix():
    """yolky/RFAD data.py get_zca_matrix (lines 134-143) after the per-channel standardisation of get_cifar10 (lines
    78-79, torch.std: unbiased): cov = X^T X / N without centring, reg = 0.1 trace / d, W = U (S + reg)^-1/2 U^T."""
    from ddflow.data.zca import fit_zca
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 4, 4, generator=g) * torch.tensor([1.0, 0.5, 0.8]).view(1, 3, 1, 1)
    zca = fit_zca(x, "rfad", 0.1)
    xs = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    flat = xs.reshape(40, -1).double().numpy()
    cov = flat.T @ flat / 40
    reg = 0.1 * np.trace(cov) / cov.shape[0]
    u, s, _ = np.linalg.svd(cov + reg * np.eye(cov.shape[0]))
    w = (u * s ** -0.5) @ u.T
    np.testing.assert_allclose(zca.apply(x).reshape(40, -1).numpy(), flat @ w, rtol=1e-4, atol=1e-4)
    back = zca.inverse(zca.apply(x))
    assert torch.allclose(back, x, atol=1e-4)
