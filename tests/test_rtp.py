"""RTP (princetonvisualai/RememberThePast-DatasetDistillation, commit f49e631): budget formula, decoding, the
official reverse pass through momentum SGD against finite differences and against autograd through the unrolled
graph, the method's step and record, resume equality and the `rtp` protocol's settings."""
from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.func import functional_call

from ddflow.errors import DdflowError
from ddflow.nets import ConvNet, parse_net
from ddflow.ops.rtp import (
    coeff_regulariser,
    decode,
    rows_per_class,
    stored_floats,
    unroll_backward,
    unroll_forward,
    xavier_uniform_,
)
from ddflow.settings import distill_cell as run

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


# -- budget ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget, size, channels, classes, expected", [
    (1, 32, 3, 10, 115),     # README basis command (CIFAR-10, budget 1, 16 bases, ds 2): (30720 - 12288) / 160
    (10, 32, 3, 10, 1843),   # (307200 - 12288) / 160 = 1843.2
    (50, 32, 3, 10, 9523),   # (1536000 - 12288) / 160 = 9523.2
    (1, 32, 3, 100, 184),    # CIFAR-100: (307200 - 12288) / 1600 = 184.3
    (1, 28, 1, 10, 29),      # MNIST: (7840 - 3136) / 160 = 29.4
])
def test_budget_formula_matches_the_official_examples(budget, size, channels, classes, expected):
    """utils/Img_per_Cls_budget.py line 5 (cal_ncoef), floored in utils/merge_args.py line 34."""
    rows = rows_per_class(budget, size, channels, classes, 16, 2)
    assert rows == expected
    # the official total_alloc (line 6) stays within the budget's floats (line 7)
    assert stored_floats(16, rows, classes, channels, size, 2) <= budget * size * size * channels * classes


def test_budget_too_small_for_the_bases_is_refused():
    """merge_args.py line 35 asserts at least one row per class."""
    with pytest.raises(DdflowError, match="at least 1"):
        rows_per_class(1, 28, 1, 10, 64, 1)


def test_decode_is_coefficients_times_bases_upsampled_bilinearly():
    """imgs_embedding_basis_minibatch.py lines 67-70 (combine_basis) and 47-52 (bilinear, align_corners False)."""
    g = torch.Generator().manual_seed(0)
    basis = xavier_uniform_(torch.empty(4, 3 * 8 * 8), g)
    coeffs = xavier_uniform_(torch.empty(5, 4), g)
    imgs = decode(basis, coeffs, 3, 2)
    assert imgs.shape == (5, 3, 16, 16)
    small = (coeffs @ basis).view(5, 3, 8, 8)
    assert torch.allclose(imgs, F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False))
    assert torch.equal(decode(basis, coeffs, 3, 1), small)
    bound = (6 / (5 + 4)) ** 0.5   # xavier_uniform on the (rows, n_basis) embedding table (lines 35, 42)
    assert coeffs.abs().max() <= bound and coeffs.abs().max() > 0.5 * bound


# -- the unroll -----------------------------------------------------------------------------------------------------
def _tiny_problem(seed=0, steps=3, act="relu"):
    torch.manual_seed(seed)
    net = ConvNet(1, 3, 8, replace(parse_net("ConvNet"), width=4, act=act)).double()
    params = [p.detach().clone() for p in net.parameters()]
    basis = torch.randn(4, 16, dtype=torch.float64)          # 1 channel, 4x4 bases, ds 2 -> 8x8 images
    coeffs = torch.randn(3 * 5, 4, dtype=torch.float64)     # 5 rows per class, 3 classes
    batches = []
    for _ in range(steps):
        rows = torch.cat([torch.randperm(5)[:2].sort().values + 5 * c for c in range(3)])
        batches.append((rows, torch.arange(3).repeat_interleave(2)))
    x_real, y_real = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.arange(3).repeat_interleave(2)
    return net, params, basis, coeffs, batches, x_real, y_real


def _outer_loss(net, params, basis, coeffs, batches, x_real, y_real, lr=0.1, m=0.9):
    w, _ = unroll_forward(net, params, basis, coeffs, batches, 1, 2, lr, m)
    names = [n for n, _ in net.named_parameters()]
    return F.cross_entropy(functional_call(net, dict(zip(names, w)), (x_real,)), y_real)


