"""RCIG (yolky/RCIG, commit a9fb1fa) and rcig-isa: the linearised Conv against torch.func.jvp, the analytic last
layer against a direct ridge solve, the implicit gradient against the exact gradient through a long inner solve,
the official optimisers and quirks, the evaluation schedule, resume equality."""
import dataclasses
import math

import pytest
import torch
from torch.func import jvp

from ddflow import hparams
from ddflow.data import RealData, get_info
from ddflow.methods import get_method
from ddflow.nets import build_frepo_conv
from ddflow.ops import rcig as R
from ddflow.protocols.rcig import rcig_schedule
from ddflow.settings import distill_cell as run

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TINY = dict(width=2, pool=2, inner_steps=3, hinv_steps=3, batch_real=16, tune=False, inner_lr_init=1e-3,
            hvp_lr_init=1.0)


def _tiny_data(per_class=4, size=8, classes=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(classes).repeat(per_class)
    x = torch.randn(classes * per_class, 1, size, size, generator=g, dtype=dtype)
    info = dataclasses.replace(get_info("mnist5k"), size=size, classes=classes)
    return RealData(x, y, x[:classes].clone(), y[:classes].clone(), info)


def _method(method, data, ipc=1, **changes):
    hp = hparams.resolve(method, "mnist5k", 1, "quick")
    hp.update({**TINY, **changes})
    m = get_method(method)(hp, data, ipc, torch.Generator().manual_seed(0), CPU)
    m.init()
    return m


def _params(size=8, width=2, classes=3, dtype=torch.float64, seed=0):
    net = build_frepo_conv(1, classes, size, width, None, "none", torch.Generator().manual_seed(seed))
    params, pads = R.conv_params(net)
    return [p.to(dtype) for p in params], pads, net


def test_conv_matches_the_official_definition():
    """models.py Conv (lines 104-167): conv width * 2**i, padding 3 on a 1-channel first layer, avg-pool, dense;
    1,558,538 parameters at width 128 on 28 px MNIST (1*9*128+128, 128*9*256+256, 256*9*512+512, 512*16*10+10)."""
    net = build_frepo_conv(1, 10, 28, 128, None, "none")
    assert sum(p.numel() for p in net.parameters()) == 1280 + 295168 + 1180160 + 81930
    params, pads = R.conv_params(net)
    assert pads == [3, 1, 1]
    x = torch.randn(2, 1, 28, 28)
    out, feat = R.forward(params, x, pads, beta=0.0)
    assert torch.allclose(out, net(x), atol=1e-5) and feat.shape == (2, 512 * 16)


@pytest.mark.parametrize("beta", [0.0, 60.0])
def test_linearised_output_is_the_jvp_of_the_network(beta):
    """algorithms.py get_linear_forward (lines 929-950): primal features at theta, dual of the logits = J delta;
    softplus(60 x)/60 while distilling (models.py lines 153-156, depth_3.txt softplus_temp 60)."""
    params, pads, _ = _params()
    g = torch.Generator().manual_seed(1)
    tangent = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    x = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    (out, feat), (dout, _) = jvp(lambda *p: R.forward(list(p), x, pads, beta), tuple(params), tuple(tangent))
    feat2, dout2 = R.forward_linear(params, tangent, x, pads, beta)
    assert torch.allclose(feat2, feat) and torch.allclose(dout2, dout, atol=1e-10)


def test_inner_loss_is_the_ridge_objective_at_its_optimal_last_layer():
    """get_krr_loss_gd self_loss (lines 648-668): the closed-form last layer W = phi^T w equals the minimiser of
    0.5 ||y - J delta - phi W||^2 + 0.5 l2 ||W||^2, and the loss adds 0.5 l2 ||delta||^2, all / (N C)."""
    params, pads, _ = _params()
    g = torch.Generator().manual_seed(2)
    delta = [0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    x, y = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g,
                                                                                    dtype=torch.float64)
    l2 = 0.3
    phi, dout = R.forward_linear(params, delta, x, pads, 60.0)
    d = phi.shape[1]
    w_last = torch.linalg.solve(phi.T @ phi + l2 * torch.eye(d, dtype=phi.dtype), phi.T @ (y - dout))
    direct = 0.5 * ((y - dout - phi @ w_last) ** 2).sum() + 0.5 * l2 * ((w_last ** 2).sum() +
                                                                        sum((t ** 2).sum() for t in delta))
    got = R.inner_loss(delta, params, x, y, l2, pads, 60.0)
    assert float(got) == pytest.approx(float(direct) / y.numel(), rel=1e-9)


def test_hvp_is_the_hessian_times_the_vector():
    """get_training_loss_hvp_krr (lines 960-964): jvp of the gradient = H v; against the explicit Hessian."""
    params, pads, _ = _params()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                                                                                    dtype=torch.float64)
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def unflat(v):
        return [c.view(s) for c, s in zip(v.split(sizes), shapes)]

    flat = torch.zeros(sum(sizes), dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda v: R.inner_loss(unflat(v), params, x, y, 0.2, pads, 60.0), flat)
    vec = torch.randn(sum(sizes), generator=g, dtype=torch.float64)
    hv = R.hvp(unflat(flat), params, x, y, 0.2, pads, 60.0, unflat(vec))
    assert torch.allclose(torch.cat([h.flatten() for h in hv]), hess @ vec, atol=1e-10)


