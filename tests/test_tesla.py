"""TESLA (justincui03/tesla distill.py at 488842e): the constant-memory meta-gradient against MTT's unrolled graph,
the official first-order computation, the experts' soft labels, resume equality."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddflow import hparams
from ddflow.augment import DSA
from ddflow.methods import get_method
from ddflow.ops.unrolled_student import constant_memory_grads, student_unroll, trajectory_loss
from fake_experts import write_fake_experts

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(steps=3, n=6, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(4, 4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    start = {k: p.detach().clone() for k, p in net.named_parameters()}
    target = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    images = torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.arange(n) % 3
    batches = [torch.randperm(n, generator=g)[:batch] for _ in range(steps)]
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    draws = [dsa.sample(batch, g) for _ in range(steps)]
    return net, start, target, images, labels, batches, dsa, draws


def _unrolled(net, start, target, images, labels, lr, batches, dsa, draws):
    x = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(lr, requires_grad=True)
    leaf = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    step = iter(range(len(batches)))
    final = student_unroll(net, leaf, x, labels, syn_lr, batches, lambda b: dsa.apply(b, draws[next(step)]))
    loss = trajectory_loss(final, start, target)
    gx, glr = torch.autograd.grad(loss, [x, syn_lr])
    return loss.detach(), gx, glr


def test_exact_constant_memory_gradient_equals_the_unrolled_graph():
    net, start, target, images, labels, batches, dsa, draws = _setup()
    loss_m, gx_m, glr_m = _unrolled(net, start, target, images, labels, 0.1, batches, dsa, draws)
    loss_t, gx_t, glr_t = constant_memory_grads(net, start, target, images, labels, torch.tensor(0.1), batches,
                                                lambda b, i: dsa.apply(b, draws[i]), exact=True)
    assert torch.allclose(loss_t, loss_m, rtol=1e-5)
    assert gx_m.abs().max() > 0 and torch.allclose(gx_t, gx_m, rtol=1e-4, atol=1e-6 * gx_m.abs().max())
    assert torch.allclose(glr_t, glr_m, rtol=1e-4)


def test_first_order_gradient_is_twice_what_the_official_code_computes_and_exact_for_one_step():
    """tesla distill.py lines 404-429. Line 418 writes grad x_i = 2/D * d/dx_i [(lr (theta* - theta_0) + lr^2 G) . g_i],
    G = sum g_j (detached), as `2 * torch.autograd.grad(...)`: autograd.grad returns a tuple, so the 2 repeats the
    tuple, and line 420 adds its element 0, the gradient WITHOUT the factor 2. The lr gradient (lines 425-428) is that
    of ||theta_0 - lr G - theta*||^2 / D with G fixed. constant_memory_grads(exact=False) is the surrogate with the
    factor (meta_gradient first_order); the official code's image gradient is half of it."""
    net, start, target, images, labels, batches, dsa, draws = _setup(steps=3)
    lr = 0.1
    _, gx, glr = constant_memory_grads(net, start, target, images, labels, torch.tensor(lr), batches,
                                       lambda b, i: dsa.apply(b, draws[i]), exact=False)
    names = list(start)
    flat = lambda d: torch.cat([d[k].reshape(-1) for k in names])  # noqa: E731
    theta, gs = flat(start), []
    for i, idx in enumerate(batches):   # the official forward: detached gradients, theta_{i+1} = theta_i - lr g_i
        q = {k: v.clone().requires_grad_(True) for k, v in zip(names, _unflat(theta, start))}
        out = functional_call(net, q, (dsa.apply(images[idx], draws[i]),))
        gs.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(out, labels[idx]),
                                                                        list(q.values()))]))
        theta = theta - lr * gs[-1]
    big_g, d = sum(gs), ((flat(start) - flat(target)) ** 2).sum()
    want, official = torch.zeros_like(images), torch.zeros_like(images)
    for i, idx in enumerate(batches):
        w_i = flat(start) - lr * sum(gs[:i]) if i else flat(start)
        q = {k: v.clone().requires_grad_(True) for k, v in zip(names, _unflat(w_i, start))}
        x = images[idx].clone().requires_grad_(True)
        out = functional_call(net, q, (dsa.apply(x, draws[i]),))
        g_i = torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(out, labels[idx]),
                                                                    list(q.values()), create_graph=True)])
        term = (lr * (flat(target) - flat(start)) + lr ** 2 * big_g) @ g_i / d
        gradients = 2 * torch.autograd.grad(term, x, retain_graph=True)   # line 418, as written
        assert isinstance(gradients, tuple) and len(gradients) == 2       # the tuple twice, no tensor doubled
        official[idx] += gradients[0]                                     # line 420
        want[idx] += 2 * torch.autograd.grad(term, x)[0]                  # the factor applied to the tensor
    lr_t = torch.tensor(lr, requires_grad=True)
    grand = flat(start) - lr_t * big_g - flat(target)
    want_lr = torch.autograd.grad(grand.dot(grand) / d, lr_t)[0]
    assert torch.allclose(gx, want, rtol=1e-4, atol=1e-6 * want.abs().max())
    assert torch.allclose(official, want / 2, rtol=1e-5, atol=1e-7 * want.abs().max())
    assert torch.allclose(glr, want_lr, rtol=1e-4)
    # differs from the exact gradient with several steps, equals it with one
    _, gx_e, _ = constant_memory_grads(net, start, target, images, labels, torch.tensor(lr), batches,
                                       lambda b, i: dsa.apply(b, draws[i]), exact=True)
    assert not torch.allclose(gx, gx_e, rtol=1e-3, atol=0)
    one = batches[:1]
    a = constant_memory_grads(net, start, target, images, labels, torch.tensor(lr), one,
                              lambda b, i: dsa.apply(b, draws[i]), exact=False)
    b = _unrolled(net, start, target, images, labels, lr, one, dsa, draws)
    assert torch.allclose(a[1], b[1], rtol=1e-4, atol=1e-7) and torch.allclose(a[2], b[2], rtol=1e-4)