def _reverse(net, params, basis, coeffs, batches, x_real, y_real, lr=0.1, m=0.9, reg=None):
    w, stored = unroll_forward(net, params, basis, coeffs, batches, 1, 2, lr, m)
    names = [n for n, _ in net.named_parameters()]
    ws = [p.requires_grad_(True) for p in w]
    loss = F.cross_entropy(functional_call(net, dict(zip(names, ws)), (x_real,)), y_real)
    dl_dw = torch.autograd.grad(loss, ws)
    return unroll_backward(net, stored, list(dl_dw), basis, coeffs, batches, 1, 2, lr, m, reg=reg)


def test_reverse_pass_matches_finite_differences_for_bases_and_addressing():
    """The official reverse pass (models/compressor_bptt_standard.py lines 252-336) gives the gradient of the outer
    loss through the momentum-SGD unroll: central differences along random directions, float64, a smooth activation
    (swish: ReLU's kinks make differences of a 4-channel net jump)."""
    net, params, basis, coeffs, batches, x_real, y_real = _tiny_problem(act="swish")
    g_basis, g_coeffs, _ = _reverse(net, params, basis, coeffs, batches, x_real, y_real)
    assert g_coeffs.abs().sum() > 0 and g_basis.abs().sum() > 0
    gen = torch.Generator().manual_seed(1)
    eps = 1e-5
    for which in ("basis", "coeffs"):
        d = torch.randn((basis if which == "basis" else coeffs).shape, generator=gen, dtype=torch.float64)
        def shifted(s):
            b, c = (basis + s * d, coeffs) if which == "basis" else (basis, coeffs + s * d)
            return float(_outer_loss(net, params, b, c, batches, x_real, y_real))
        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        analytic = float(((g_basis if which == "basis" else g_coeffs) * d).sum())
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9), which


def test_reverse_pass_equals_autograd_through_the_unrolled_graph():
    """The same gradients (bases, coefficients, initial weights) as autograd through a differentiable unroll of
    torch.optim.SGD's momentum rule (v <- m v + g, w <- w - lr v)."""
    net, params, basis, coeffs, batches, x_real, y_real = _tiny_problem(seed=3, steps=4)
    g_basis, g_coeffs, g_w0 = _reverse(net, params, basis, coeffs, batches, x_real, y_real, lr=0.05, m=0.9)
    names = [n for n, _ in net.named_parameters()]
    b, c = basis.clone().requires_grad_(True), coeffs.clone().requires_grad_(True)
    w0 = [p.clone().requires_grad_(True) for p in params]
    w, v = list(w0), [torch.zeros_like(p) for p in params]
    for rows, labels in batches:
        loss = F.cross_entropy(functional_call(net, dict(zip(names, w)), (decode(b, c[rows], 1, 2),)), labels)
        g = torch.autograd.grad(loss, w, create_graph=True)
        v = [0.9 * vi + gi for vi, gi in zip(v, g)]
        w = [wi - 0.05 * vi for wi, vi in zip(w, v)]
    outer = F.cross_entropy(functional_call(net, dict(zip(names, w)), (x_real,)), y_real)
    ref = torch.autograd.grad(outer, [b, c, *w0])
    assert torch.allclose(g_basis, ref[0], atol=1e-10) and torch.allclose(g_coeffs, ref[1], atol=1e-10)
    assert all(torch.allclose(a, r, atol=1e-10) for a, r in zip(g_w0, ref[2:]))
    assert torch.all(g_coeffs[~torch.isin(torch.arange(15), torch.cat([r for r, _ in batches]))] == 0)