class _ExactH:
    """meta_gradient with the Hessian-inverse-vector product solved exactly (the official 20 Adam steps are an
    approximation of it): isolates the implicit-gradient formula."""

    def __init__(self, m):
        self.m = m

    def __call__(self, tangent, params, x_s, y_s, l2, pads, beta, g_t, steps, lr):
        sizes, shapes = [t.numel() for t in tangent], [t.shape for t in tangent]
        flat = torch.cat([t.flatten() for t in tangent]).detach()

        def f(v):
            return R.inner_loss([c.view(s) for c, s in zip(v.split(sizes), shapes)], params, x_s, y_s, l2, pads, beta)

        h = torch.linalg.solve(torch.autograd.functional.hessian(f, flat), torch.cat([g.flatten() for g in g_t]))
        return [c.view(s) for c, s in zip(h.split(sizes), shapes)], [0.0]


def test_implicit_gradient_equals_the_gradient_through_a_long_inner_solve(monkeypatch):
    """do_meta_train_step (lines 389-414) without clipping: direct gradient + implicit gradient -d/dX [h . grad_delta
    L_in], h = H^-1 g_t, equals d/dX L_out(delta*(X), X), delta* reached by unrolled gradient steps from 0."""
    torch.set_default_dtype(torch.float64)
    try:
        data = _tiny_data(dtype=torch.float64)
        m = _method("rcig", data, clip=False, l2_rate=20.0, softplus_temp=60, learn_labels=True)
        monkeypatch.setattr(R, "h_inv_vp", _ExactH(m))
        theta = [p.double() for p in m.pool[0]["params"]]
        x_t, y_t = m.real_batch()
        x_s0, y_s0 = m.support(detach=True)
        eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(
            lambda v: R.inner_loss(_split(v, theta), theta, x_s0, y_s0, m.l2, m.pads, m.beta),
            torch.zeros(sum(p.numel() for p in theta))))
        lo, hi = float(eig.min()), float(eig.max())
        steps = int(9 * hi / lo) + 10        # the error contracts by (hi - lo) / (hi + lo) per step: below 1e-8
        assert steps <= 3000, f"condition number {hi / lo:.0f}: too many unrolled steps for a fast test"
        # the exact path: unrolled gradient descent on the quadratic inner problem, differentiable in the coreset
        delta = [torch.zeros_like(p).requires_grad_(True) for p in theta]
        x_s, y_s = m.support()
        for _ in range(steps):
            g = torch.autograd.grad(R.inner_loss(delta, theta, x_s, y_s, m.l2, m.pads, m.beta), delta,
                                    create_graph=True)
            delta = [d - (2.0 / (lo + hi)) * gi for d, gi in zip(delta, g)]
        preds, _ = R.krr_predict(delta, theta, x_s, y_s, x_t, m.l2, m.pads, m.beta)
        loss = R.platt_loss(preds, y_t, m.log_temp) - R.label_margin(y_s)
        exact = torch.autograd.grad(loss, [m.images, m.labels])
        grads, _, _ = m.meta_gradient(theta, [d.detach() for d in delta], x_t, y_t)
        for got, want in zip((grads["images"], grads["labels"]), exact):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-9)
        # the implicit part matters: the direct gradient alone is off
        m.hp["clip"] = True
        assert not torch.allclose(m.meta_gradient(theta, [d.detach() for d in delta], x_t, y_t)[0]["images"],
                                  exact[0], rtol=1e-3)
    finally:
        torch.set_default_dtype(torch.float32)


def _split(v, like):
    out, i = [], 0
    for p in like:
        out.append(v[i:i + p.numel()].view(p.shape))
        i += p.numel()
    return out