def _unflat(vec, like):
    out, k = [], 0
    for v in like.values():
        out.append(vec[k:k + v.numel()].reshape(v.shape))
        k += v.numel()
    return out


# ---- the method against MTT --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    return str(write_fake_experts(tmp_path_factory.mktemp("tesla_experts"), 20))


def _method(method, data, man, **over):
    hp = hparams.resolve(method, "mnist5k", 1, "quick")
    hp.update({"syn_steps": 3, "batch_syn": 4, **over})
    m = get_method(method)(hp, data, 1, torch.Generator().manual_seed(5), CPU, inputs={"trajectories": man})
    m.init()
    return m


def test_tesla_exact_image_gradient_equals_mtt_on_the_same_window(random_real, experts):
    data = random_real(3)
    mtt = _method("mtt", data, experts)
    tesla = _method("tesla", data, experts, meta_gradient="exact", teacher_label=False)
    assert torch.equal(mtt.images, tesla.images)
    out_m, out_t = mtt.step(0), tesla.step(0)   # same generator: same window, batches and DSA draws
    assert out_m["start"] == out_t["start"] and torch.allclose(out_m["loss"], out_t["loss"], rtol=1e-5)
    gm, gt = mtt.images.grad, tesla.images.grad
    assert gm.abs().max() > 0 and torch.allclose(gt, gm, rtol=1e-3, atol=1e-5 * gm.abs().max())
    assert torch.allclose(tesla.syn_lr.grad, mtt.syn_lr.grad, rtol=1e-3)


def test_official_meta_gradient_is_half_the_first_order_image_gradient_on_the_same_window(random_real, experts):
    """tesla distill.py line 418 (tuple repetition, see above): meta_gradient official = what the code computes, half
    the first_order image gradient; the lr gradient (lines 425-429) is the same."""
    data = random_real(3)
    off = _method("tesla", data, experts, meta_gradient="official", teacher_label=False)
    first = _method("tesla", data, experts, meta_gradient="first_order", teacher_label=False)
    assert off.hp["meta_gradient"] == "official" == hparams.resolve("tesla", "cifar10", 10, "paper")["meta_gradient"]
    out_o, out_f = off.step(0), first.step(0)
    assert out_o["start"] == out_f["start"] and torch.equal(out_o["loss"], out_f["loss"])
    # the step has run: compare the gradients it left (images moved by lr_img * grad, so compare grads directly)
    go, gf = off.images.grad, first.images.grad
    assert gf.abs().max() > 0 and torch.allclose(go, gf / 2, rtol=1e-6, atol=1e-9 * gf.abs().max())
    assert torch.allclose(off.syn_lr.grad, first.syn_lr.grad, rtol=1e-6)