def test_forward_unroll_is_torch_sgd_with_momentum_and_stores_the_weights_before_each_step():
    """bptt_efficient_forward (lines 197-225): the network's own SGD optimiser (bptt_optim: lr 0.01, momentum 0.9),
    a copy of the weights kept before every step."""
    net, params, basis, coeffs, batches, _, _ = _tiny_problem(seed=5)
    ref = copy.deepcopy(net)
    opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    before = []
    for rows, labels in batches:
        before.append([p.detach().clone() for p in ref.parameters()])
        opt.zero_grad()
        F.cross_entropy(ref(decode(basis, coeffs[rows], 1, 2)), labels).backward()
        opt.step()
    w, stored = unroll_forward(net, params, basis, coeffs, batches, 1, 2, 0.01, 0.9, keep_on=CPU)
    assert all(torch.allclose(a, b.detach(), atol=1e-12) for a, b in zip(w, ref.parameters()))
    assert all(torch.allclose(a, b, atol=1e-12) for s, r in zip(stored, before) for a, b in zip(s, r))


def test_the_official_coefficient_regulariser_drops_out_of_the_gradient():
    """compressor_bptt_standard.py lines 283-294: alpha * ||c|| is added to the inner loss, then only
    g = d loss / d weights (line 294) is differentiated, so the term contributes nothing: the gradients are those
    without it, however large alpha."""
    net, params, basis, coeffs, batches, x_real, y_real = _tiny_problem(seed=7)
    plain = _reverse(net, params, basis, coeffs, batches, x_real, y_real)
    for kind in ("l1", "l2"):
        reg = _reverse(net, params, basis, coeffs, batches, x_real, y_real,
                       reg=lambda c, k=kind: coeff_regulariser(c, k, 100.0))
        assert all(torch.allclose(a, b) for a, b in zip(plain[:2], reg[:2]))
    c = torch.tensor([[3.0, -4.0]])
    assert float(coeff_regulariser(c, "l2", 0.5)) == pytest.approx(2.5)   # torch.norm(p=2), not squared
    assert float(coeff_regulariser(c, "l1", 0.5)) == pytest.approx(3.5)
    with pytest.raises(DdflowError, match="l1, l2"):
        coeff_regulariser(c, "none", 1.0)


# -- the method -----------------------------------------------------------------------------------------------------
def _tiny_hparams(tmp_path, **quick):
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "rtp.yaml").read_text())
    doc["quick"].update({"iterations": 3, "inner_steps": 2, "batch_syn": 2, "batch_real": 2, "net": "ConvNetW32",
                         "eval": {"rtp": {"net": "ConvNetW32", "epochs": 1, "models": 1}}, **quick})
    (hp_dir / "methods" / "rtp.yaml").write_text(yaml.safe_dump(doc))
    return hp_dir


