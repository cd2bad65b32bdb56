"""LD (ondrejbohdal/label-distillation at 7ebc088, label_distillation_or2.py): the label meta-gradient against a
direct second-order computation, the reset rule against the official loop, the label step's projection, the
validation split's place, the protocol's training, resume equality."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from ddflow.data.sources import load_arrays
from ddflow.data.validation import write_split
from ddflow.ops.bilevel import ResetRule, baseline_checkpoints, ld_label_meta_loss, stats_gap
from ddflow.settings import distill_cell as run
from tiny_workflow import write_tiny_mnist5k

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_label_meta_gradient_equals_a_direct_second_order_computation():
    """label_distillation_or2.py lines 565-591. The inner loss is linear in the labels, (1/B) sum_i sum_c -y_ic
    log p_c(x_i; w), so with w' = w - a grad_w inner and G = grad_{w'} outer(w'), d outer / d y_ic =
    (a / B) <G, grad_w log p_c(x_i; w)>: a first-order gradient at w' dotted with per-(i, c) gradients at w."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    g = torch.Generator().manual_seed(1)
    xb = torch.randn(4, 1, 3, 4, generator=g, dtype=torch.float64)
    labels = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), 1).requires_grad_(True)
    xt = torch.randn(7, 1, 3, 4, generator=g, dtype=torch.float64)
    yt = torch.randint(0, 3, (7,), generator=g)
    a = 0.3
    params = dict(net.named_parameters())
    outer, _, _ = ld_label_meta_loss(net, params, xb, labels, xt, yt, a)
    (ours,) = torch.autograd.grad(outer, labels)

    names = list(params)
    w = {n: p.detach() for n, p in params.items()}
    wr = {n: v.clone().requires_grad_(True) for n, v in w.items()}
    inner = -(labels.detach() * torch.log_softmax(functional_call(net, wr, (xb,)), 1)).sum(1).mean()
    gin = torch.autograd.grad(inner, [wr[n] for n in names])
    fast = {n: (w[n] - a * gi).requires_grad_(True) for n, gi in zip(names, gin)}
    G = torch.autograd.grad(nn.functional.cross_entropy(functional_call(net, fast, (xt,)), yt),
                            [fast[n] for n in names])
    direct = torch.zeros(4, 3, dtype=torch.float64)
    for i in range(4):
        for c in range(3):
            wi = {n: v.clone().requires_grad_(True) for n, v in w.items()}
            logp = torch.log_softmax(functional_call(net, wi, (xb[i:i + 1],)), 1)[0, c]
            gl = torch.autograd.grad(logp, [wi[n] for n in names])
            direct[i, c] = a / 4 * sum((Gk * glk).sum() for Gk, glk in zip(G, gl))
    assert ours.abs().max() > 0
    assert torch.allclose(ours, direct, rtol=1e-9, atol=1e-12)


def _official_reset_loop(errors, gap):
    """label_distillation_or2.py lines 614-660 written out as the official loop (variables as there)."""
    ma_list, ma_sum, lowest_ma_sum, current_num_steps, num_steps_list, num_steps_from_min = [], 0, 999999999, 0, [], 0
    resets = []
    for k, err in enumerate(errors):
        if len(ma_list) < gap:
            ma_list.append(err)
            ma_sum += err
            current_num_steps += 1
            if current_num_steps == gap:
                lowest_ma_sum = ma_sum
                num_steps_from_min = 0
        else:
            ma_sum = ma_sum - ma_list[0] + err
            ma_list = ma_list[1:] + [err]
            current_num_steps += 1
            if ma_sum < lowest_ma_sum:
                lowest_ma_sum = ma_sum
                num_steps_from_min = 0
            elif num_steps_from_min < gap:
                num_steps_from_min += 1
            else:
                num_steps_list.append(current_num_steps - num_steps_from_min - 1)
                ma_list, ma_sum, lowest_ma_sum, current_num_steps, num_steps_from_min = [], 0, 999999999, 0, 0
                resets.append(k)
    return resets, num_steps_list, current_num_steps