def test_meta_gradient_setting_is_checked_before_any_job():
    """Method.check_hparams: ddflow.config.check and ddflow.settings.distill_settings call it (parse time)."""
    from ddflow.errors import DdflowError
    from ddflow.methods import get_method
    hp = {**hparams.resolve("tesla", "cifar10", 10, "paper"), "meta_gradient": "twice"}
    with pytest.raises(DdflowError, match="tesla.yaml here: tesla meta_gradient 'twice'"):
        get_method("tesla").check_hparams(hp, "tesla.yaml here")


def test_teacher_labels_are_the_target_experts_softmax_and_evaluate_as_soft(random_real, experts, monkeypatch):
    """distill.py lines 344-359: label_syn = softmax(label_net(image_syn, flat_param=target_params))."""
    from ddflow.methods import tesla as tesla_mod
    data = random_real(3)
    m = _method("tesla", data, experts, teacher_label=True)
    seen = {}
    real = tesla_mod.constant_memory_grads

    def spy(net, start, target, images, labels, *rest, **kw):
        seen["want"] = torch.softmax(functional_call(net, target, (images.detach(),)), -1)
        seen["labels"] = labels
        return real(net, start, target, images, labels, *rest, **kw)

    monkeypatch.setattr(tesla_mod, "constant_memory_grads", spy)
    m.step(0)
    assert seen["labels"].shape == (10, 10) and torch.allclose(seen["labels"], seen["want"])
    res = m.result()
    assert res["labels"].shape == (10, 10) and torch.allclose(res["labels"].sum(1), torch.ones(10))


def test_tesla_resumes_exactly(random_real, experts):
    data = random_real(3)
    full = _method("tesla", data, experts, teacher_label=True)
    for it in range(3):
        full.step(it)
    a = _method("tesla", data, experts, teacher_label=True)
    a.step(0)
    state, gen = a.state_dict(), a.generator.get_state()
    b = _method("tesla", data, experts, teacher_label=True)
    b.load_state_dict(state)
    b.generator.set_state(gen)
    for it in (1, 2):
        b.step(it)
    assert torch.equal(b.images, full.images) and torch.equal(b.syn_lr, full.syn_lr)
    assert torch.equal(b.labels, full.labels)


# ---- experts read memory-mapped (experts at scale) ------------------------------------------------------
def test_manifest_and_pool_read_experts_memory_mapped_with_the_values_of_a_full_load(experts, tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from ddflow.records.experts import load_expert
    from ddflow.stages import sampling as ts
    paths = json.loads(Path(experts).read_text())["experts"]
    modes = []

    def spy(*a, **k):
        modes.append(k.get("mmap", False))
        return load_expert(*a, **k)

    monkeypatch.setattr(ts, "load_expert", spy)
    man_m = ts.write_mtt_manifest("mtt-m2-t2", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "m.json")
    pool_m = ts.write_ead_pool("ead-p6", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "p.pt")
    assert modes and all(modes)
    monkeypatch.setattr(ts, "load_expert", lambda *a, **k: load_expert(*a, **{**k, "mmap": False}))
    man_f = ts.write_mtt_manifest("mtt-m2-t2", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "mf.json")
    pool_f = ts.write_ead_pool("ead-p6", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "pf.pt")
    assert man_m == man_f
    assert torch.equal(pool_m["refs"], pool_f["refs"])
    for n in pool_f["params"]:
        assert torch.equal(pool_m["params"][n], pool_f["params"][n])
        assert torch.equal(pool_m["final"][n], pool_f["final"][n])
    # the MTT window read: two epochs of a memory-mapped expert equal those of the whole file
    mm, full = load_expert(paths[1], mmap=True), load_expert(paths[1])
    for n, v in full["params"].items():
        assert torch.equal(mm["params"][n][1], v[1]) and torch.equal(mm["params"][n][3], v[3])