def _method(mnist5k, tmp_path, **quick):
    from ddflow import hparams
    from ddflow.methods import get_method
    hp = hparams.resolve("rtp", "mnist5k", 1, "quick", _tiny_hparams(tmp_path, **quick))
    m = get_method("rtp")(hp, mnist5k, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    return m


def test_step_updates_bases_and_addressing_with_clipped_sgd(mnist5k, tmp_path):
    """sgld_runner_standard.py lines 203-217: gradients assigned, joint norm clipped at 2, SGD(0.1, momentum 0.5)."""
    from ddflow import hparams
    paper = hparams.resolve("rtp", "cifar10", 1, "paper")
    assert (paper["lr"], paper["momentum"], paper["clip"]) == (0.1, 0.5, 2)   # configs compressor_optim, line 216
    m = _method(mnist5k, tmp_path, lr=0.1)
    assert m.rows == 29 and m.basis.shape == (16, 14 * 14) and m.coeffs.shape == (290, 16)
    opt = m.opt.param_groups[0]
    assert (opt["lr"], opt["momentum"], opt["dampening"], opt["weight_decay"]) == (0.1, 0.5, 0, 0)
    b0, c0 = m.basis.detach().clone(), m.coeffs.detach().clone()
    stats = m.step(0)
    assert torch.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    step = torch.cat([(m.basis.detach() - b0).flatten(), (m.coeffs.detach() - c0).flatten()])
    assert float(step.norm()) <= 0.1 * 2 + 1e-6                  # first SGD step = lr x clipped gradient
    assert float(step.norm()) == pytest.approx(0.1 * min(2.0, float(stats["grad_norm"])), rel=1e-4)


def test_minibatches_are_sorted_rows_of_every_drawn_class(mnist5k, tmp_path):
    """imgs_embedding_basis_minibatch.py lines 110-115: randperm(ipc)[:n_per_c].sort() + ipc * class, per class of
    the task (get_task_indices, sorted: sgld_runner_standard.py lines 49-55)."""
    m = _method(mnist5k, tmp_path, batch_syn=5, task_classes=4)
    classes = m._task_classes()
    assert classes == sorted(classes) and len(set(classes)) == 4
    for rows, labels in m._batches(classes):
        assert len(rows) == 20
        for k, c in enumerate(classes):
            r = rows[5 * k:5 * k + 5]
            assert torch.equal(r, r.sort().values) and bool(((r // 29) == c).all()) and len(r.unique()) == 5
            assert bool((labels[5 * k:5 * k + 5] == c).all())


def test_record_keeps_budget_rows_and_stored_floats(mnist5k, tmp_path):
    from ddflow.records import DistilledSet, check_record
    from ddflow.report.storage import storage
    m = _method(mnist5k, tmp_path)
    res = m.result()
    assert res["images"].shape == (290, 1, 28, 28)
    assert torch.equal(res["labels"], torch.arange(10).repeat_interleave(29))
    assert torch.allclose(res["images"], decode(res["rtp_basis"], res["rtp_coeffs"], 1, 2))
    info = res["rtp"]
    assert info["budget"] == 1 and info["rows_per_class"] == 29 and info["images"] == 290
    assert info["stored_floats"] == 16 * 196 + 290 * 16 == 7776 <= info["budget_floats"] == 7840
    extra = {k: v for k, v in res.items() if k not in ("images", "labels")}
    r = DistilledSet(images=res["images"], labels=res["labels"], method="rtp", dataset="mnist5k", ipc=1, seed=0,
                     mean=mnist5k.info.mean, std=mnist5k.info.std, extra=extra)
    check_record(r, "test")   # 290 images at IPC 1 is right for an RTP record
    st = storage(r)
    assert st["kind"] == "rtp" and st["floats"] == 7776 and st["trained_images"] == 290
    assert st["ipc_equivalent"] == pytest.approx(7776 / 7840)


def test_killed_rtp_run_resumes_to_the_same_memories(mnist5k_path, tmp_path):
    hp_dir = _tiny_hparams(tmp_path)
    args = ("rtp", "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=1, stop_after=2) is None
    resumed = run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=1)
    assert torch.equal(resumed.images, full.images)
    assert torch.equal(resumed.extra["rtp_coeffs"], full.extra["rtp_coeffs"])
    assert full.extra["rtp"]["rows_per_class"] == 29


def test_rtp_protocol_settings_are_the_official_evaluation():
    """tools/evaluator.py lines 47-66 and tools/trainer.py lines 146-159: SGD lr 0.01 momentum 0.9 without weight
    decay (configs backbone_optim; optimizer_utils.py line 14), batch 640, no scheduler; configs evaluation:
    train_epoch 300, num_eval 10; ConvNet-3 width 128 instancenorm (model_utils.py line 13)."""
    from ddflow.protocols import protocol_settings
    s = protocol_settings("rtp", "cifar10", 1, "paper", "rtp")
    assert (s["net"], s["lr"], s["momentum"], s["weight_decay"], s["batch"]) == ("ConvNet", 0.01, 0.9, 0, 640)
    assert (s["epochs"], s["models"]) == (300, 10)
    assert parse_net("ConvNet") == replace(parse_net("ConvNet"), width=128, depth=3, norm="instancenorm",
                                           pool="avgpooling", act="relu")


def test_rtp_protocol_trains_and_tests(mnist5k, tmp_path):
    from ddflow.protocols import get_protocol
    from ddflow.records import DistilledSet
    m = _method(mnist5k, tmp_path)
    res = m.result()
    r = DistilledSet(images=res["images"], labels=res["labels"], method="rtp", dataset="mnist5k", ipc=1, seed=0,
                     mean=mnist5k.info.mean, std=mnist5k.info.std, extra={})
    settings = {"net": "ConvNetW32", "lr": 0.01, "momentum": 0.9, "weight_decay": 0, "batch": 640, "epochs": 1}
    accs = get_protocol("rtp")(r, mnist5k, settings, [torch.Generator().manual_seed(i) for i in range(2)], CPU)
    assert len(accs) == 2 and all(0 <= a <= 100 for a in accs)


# -- interventions (tools/intervention.py) ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["flip", "crop", "cutout"])
def test_reverse_pass_with_an_intervention_equals_autograd_through_the_augmented_unroll(family):
    """compressor_bptt_standard.py lines 216-217 and 277-279: the same intervention (one seed per iteration) on every
    inner step's decoded batch, forward and in the reverse pass; the gradients equal autograd through the augmented
    unroll. The draw is forced to change the images (a flip that flips, a shift, a hole)."""
    from ddflow.augment import DSA
    from ddflow.ops.rtp import interventions
    net, params, basis, coeffs, batches, x_real, y_real = _tiny_problem(seed=5, steps=3)
    dsa = interventions(family)
    assert isinstance(dsa, DSA) and dsa.families == (family,)
    values = {"flip": {"flip": torch.ones(1, dtype=torch.bool)}, "crop": {"crop": torch.tensor([[0.9, 0.1]])},
              "cutout": {"cutout": torch.tensor([[0.3, 0.6]])}}[family]
    draw = DSA.make_draw(family, 1, **values)
    aug = lambda x: dsa.apply(x, draw)   # noqa: E731
    assert not torch.equal(aug(decode(basis, coeffs[:2], 1, 2)), decode(basis, coeffs[:2], 1, 2))
    lr, m = 0.05, 0.9
    w, stored = unroll_forward(net, params, basis, coeffs, batches, 1, 2, lr, m, aug=aug)
    names = [n for n, _ in net.named_parameters()]
    ws = [p.requires_grad_(True) for p in w]
    dl_dw = torch.autograd.grad(F.cross_entropy(functional_call(net, dict(zip(names, ws)), (x_real,)), y_real), ws)
    g_basis, g_coeffs, _ = unroll_backward(net, stored, list(dl_dw), basis, coeffs, batches, 1, 2, lr, m, aug=aug)
    b, c = basis.clone().requires_grad_(True), coeffs.clone().requires_grad_(True)
    wt, v = [p.clone().requires_grad_(True) for p in params], [torch.zeros_like(p) for p in params]
    for rows, labels in batches:
        loss = F.cross_entropy(functional_call(net, dict(zip(names, wt)), (aug(decode(b, c[rows], 1, 2)),)), labels)
        g = torch.autograd.grad(loss, wt, create_graph=True)
        v = [m * vi + gi for vi, gi in zip(v, g)]
        wt = [wi - lr * vi for wi, vi in zip(wt, v)]
    ref = torch.autograd.grad(F.cross_entropy(functional_call(net, dict(zip(names, wt)), (x_real,)), y_real), [b, c])
    assert torch.allclose(g_basis, ref[0], atol=1e-10) and torch.allclose(g_coeffs, ref[1], atol=1e-10)
    plain, _, _ = _reverse(net, params, basis, coeffs, batches, x_real, y_real, lr=lr, m=m)
    assert not torch.allclose(plain, g_basis)


def test_interventions_setting_is_checked_and_the_readme_default_is_none(mnist5k, tmp_path):
    """README: the commands pass `none`; "To add data augmentations, change none to flip_rotate"."""
    from ddflow import hparams
    from ddflow.ops.rtp import interventions
    assert hparams.resolve("rtp", "cifar10", 1, "paper")["interventions"] == "none"
    assert interventions("none") is None and interventions("flip_rotate").families == ("flip", "rotate")
    for bad in ("color", "mixup1.0", "flip_jitter", ""):
        with pytest.raises(DdflowError, match="interventions"):
            interventions(bad)
    with pytest.raises(DdflowError, match="interventions 'color'"):
        _method(mnist5k, tmp_path, interventions="color")


def test_rtp_with_interventions_augments_the_real_and_every_inner_batch_alike(mnist5k, tmp_path, monkeypatch):
    """One draw per iteration (pair_aug, train phase: one seed at sgld_runner_standard.py line 207, the whole batch
    sharing it: intervention.py lines 104-105 and alike) applied to the real batch (compressor_bptt_standard.py lines
    172-173) and to every inner step, forward and backward; the record and protocol rtp carry it on."""
    import ddflow.methods.rtp as rtp_mod
    from ddflow.protocols.rtp import evaluate_rtp
    from ddflow.records import DistilledSet
    seen = []
    real_forward = rtp_mod.unroll_forward

    def spy(*args, aug=None, **kw):
        seen.append(aug)
        return real_forward(*args, aug=aug, **kw)
    monkeypatch.setattr(rtp_mod, "unroll_forward", spy)
    m = _method(mnist5k, tmp_path, interventions="flip_rotate")
    m.step(0)
    m.step(1)
    assert all(a is not None for a in seen) and seen[0].keywords["draw"]["n"] == 1
    assert seen[0].keywords["draw"] is not seen[1].keywords["draw"]
    res = m.result()
    assert res["rtp"]["interventions"] == "flip_rotate"
    got = {}

    def stack_spy(stack, x, y, generators, ts, augment=None, **kw):
        got["augment"] = augment
    monkeypatch.setattr("ddflow.protocols.rtp.train_stack", stack_spy)
    r = DistilledSet(images=res["images"], labels=res["labels"], method="rtp", dataset="mnist5k", ipc=1, seed=0,
                     mean=mnist5k.info.mean, std=mnist5k.info.std, extra={"rtp": res["rtp"]})
    settings = {"net": "ConvNetW32", "lr": 0.01, "momentum": 0.9, "weight_decay": 0, "batch": 640, "epochs": 1,
                "interventions": "auto"}
    evaluate_rtp(r, mnist5k, settings, [torch.Generator().manual_seed(0)], CPU)
    assert got["augment"].families == ("flip", "rotate")
    evaluate_rtp(r, mnist5k, {**settings, "interventions": "none"}, [torch.Generator().manual_seed(0)], CPU)
    assert got["augment"] is None


def test_official_rtp_checkpoint_imports_as_its_decoded_set(tmp_path):
    """runners/sgld_runner_standard.py lines 245-248 save {'compressor': state_dict} of
    compressors/imgs_embedding_basis_minibatch.py: nn.Embedding tables basis (n_basis, C*h*w) and imgs (rows *
    classes, n_basis), rows class after class (lines 34-40). The import decodes them, labels rows by class, checks the
    rows per class against the budget formula and keeps the memories."""
    from ddflow.interop.imports import build_records, check_entry
    from ddflow.report.storage import storage
    g = torch.Generator().manual_seed(0)
    basis, coeffs = torch.randn(16, 14 * 14, generator=g), torch.randn(290, 16, generator=g)
    path = tmp_path / "imgs_embedding_basis_minibatch_MNIST_compressor.pt"
    torch.save({"compressor": {"basis.weight": basis, "imgs.weight": coeffs}}, path)
    entry = check_entry("rtp-official", {"path": str(path), "format": "rtp", "dataset": "mnist5k", "ipc": 1,
                                         "space": "normalized"}, "quick")
    assert entry.protocols == ["rtp"] and entry.eval_as == "rtp"
    (rec,) = build_records(entry, "quick")
    assert torch.allclose(rec.images, decode(basis, coeffs, 1, 2))
    assert torch.equal(rec.labels, torch.arange(10).repeat_interleave(29))
    assert torch.equal(rec.extra["rtp_coeffs"], coeffs)
    info = rec.extra["rtp"]
    assert (info["rows_per_class"], info["budget"], info["stored_floats"], info["downsample"]) == (29, 1, 7776, 2.0)
    assert storage(rec)["floats"] == 7776
    wrong = check_entry("rtp-official", {"path": str(path), "format": "rtp", "dataset": "mnist5k", "ipc": 2,
                                         "space": "normalized"}, "quick")
    with pytest.raises(DdflowError, match="29 rows per class .* budget 2 gives"):
        build_records(wrong, "quick")
    torch.save({"compressor": {"basis.weight": basis}}, tmp_path / "bad.pt")
    bad = check_entry("bad", {"path": str(tmp_path / "bad.pt"), "format": "rtp", "dataset": "mnist5k", "ipc": 1,
                              "space": "normalized"}, "quick")
    with pytest.raises(DdflowError, match="not one"):
        build_records(bad, "quick")
