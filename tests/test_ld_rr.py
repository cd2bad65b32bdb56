"""LD's ridge-regression variant (ondrejbohdal/label-distillation at 7ebc088, label_distillation_rr.py, `variant:
rr`): the closed-form solve against the primal normal equations, the label gradient through the solve against
finite differences, the distillation's step against the official step written out, protocol `ld` on an RR set
against the official test loop written out, resume equality."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddflow.data.sources import load_arrays
from ddflow.data.validation import write_split
from ddflow.errors import DdflowError
from ddflow.nets.base import FeatureClassifier
from ddflow.ops.ldrr import RRLearner, embed, ridge_weights, rr_logits
from ddflow.settings import distill_cell as run
from tiny_workflow import write_tiny_mnist5k

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")
RR = {"ridge_lambda": 1.0, "rr_alpha": 0.01, "lr_calibration": 0.01}


def _official_local_weights(feature_add_bias, labels, lam=1.0):
    """label_distillation_rr.py get_local_weights, lines 1036-1049, as written there (torch.inverse)."""
    kernel_matrix = feature_add_bias.matmul(feature_add_bias.transpose(0, 1))
    ridge_obj = kernel_matrix + lam * torch.eye(len(feature_add_bias), dtype=feature_add_bias.dtype)
    return feature_add_bias.transpose(0, 1).matmul(torch.inverse(ridge_obj)).matmul(labels)


def test_ridge_solve_equals_the_primal_normal_equations_and_the_official_kernel_form():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1)
    lam = 1.0
    ours = ridge_weights(feats, labels, lam)
    phi = torch.cat([feats, torch.ones(6, 1, dtype=torch.float64)], 1)
    # argmin_W ||phi W - Y||^2 + lam ||W||^2 (bias row regularised too): (phi^T phi + lam I) W = phi^T Y
    primal = torch.linalg.solve(phi.T @ phi + lam * torch.eye(6, dtype=torch.float64), phi.T @ labels)
    assert ours.shape == (6, 3)
    assert torch.allclose(ours, primal, atol=1e-12)
    assert torch.allclose(ours, _official_local_weights(phi, labels, lam), atol=1e-12)
    # the objective's gradient vanishes there; a perturbed W is worse
    assert (phi.T @ (phi @ ours - labels) + lam * ours).abs().max() < 1e-12
    # model_architectures.py lines 407-410: the last row is the bias
    assert torch.allclose(rr_logits(feats, ours), phi @ ours)


class _Tiny(FeatureClassifier):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh())
        self.feature_dim = 5
        self.classifier = nn.Linear(5, 3)


def test_label_gradient_through_the_solve_matches_finite_differences():
    """label_distillation_rr.py lines 584-601: the target batch's CE under scale * ((1 - a) w + a w_local(Y)) is the
    labels' loss; its autograd gradient through the closed-form solve against central differences."""
    torch.manual_seed(0)
    net = _Tiny().double()
    learner = RRLearner(net, 3, 1e-3, 0.01, 0.3, 1.0)
    g = torch.Generator().manual_seed(1)
    learner.w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        learner.scale.fill_(1.7)
    xb = torch.randn(4, 1, 3, 4, generator=g, dtype=torch.float64)
    xt = torch.randn(9, 1, 3, 4, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (9,), generator=g)
    labels = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), 1).requires_grad_(True)

    def loss(y):
        return F.cross_entropy(rr_logits(embed(net, xt), learner.scale * learner.solve(xb, y)), yt)

    (ours,) = torch.autograd.grad(loss(labels), labels)
    eps, fd = 1e-6, torch.zeros_like(ours)
    with torch.no_grad():
        for i in range(4):
            for c in range(3):
                up, down = labels.detach().clone(), labels.detach().clone()
                up[i, c] += eps
                down[i, c] -= eps
                fd[i, c] = (loss(up) - loss(down)) / (2 * eps)
    assert ours.abs().max() > 1e-4
    assert torch.allclose(ours, fd, rtol=1e-6, atol=1e-9)


def _tiny_inputs(mnist5k_path, tmp_path):
    tiny = write_tiny_mnist5k(mnist5k_path, tmp_path / "tiny.npz", per_class=8, n_test=20)
    val = tmp_path / "tiny-val.npz"
    write_split(load_arrays(tiny)["y_train"], 10, {"per_class": 2, "seed": 0}, "mnist5k", val)
    return tiny, val