@pytest.mark.parametrize("seed", range(5))
def test_reset_rule_follows_the_official_moving_average_loop(seed):
    rng = np.random.default_rng(seed)
    # an error that falls then rises, with noise: the model should be reset several times
    errors = [float(e) for e in np.clip(
        np.tile(np.concatenate([np.linspace(90, 10, 60), np.linspace(10, 40, 60)]), 4) + rng.normal(0, 5, 480),
        0, 100)]
    rule = ResetRule(gap=10)
    ours = [k for k, e in enumerate(errors) if rule.update(e)]
    resets, counts, current = _official_reset_loop(errors, 10)
    assert ours == resets and rule.reset_steps == counts and rule.steps == current
    assert len(resets) >= 2
    # lines 390-394: the mean of the last three reset counts (int), or the current count before any reset
    assert rule.num_steps() == int(np.mean(counts[-3:]))
    assert ResetRule(gap=10).num_steps() == 0


def test_stats_gap_and_baseline_search_follow_the_official_values():
    """lines 549-554 (stats_gap) and 819-861 (find_best_num_steps' limits and validation steps)."""
    assert stats_gap(10, 10) == 50 and stats_gap(10, 100) == 50 and stats_gap(10, 500) == 200
    assert stats_gap(100, 100) == 100
    limit, checks = baseline_checkpoints(100)
    assert limit == 1000 and {9, 24, 74, 49, 99, 999} <= checks and 50 not in checks
    limit, checks = baseline_checkpoints(500)
    assert limit == 1701 and 1700 in checks and 49 not in checks


def _tiny_inputs(mnist5k_path, tmp_path):
    tiny = write_tiny_mnist5k(mnist5k_path, tmp_path / "tiny.npz", per_class=8, n_test=20)
    val = tmp_path / "tiny-val.npz"
    write_split(load_arrays(tiny)["y_train"], 10, {"per_class": 2, "seed": 0}, "mnist5k", val)
    return tiny, val


def test_ld_distils_from_the_fit_split_and_chooses_on_the_validation_split(mnist5k_path, tmp_path):
    """The base examples come from the training split minus the validation split; the validation split is part of
    the training split, so it cannot meet the test split; the labels stay distributions (lines 593-595)."""
    from ddflow.data import get_info, load_real
    from ddflow.data.validation import carve, load_split
    from ddflow.methods import get_method
    tiny, val = _tiny_inputs(mnist5k_path, tmp_path)
    data = load_real(tiny, get_info("mnist5k"))
    val_idx = load_split(val, "mnist5k", len(data.y_train))
    fit = carve(data, val_idx)
    assert len(fit.y_train) == 60 and len(fit.y_val) == 20
    whole = data.x_train[torch.arange(len(data.y_train))]
    assert torch.equal(fit.x_val[torch.arange(20)], whole[torch.as_tensor(val_idx)])
    hp = {"variant": "or2", "epochs": 5, "batch": 32, "inner_batch_size": 5, "inner_lr": 0.01, "lr_labels": 0.001,
          "lr_model": 0.001, "init": "real", "net": "auto"}
    m = get_method("ld")(hp, fit, 1, torch.Generator().manual_seed(0), CPU, {"validation": str(val)})
    m.init()
    fit_images = fit.x_train[torch.arange(60)]
    for x in m.x_base:
        assert any(torch.equal(x, f) for f in fit_images)
        assert not any(torch.equal(x, v) for v in whole[torch.as_tensor(val_idx)])
    for it in range(m.iterations):
        m.step(it)
    assert torch.allclose(m.labels.sum(1), torch.ones(10)) and float(m.labels.min()) >= 0
    assert m.best["epoch"] == 4 and m.best["num_steps"] == m.iterations
    res = m.result()
    assert res["labels"].shape == (10, 10) and res["ld"]["num_steps"] == m.iterations


def test_killed_ld_run_resumes_to_the_same_labels(mnist5k_path, tmp_path):
    tiny, val = _tiny_inputs(mnist5k_path, tmp_path)
    ov = {"epochs": 5, "batch": 32}                           # 5 x ceil(60 / 32) = 10 iterations
    args = ("ld", "mnist5k", 1, 0, "quick", CPU, tiny)
    inputs = {"validation": str(val)}
    full = run(*args, tmp_path / "full.pt", inputs=inputs, overrides=ov)
    assert full.iterations == 10 and full.labels.shape == (10, 10)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", resume=resume, save_every=1, stop_after=7, inputs=inputs,
               overrides=ov) is None
    resumed = run(*args, tmp_path / "r.pt", resume=resume, save_every=1, inputs=inputs, overrides=ov)
    assert torch.equal(resumed.labels, full.labels) and torch.equal(resumed.images, full.images)
    assert resumed.extra["ld"] == full.extra["ld"]
    assert "minus its validation split" in full.extra["seen"]


