"""DD (ssnl/dataset-distillation at 98e4894): the unrolled meta-gradient against finite differences and against the
official hand-written reverse pass, the replay against training by hand, the official schedules and
parameterisation, the bilevel networks against the official definitions, resume equality."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddflow.methods.dd import epoch_lr, raw_lr, step_order
from ddflow.nets.bilevel import build, xavier_init_
from ddflow.ops.bilevel import dd_replay, dd_unrolled_loss, params_of
from ddflow.protocols.bilevel import dd_steps, evaluate_dd
from ddflow.records import DistilledSet
from ddflow.settings import distill_cell as run
from tiny_workflow import write_tiny_mnist5k

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 1, 6, 6, generator=g, dtype=torch.float64)      # 2 step batches of 3 images
    labels = torch.arange(3)
    raw = torch.tensor([raw_lr(0.3), raw_lr(0.2), raw_lr(0.1)], dtype=torch.float64)
    order = step_order(2, 2)[:3]                                                 # steps use batches 0, 1, 0
    x_real = torch.randn(8, 1, 6, 6, generator=g, dtype=torch.float64)
    y_real = torch.randint(0, 3, (8,), generator=g)
    return net, images, labels, raw, order, x_real, y_real


def _loss(net, images, labels, raw, order, x_real, y_real):
    lrs = F.softplus(raw)
    steps = [(images[s], labels, lrs[t]) for t, s in enumerate(order)]
    return dd_unrolled_loss(net, params_of(net), steps, x_real, y_real)


def test_unrolled_gradient_of_images_and_step_lrs_matches_finite_differences():
    net, images, labels, raw, order, x_real, y_real = _tiny()
    x, r = images.clone().requires_grad_(True), raw.clone().requires_grad_(True)
    gx, gr = torch.autograd.grad(_loss(net, x, labels, r, order, x_real, y_real), [x, r])
    eps = 1e-6
    for idx in [(0, 0, 0, 2, 3), (1, 2, 0, 4, 1), (0, 1, 0, 0, 5)]:
        up, down = images.clone(), images.clone()
        up[idx] += eps
        down[idx] -= eps
        fd = (_loss(net, up, labels, raw, order, x_real, y_real) - _loss(net, down, labels, raw, order, x_real,
                                                                          y_real)) / (2 * eps)
        assert float(gx[idx]) == pytest.approx(float(fd.detach()), rel=1e-5, abs=1e-9)
    for t in range(3):
        up, down = raw.clone(), raw.clone()
        up[t] += eps
        down[t] -= eps
        fd = (_loss(net, images, labels, up, order, x_real, y_real) - _loss(net, images, labels, down, order, x_real,
                                                                            y_real)) / (2 * eps)
        assert float(gr[t]) == pytest.approx(float(fd.detach()), rel=1e-5, abs=1e-9)
    assert gx.abs().max() > 0 and gr.abs().min() > 0


def test_autograd_equals_the_official_hand_written_reverse_pass():
    """train_distilled_image.py lines 82-167: forward keeps gw_t = lr_t grad L_t(w_t) (create_graph) and detached
    w_{t+1} = w_t - gw_t; backward starts from dw = dL/dw_T and, step by step in reverse, takes
    grad(gw_t, [w_t, data_t, lr_t], grad_outputs=-dw), adds the first to dw (lines 148-165) and keeps the others."""
    net, images, labels, raw, order, x_real, y_real = _tiny(1)
    x, r = images.clone().requires_grad_(True), raw.clone().requires_grad_(True)
    gx, gr = torch.autograd.grad(_loss(net, x, labels, r, order, x_real, y_real), [x, r])

    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).requires_grad_(True)

    def f(inp, w):
        parts = dict(zip(names, (t.view(s) for t, s in zip(w.split([math.prod(s) for s in shapes]), shapes))))
        return functional_call(net, parts, (inp,))

    data = [images[s].clone().requires_grad_(True) for s in order]   # one leaf per visit, gradients summed below
    lrs = [v.clone().requires_grad_(True) for v in F.softplus(raw).detach().unbind()]
    ws, gws, w = [flat], [], flat
    for d, lr in zip(data, lrs):
        (gw,) = torch.autograd.grad(F.cross_entropy(f(d, w), labels), w, lr, create_graph=True)
        with torch.no_grad():
            w = w.sub(gw).requires_grad_()
        ws.append(w)
        gws.append(gw)
    (dw,) = torch.autograd.grad(F.cross_entropy(f(x_real, ws[-1]), y_real), ws[-1])
    gdata, glr = [None] * len(order), [None] * len(order)
    for t in reversed(range(len(order))):
        h = torch.autograd.grad(gws[t], [ws[t], data[t], lrs[t]], grad_outputs=dw.neg())
        gdata[t], glr[t] = h[1], h[2]
        dw = dw + h[0]
    official_gx = torch.zeros_like(images)
    for t, s in enumerate(order):
        official_gx[s] += gdata[t]
    official_graw = torch.stack(glr) * torch.sigmoid(raw)     # d softplus(raw) / d raw
    assert torch.allclose(gx, official_gx, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gr, official_graw, rtol=1e-9, atol=1e-12)


def test_replay_equals_training_with_the_stored_steps_by_hand():
    """basics.py train_steps_inplace (lines 57-83): w <- w - lr * grad CE(f(x; w), y) for each stored step."""
    g = torch.Generator().manual_seed(3)
    net = build("LeNet", 1, 10, 28, g, "xavier")
    steps = [(torch.randn(10, 1, 28, 28, generator=g), torch.arange(10), torch.tensor(lr)) for lr in (0.05, 0.02)]
    ours = dd_replay(net, params_of(net), steps)
    by_hand = build("LeNet", 1, 10, 28, torch.Generator().manual_seed(0), "xavier")
    by_hand.load_state_dict(net.state_dict())
    for x, y, lr in steps:
        by_hand.zero_grad()
        F.cross_entropy(by_hand(x), y).backward()
        with torch.no_grad():
            for p in by_hand.parameters():
                p -= lr * p.grad
    for name, p in by_hand.named_parameters():
        assert torch.allclose(ours[name], p, atol=1e-6), name


def test_protocol_dd_replays_the_record_on_fresh_xavier_inits(mnist5k):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(20, 1, 28, 28, generator=g)          # 2 steps x 10 classes
    labels = torch.arange(10).repeat(2)
    rec = DistilledSet(images=images, labels=labels, method="dd", dataset="mnist5k", ipc=2, seed=0,
                       mean=(0.1307,), std=(0.3081,),
                       extra={"dd": {"step_lrs": [0.02, 0.03, 0.01], "order": [0, 1, 0], "distill_steps": 2,
                                     "net": "LeNet", "init": "xavier", "init_gain": 1.0}})
    steps = dd_steps(rec, CPU)
    assert [float(s[2]) for s in steps] == pytest.approx([0.02, 0.03, 0.01])
    assert torch.equal(steps[2][0], images[:10]) and torch.equal(steps[1][1], labels[10:])
    gens = [torch.Generator().manual_seed(k) for k in range(2)]
    small = type(mnist5k)(mnist5k.x_train, mnist5k.y_train, mnist5k.x_test[:200], mnist5k.y_test[:200], mnist5k.info)
    accs = evaluate_dd(rec, small, {"net": "auto", "models": 2}, gens, CPU)
    net = build("LeNet", 1, 10, 28, torch.Generator().manual_seed(1), "xavier")
    final = dd_replay(net, params_of(net), steps)
    pred = functional_call(net, final, (small.x_test[:200],)).argmax(1)
    assert accs[1] == pytest.approx(100.0 * float((pred == small.y_test[:200]).float().mean()))


def test_official_lr_parameterisation_step_order_and_schedule():
    """train_distilled_image.py lines 53-56 (raw = log(expm1(lr)), used through softplus), line 73 (steps visit the
    batches in order, distill_epochs times), lines 67-68 and 214-215 (StepLR stepped at the first iteration of every
    epoch, before the optimiser: epoch e runs at lr * gamma^((e + 1) // step_size), so the first decay is in epoch
    39 of 400, not 40)."""
    assert float(F.softplus(torch.tensor(raw_lr(0.02), dtype=torch.float64))) == pytest.approx(0.02, rel=1e-12)
    assert step_order(3, 2) == [0, 1, 2, 0, 1, 2]
    assert [epoch_lr(0.01, e, 40, 0.5) for e in (0, 38, 39, 78, 79)] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.0025])


def test_bilevel_nets_match_the_official_definitions():
    """networks/networks.py LeNet (lines 7-29) and AlexCifarNet (lines 32-60): layer shapes and parameter counts."""
    g = torch.Generator().manual_seed(0)
    lenet = build("LeNet", 1, 10, 28, g)
    shapes = [tuple(p.shape) for p in lenet.parameters()]
    assert shapes == [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]
    assert sum(p.numel() for p in lenet.parameters()) == 61706
    assert lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    alex = build("AlexCifarNet", 3, 10, 32, g)
    assert [tuple(p.shape) for p in alex.parameters()] == [
        (64, 3, 5, 5), (64,), (64, 64, 5, 5), (64,), (384, 4096), (384,), (192, 384), (192,), (10, 192), (10,)]
    assert sum(p.numel() for p in alex.parameters()) == 1756426
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in alex.modules()) == 2
    lrn = next(m for m in alex.modules() if isinstance(m, nn.LocalResponseNorm))
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (4, 0.001 / 9.0, 0.75, 1.0)
    assert alex(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_xavier_init_is_the_official_init_weights():
    """networks/utils.py lines 23-33: xavier_normal_(gain=init_param) on conv/linear weights, biases 0."""
    net = build("AlexCifarNet", 3, 10, 32, torch.Generator().manual_seed(0), "xavier")
    fc1 = net.features[9]
    assert isinstance(fc1, nn.Linear) and torch.count_nonzero(fc1.bias) == 0
    expected = math.sqrt(2.0 / (4096 + 384))
    assert float(fc1.weight.detach().std()) == pytest.approx(expected, rel=0.01)
    conv = net.features[4]
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.02)
    a, b = build("LeNet", 1, 10, 28, torch.Generator().manual_seed(5), "xavier"), nn.Sequential()
    xavier_init_(b, torch.Generator())   # nothing to initialise: no error
    assert torch.equal(next(a.parameters()), next(build("LeNet", 1, 10, 28, torch.Generator().manual_seed(5),
                                                          "xavier").parameters()))


def test_killed_dd_run_resumes_to_the_same_images_and_lrs(mnist5k_path, tmp_path):
    tiny = write_tiny_mnist5k(mnist5k_path, tmp_path / "tiny.npz", per_class=6, n_test=20)
    ov = {"epochs": 2, "batch": 32, "decay_epochs": 1}       # 2 x ceil(60 / 32) = 4 iterations
    args = ("dd", "mnist5k", 1, 0, "quick", CPU, tiny)
    full = run(*args, tmp_path / "full.pt", overrides=ov)
    assert full.iterations == 4 and len(full.extra["dd"]["step_lrs"]) == 3
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", resume=resume, save_every=1, stop_after=3, overrides=ov) is None
    resumed = run(*args, tmp_path / "r.pt", resume=resume, save_every=1, overrides=ov)
    assert torch.equal(resumed.images, full.images)
    assert resumed.extra["dd"]["step_lrs"] == full.extra["dd"]["step_lrs"]
    assert full.extra["dd"]["step_lrs"] != pytest.approx([0.02] * 3)   # the lrs were learned


def test_storage_counts_dd_images_and_every_step_lr():
    from ddflow.report.storage import storage
    rec = DistilledSet(images=torch.zeros(100, 1, 28, 28), labels=torch.arange(10).repeat(10), method="dd",
                       dataset="mnist5k", ipc=10, seed=0, mean=(0.1307,), std=(0.3081,),
                       extra={"dd": {"step_lrs": [0.02] * 30, "order": step_order(10, 3), "distill_steps": 10}})
    s = storage(rec)
    assert s["kind"] == "steps" and s["floats"] == 100 * 28 * 28 + 30 and s["lr"] == 30