def test_adabelief_is_optax_adabelief():
    """optax.adabelief (run_rcig lines 95-97; optax 0.1.x scale_by_belief): nu uses the prediction error against the
    previous mu, adds eps_root 1e-16, eps 1e-16 outside the root."""
    p = torch.tensor([1.0, -2.0])
    opt = R.AdaBelief([p], lr=0.1)
    mu, nu, x = [0.0, 0.0], [0.0, 0.0], [1.0, -2.0]
    for t, g in enumerate(([0.5, -1.0], [0.2, 0.3]), start=1):
        p.grad = torch.tensor(g)
        opt.step()
        for i in range(2):
            err = g[i] - mu[i]
            mu[i] = 0.9 * mu[i] + 0.1 * g[i]
            nu[i] = 0.999 * nu[i] + 0.001 * err * err + 1e-16
            x[i] -= 0.1 * (mu[i] / (1 - 0.9 ** t)) / (math.sqrt(nu[i] / (1 - 0.999 ** t)) + 1e-16)
    assert p.tolist() == pytest.approx(x, rel=1e-6)


def test_learning_rate_statistics_clip_ema_and_pool_steps():
    """run_rcig lines 152-164 (monotone 1 / diverged -1 / else 0), 401-410 (clip per array, nan -> 0), 419 + 967-985
    (EMA 0.99, bias-corrected by the step count), 242 (randint(1, 16): 1..15 pool steps)."""
    assert R.lr_stat([3.0, 2.0, 1.0]) == 1
    assert R.lr_stat([1.0, 2.0, 3.0]) == -1
    assert R.lr_stat([3.0, 1.0, 2.0]) == 0
    d, i = torch.tensor([3.0, 4.0]), torch.tensor([30.0, 40.0])
    assert R.clip_to(i, d).tolist() == pytest.approx([3.0, 4.0])
    assert R.clip_to(d, i).tolist() == pytest.approx([3.0, 4.0])
    assert R.clip_to(torch.zeros(2), d).tolist() == [0.0, 0.0]
    hidden, avg = R.ema_update(torch.zeros(1), torch.tensor([2.0]), 1)
    assert float(avg) == pytest.approx(2.0)          # bias correction: the first average is the value
    hidden, avg = R.ema_update(hidden, torch.tensor([4.0]), 2)
    assert float(avg) == pytest.approx((0.99 * 0.02 + 0.04) / (1 - 0.99 ** 2))
    g = torch.Generator().manual_seed(0)
    draws = {R.pool_count(g, 16) for _ in range(500)}
    assert draws == set(range(1, 16))


def test_inner_solve_keeps_the_official_optimiser_quirks():
    """algorithms.py lines 42-44 and 736-740: the tangent Adam counts on from the pool model's step count; the dense
    kernel's tangent (outside both masks) gets its raw gradient added; the base parameters move on the pool Adam's
    momentum although their gradient is 0."""
    data = _tiny_data()
    m = _method("rcig", data, inner_steps=1)
    model = m.pool[0]
    theta0 = [p.clone() for p in model["params"]]
    x_s, y_s = m.support(detach=True)
    d = [torch.zeros_like(p).requires_grad_(True) for p in theta0]
    grads = torch.autograd.grad(R.inner_loss(d, theta0, x_s, y_s, m.l2, m.pads, m.beta), d)
    model["count"], model["m"] = 40, [torch.full_like(p, 1e-3) for p in theta0]
    model["v"] = [torch.full_like(p, 1e-6) for p in theta0]
    theta, delta, _ = m.inner_solve(model, 0.01)
    assert torch.allclose(delta[-2], grads[-2])                               # passthrough: + raw gradient
    b1, b2, t = 0.9, 0.999, 41
    mh, vh = 0.1 * grads[0] / (1 - b1 ** t), 0.001 * grads[0] ** 2 / (1 - b2 ** t)
    assert torch.allclose(delta[0], -0.01 * mh / (vh.sqrt() + 1e-8), atol=1e-7)  # Adam at step 41, not 1
    step = 5e-5 * (0.9 * 1e-3 / (1 - b1 ** t)) / (math.sqrt(0.999 * 1e-6 / (1 - b2 ** t)) + 1e-8)
    assert torch.allclose(theta0[0] - theta[0], torch.full_like(theta[0], step), rtol=1e-2)   # the drift
    m.hp.update(final_kernel_tangent="frozen", inner_base_drift=False)
    theta, delta, _ = m.inner_solve(model, 0.01)
    assert torch.equal(delta[-2], torch.zeros_like(delta[-2])) and torch.equal(theta[0], theta0[0])