def test_protocol_ld_trains_fresh_nets_with_adam_on_the_base_examples_for_the_chosen_steps(mnist5k):
    """label_distillation_or2.py test (lines 744-809): a fresh default-init net, Adam (defaults), each step the first
    inner_batch_size of a new permutation of the base examples with their labels (soft CE), then the test split."""
    from ddflow.nets.bilevel import build
    from ddflow.protocols.bilevel import evaluate_ld
    from ddflow.records import DistilledSet
    g = torch.Generator().manual_seed(0)
    x = mnist5k.x_train[torch.arange(10) * 37]
    labels = torch.softmax(torch.randn(10, 10, generator=g), 1)
    rec = DistilledSet(images=x, labels=labels, method="ld", dataset="mnist5k", ipc=1, seed=0, mean=(0.1307,),
                       std=(0.3081,), extra={"ld": {"num_steps": 4, "inner_batch_size": 3, "net": "LeNet"}})
    small = type(mnist5k)(mnist5k.x_train, mnist5k.y_train, mnist5k.x_test[:100], mnist5k.y_test[:100], mnist5k.info)
    (acc,) = evaluate_ld(rec, small, {"net": "auto", "lr": 0.001, "inner_batch_size": 50, "models": 1},
                         [torch.Generator().manual_seed(7)], CPU)
    g = torch.Generator().manual_seed(7)
    net = build("LeNet", 1, 10, 28, g, "default")
    opt = torch.optim.Adam(net.parameters())
    for _ in range(4):
        idx = torch.randperm(10, generator=g)[:3]
        loss = -(labels[idx] * torch.log_softmax(net(x[idx]), 1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        by_hand = 100.0 * float((net(small.x_test[:100]).argmax(1) == small.y_test[:100]).float().mean())
    assert acc == pytest.approx(by_hand)


def test_protocol_ld_searches_the_step_count_on_the_validation_split_for_hard_labels(mnist5k, monkeypatch):
    """LD's baseline (lines 315-331): one-hot labels, the step count from find_best_num_steps (lines 812-889: one
    fresh model validated at fixed steps, the first lowest validation error wins), then the 20 test runs."""
    import ddflow.ops.ldrr as ldrr
    import ddflow.protocols.bilevel as bl
    from ddflow.data import RealData
    from ddflow.records import DistilledSet
    monkeypatch.setattr(bl, "baseline_checkpoints", lambda n: (6, {1, 3, 5}))
    seen = []
    real_accuracy = ldrr.accuracy   # the or2 learner scores through it (ddflow.ops.ldrr.AdamLearner)

    def spy(net, params, x, y, device, chunk=1024):
        acc = real_accuracy(net, params, x, y, device, chunk)
        seen.append((len(y), acc))
        return acc
    monkeypatch.setattr(ldrr, "accuracy", spy)
    idx = torch.arange(10) * 37
    rec = DistilledSet(images=mnist5k.x_train[idx], labels=mnist5k.y_train[idx], method="random", dataset="mnist5k",
                       ipc=1, seed=0, mean=(0.1307,), std=(0.3081,))
    val = torch.arange(1000, 1060)
    data = RealData(mnist5k.x_train, mnist5k.y_train, mnist5k.x_test[:40], mnist5k.y_test[:40], mnist5k.info,
                    x_val=mnist5k.x_train[val], y_val=mnist5k.y_train[val])
    bl.evaluate_ld(rec, data, {"net": "auto", "lr": 0.001, "inner_batch_size": 5, "models": 1, "search_seed": 0},
                   [torch.Generator().manual_seed(1)], CPU)
    val_errs = [100.0 - a for _, a in seen[:3]]   # the search's checks; then the model's test and validation
    assert [n for n, _ in seen] == [60, 60, 60, 40, 60]   # accuracies (ddflow.protocols.registry.scored)
    best = [2, 4, 6][val_errs.index(min(val_errs))]
    # the test run trained `best` steps: rerun it by hand with the same generator and compare
    from ddflow.nets.bilevel import build
    from ddflow.ops.bilevel import train_on_base
    g = torch.Generator().manual_seed(1)
    net = build("LeNet", 1, 10, 28, g, "default")
    train_on_base(net, rec.images, torch.nn.functional.one_hot(rec.labels, 10).float(), best, 5, g, 0.001)
    assert seen[3][1] == pytest.approx(real_accuracy(net.eval(), None, data.x_test, data.y_test, CPU))