def _rr_method(mnist5k_path, tmp_path, **hp_over):
    from ddflow.data import get_info, load_real
    from ddflow.data.validation import carve, load_split
    from ddflow.methods import get_method
    tiny, val = _tiny_inputs(mnist5k_path, tmp_path)
    data = load_real(tiny, get_info("mnist5k"))
    fit = carve(data, load_split(val, "mnist5k", len(data.y_train)))
    hp = {"variant": "rr", "epochs": 5, "batch": 32, "inner_batch_size": 5, "inner_lr": 0.01, "lr_labels": 0.001,
          "lr_model": 0.001, "init": "real", "net": "auto", **RR, **hp_over}
    return get_method("ld")(hp, fit, 1, torch.Generator().manual_seed(0), CPU, {"validation": str(val)}), fit


def test_rr_steps_follow_the_official_training_step_written_out(mnist5k_path, tmp_path):
    """label_distillation_rr.py train, lines 578-618, two steps: w moves towards the base minibatch's ridge solution
    (0.99 / 0.01), the target CE under adjust() * w steps the labels (Adam, then clamp and renormalise, lines
    599-605), then the feature extractor and the calibration take Adam steps on the soft CE of the base minibatch
    under adjust() * w against the updated labels, back-propagated through the solve as well (lines 607-618)."""
    m, fit = _rr_method(mnist5k_path, tmp_path)
    m.init()
    model = copy.deepcopy(m.learner.net)
    feat_opt = torch.optim.Adam(model.features.parameters())                # line 308 (no last Linear there)
    adjust = torch.ones(1, requires_grad=True)                              # AdjustLayer(init_scale=1)
    adj_opt = torch.optim.Adam([adjust], 0.01)                              # line 317
    labels = m.labels.detach().clone().requires_grad_(True)
    labels_opt = torch.optim.Adam([labels])                                 # line 290
    w = torch.zeros(85, 10)                                                 # lines 319-321 (LeNet: 84 features)
    g = torch.Generator()
    g.set_state(m.generator.get_state())
    perm = m.perm.clone()
    for it in range(2):                                                     # 60 fit images, batch 32: one epoch
        m.step(it)
        idx = torch.randperm(10, generator=g)[:5]
        input_ = fit.x_train[perm[it * 32:(it + 1) * 32]]
        target = fit.y_train[perm[it * 32:(it + 1) * 32]]
        fi_i, lb_i = m.x_base[idx], labels[idx]
        feature = model(fi_i, embed=True)
        w_local = _official_local_weights(torch.cat((feature, torch.ones(5, 1)), 1), lb_i)
        w = (1 - 0.01) * w.detach() + 0.01 * w_local
        label_loss = F.cross_entropy(rr_logits(model(input_, embed=True), adjust * w), target)
        labels_opt.zero_grad()
        label_loss.backward(retain_graph=True)
        labels_opt.step()
        labels.data = torch.clamp(labels.data, 0, 1)
        labels.data = labels.data / labels.data.sum(dim=1).unsqueeze(1)
        feat_output = rr_logits(model(fi_i, embed=True), adjust * w)
        feat_loss = -(labels[idx].detach() * torch.log_softmax(feat_output, 1)).sum(1).mean()
        feat_opt.zero_grad()
        adj_opt.zero_grad()
        feat_loss.backward()
        feat_opt.step()
        adj_opt.step()
        assert torch.allclose(m.labels, labels, atol=1e-6)
        assert torch.allclose(m.learner.w, w.detach(), atol=1e-5)
        assert torch.allclose(m.learner.scale, adjust, atol=1e-6) and float(adjust.detach()) != 1.0
        for (name, a), b in zip(m.learner.net.features.named_parameters(), model.features.parameters()):
            assert torch.allclose(a, b, atol=1e-6), name
    assert not torch.allclose(m.labels, torch.full((10, 10), 0.1))