def test_rcig_isa_loss_is_isas_closed_form_on_rcigs_prediction():
    """rcig-isa: with keep 1 and eps 0 the mean squared error of RCIG's prediction; with eps > 0 the mean over l in
    [0, eps] of the squared residual along pred_i + l (pred_i - pred_j) against y_i + l (y_i - y_j)."""
    m = _method("rcig-isa", _tiny_data(), keep=1.0, eps=0.0)
    g = torch.Generator().manual_seed(4)
    preds, y, feat = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    assert float(m.outer_loss(preds, y, feat)) == pytest.approx(float(((preds - y) ** 2).mean()), rel=1e-6)
    m.hp.update(eps=0.5)
    j = torch.nn.functional.normalize(feat, dim=1) @ torch.nn.functional.normalize(feat, dim=1).T
    j.fill_diagonal_(-float("inf"))
    j = j.argmax(1)
    n = 4000
    ls = (torch.arange(n) + 0.5) / n * 0.5
    res = (preds - y)[None] + ls[:, None, None] * ((preds - preds[j]) - (y - y[j]))[None]
    assert float(m.outer_loss(preds, y, feat)) == pytest.approx(float((res ** 2).mean()), rel=1e-4)


def test_rcig_step_runs_and_tunes(mnist5k):
    """One step with the lr search (distill_dataset.py lines 225-240) on a narrow net: the rates grow from their
    initial values, the loss is finite, the images move, and the result is the bias-corrected EMA."""
    m = _method("rcig", mnist5k, tune=True, inner_lr_init=1e-4, hvp_lr_init=1.0, batch_real=32)
    before = m.images.detach().clone()
    stats = m.step(0)
    assert m.tuned and m.inner_lr > 1e-4 and m.hvp_lr > 1.0 and math.isfinite(stats["loss"])
    assert not torch.equal(before, m.images)
    assert torch.allclose(m.result()["images"], m.images.detach())   # EMA after one step = the images


def test_evaluation_schedule_is_the_official_one():
    """eval.py line 203 (1000 steps for a 10-image set, else 2000) and lines 227-230 (nominal // 200 chunks of 500)."""
    s = {"steps_if_10": 1000, "steps_else": 2000, "steps": None, "chunk": 500, "chunk_divisor": 200}
    assert rcig_schedule(10, s) == (1000, 2500)
    assert rcig_schedule(100, s) == (2000, 5000)


def test_killed_rcig_run_resumes_to_the_same_images(mnist5k_path, tmp_path):
    over = {**TINY, "iterations": 3, "pool": 2, "max_online_steps": 3}
    args = ("rcig", "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", overrides=over)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", resume=resume, save_every=1, stop_after=2, overrides=over) is None
    resumed = run(*args, tmp_path / "r.pt", resume=resume, save_every=1, overrides=over)
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.labels, full.labels)


def test_inner_lr_adapts_every_interval_as_run_rcig():
    """run_rcig lines 175-186: at it % 50 == 0 (it > 0) x0.9 when >= 29 % of the inner solves diverged, else x1.05
    when >= 70 % were monotone; the statistics restart either way."""
    m = _method("rcig", _tiny_data())
    m.inner_lr, m.inner_stats = 1.0, [-1] * 3 + [1] * 7
    m._adapt_inner_lr(49)
    assert m.inner_lr == 1.0 and len(m.inner_stats) == 10          # not at a multiple of 50
    m._adapt_inner_lr(50)
    assert m.inner_lr == pytest.approx(0.9) and m.inner_stats == []
    m.inner_stats = [1] * 7 + [0] * 3
    m._adapt_inner_lr(100)
    assert m.inner_lr == pytest.approx(0.9 * 1.05)
    m.inner_stats = [1] * 6 + [0] * 4
    m._adapt_inner_lr(150)
    assert m.inner_lr == pytest.approx(0.9 * 1.05)


def test_protocol_rcig_trains_on_the_flip_doubled_set_when_the_distillation_flipped(monkeypatch):
    """eval.py lines 212-214: the set and its horizontal flips, the same labels, when the record says use_flip."""
    import ddflow.protocols.rcig as P

    seen = {}
    real_flip = P.flip_support

    def spy(x, y, use_flip):
        seen["use_flip"] = use_flip
        out = real_flip(x, y, use_flip)
        seen["n"] = len(out[0])
        return out

    monkeypatch.setattr(P, "flip_support", spy)
    data = _tiny_data(size=28, classes=10, per_class=2)
    rec = type("Rec", (), {})()
    rec.images, rec.labels, rec.cell = data.x_train[:10], data.y_train[:10], "tiny"
    settings = {"steps_if_10": 1000, "steps_else": 2000, "steps": 2, "chunk": 1, "chunk_divisor": 1, "batch": 256,
                "warmup": 1, "lr": 1e-3, "lr_alpha": 0.01, "width": 4, "depth": "auto", "models": 2, "augment": False,
                "use_flip": "auto", "batching": "auto"}
    for flag, n in ((True, 20), (False, 10)):
        rec.extra = {"use_flip": flag}
        accs = P.evaluate_rcig(rec, data, settings, [torch.Generator().manual_seed(i) for i in range(2)], CPU)
        assert len(accs) == 2 and seen == {"use_flip": flag, "n": n}