def test_rr_distillation_validates_and_reports_its_variant(mnist5k_path, tmp_path):
    m, fit = _rr_method(mnist5k_path, tmp_path)
    m.init()
    for it in range(m.iterations):
        m.step(it)
    assert torch.allclose(m.labels.sum(1), torch.ones(10)) and float(m.labels.min()) >= 0
    assert m.best["epoch"] == 4 and m.best["num_steps"] == m.iterations
    res = m.result()
    assert res["ld"]["variant"] == "rr" and res["ld"]["rr"] == RR
    bad, _ = _rr_method(mnist5k_path, tmp_path, variant="svm")
    with pytest.raises(DdflowError, match="variant 'svm'; allowed: or2, rr"):
        bad.init()
    hp_missing, _ = _rr_method(mnist5k_path, tmp_path)
    del hp_missing.hp["ridge_lambda"]
    with pytest.raises(DdflowError, match="rr needs ridge_lambda"):
        hp_missing.init()


def test_killed_rr_run_resumes_to_the_same_labels(mnist5k_path, tmp_path):
    tiny, val = _tiny_inputs(mnist5k_path, tmp_path)
    ov = {"epochs": 5, "batch": 32, "variant": "rr"}                  # 5 x ceil(60 / 32) = 10 iterations
    args = ("ld", "mnist5k", 1, 0, "quick", CPU, tiny)
    inputs = {"validation": str(val)}
    full = run(*args, tmp_path / "full.pt", inputs=inputs, overrides=ov)
    assert full.extra["ld"]["variant"] == "rr"
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", resume=resume, save_every=1, stop_after=7, inputs=inputs,
               overrides=ov) is None
    resumed = run(*args, tmp_path / "r.pt", resume=resume, save_every=1, inputs=inputs, overrides=ov)
    assert torch.equal(resumed.labels, full.labels) and resumed.extra["ld"] == full.extra["ld"]


def test_protocol_ld_trains_the_rr_model_as_the_official_test(mnist5k):
    """label_distillation_rr.py test, lines 783-876: a fresh feature extractor (Adam, defaults), a calibration (Adam
    0.01) and w = 0; each step the first inner_batch_size of a new permutation, w <- 0.99 w + 0.01 w_local, the soft
    CE under adjust() * w back-propagated (through the solve too); the test split scored with the plain w."""
    from ddflow.nets.bilevel import build
    from ddflow.protocols.bilevel import evaluate_ld
    from ddflow.records import DistilledSet
    g = torch.Generator().manual_seed(0)
    x = mnist5k.x_train[torch.arange(10) * 37]
    labels = torch.softmax(torch.randn(10, 10, generator=g), 1)
    rec = DistilledSet(images=x, labels=labels, method="ld", dataset="mnist5k", ipc=1, seed=0, mean=(0.1307,),
                       std=(0.3081,), extra={"ld": {"num_steps": 4, "inner_batch_size": 3, "net": "LeNet",
                                                    "variant": "rr", "rr": RR}})
    small = type(mnist5k)(mnist5k.x_train, mnist5k.y_train, mnist5k.x_test[:100], mnist5k.y_test[:100], mnist5k.info)
    settings = {"net": "auto", "lr": 0.001, "inner_batch_size": 50, "models": 1, "variant": "auto"}
    (acc,) = evaluate_ld(rec, small, settings, [torch.Generator().manual_seed(7)], CPU)
    g = torch.Generator().manual_seed(7)
    model = build("LeNet", 1, 10, 28, g, "default")
    feat_opt = torch.optim.Adam(model.features.parameters())
    adjust = torch.ones(1, requires_grad=True)
    adj_opt = torch.optim.Adam([adjust], 0.01)
    w_eval = torch.zeros(85, 10)
    for _ in range(4):
        idx = torch.randperm(10, generator=g)[:3]
        feature = model(x[idx], embed=True)
        w_eval = 0.99 * w_eval.detach() + 0.01 * _official_local_weights(torch.cat((feature, torch.ones(3, 1)), 1),
                                                                           labels[idx])
        out = rr_logits(model(x[idx], embed=True), adjust * w_eval)
        loss = -(labels[idx] * torch.log_softmax(out, 1)).sum(1).mean()
        feat_opt.zero_grad()
        adj_opt.zero_grad()
        loss.backward()
        feat_opt.step()
        adj_opt.step()
    with torch.no_grad():
        pred = rr_logits(model(small.x_test[:100], embed=True), w_eval).argmax(1)
    assert acc == pytest.approx(100.0 * float((pred == small.y_test[:100]).float().mean()))
    with pytest.raises(DdflowError, match="learned by variant 'rr'"):
        evaluate_ld(rec, small, {**settings, "variant": "or2"}, [torch.Generator().manual_seed(7)], CPU)
