"""MTT + ISA (ISA appendix Table 8): ISA's module on the student's steps; switched off it is MTT exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddflow import hparams
from ddflow.methods import get_method
from ddflow.ops.unrolled_student import isa_cross_entropy
from fake_experts import write_fake_experts

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _brute(feats, w, b, y, keep, eps, segment, grid=4001):
    """The segment mean by a fine trapezoid rule, pairs and hardest samples found by explicit loops."""
    logits = feats @ w.T + b
    y = F.one_hot(y, logits.shape[1]).float()
    ce = [-(y[i] * F.log_softmax(logits[i], -1)).sum() for i in range(len(y))]
    n = int(keep * len(y) + 1e-9)
    kept = sorted(range(len(y)), key=lambda i: -float(ce[i]))[:n]
    total = 0.0
    for i in kept:
        sims = {j: float(F.cosine_similarity(feats[i], feats[j], 0)) for j in kept if j != i}
        j = max(sims, key=sims.get)
        ls = torch.linspace(0, eps, grid)
        if segment == "toward":
            point = [((1 - t) * feats[i] + t * feats[j], (1 - t) * y[i] + t * y[j]) for t in ls]
        else:
            point = [(feats[i] + t * (feats[i] - feats[j]), y[i]) for t in ls]
        vals = torch.stack([-target @ F.log_softmax(f @ w.T + b, -1) for f, target in point])
        total += float(torch.trapezoid(vals, ls)) / eps
    return total / len(kept)


@pytest.mark.parametrize("segment", ["toward", "away"])
def test_isa_cross_entropy_is_the_segment_mean_over_the_hardest_samples(segment):
    g = torch.Generator().manual_seed(0)
    feats, w, b = torch.randn(10, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    for keep, eps in ((0.8, 0.5), (1.0, 1.0), (0.5, 0.3)):
        got = isa_cross_entropy(feats, w, b, y, keep, eps, points=6, segment=segment)
        assert got.item() == pytest.approx(_brute(feats, w, b, y, keep, eps, segment), rel=1e-4)
    # eps 0, keep 1: the plain mean cross-entropy
    assert torch.allclose(isa_cross_entropy(feats, w, b, y, 1.0, 0.0, 4, segment),
                          F.cross_entropy(feats @ w.T + b, y))


def _extrapolated_label_loss(feats, w, b, y, eps, points=4):
    """ISA's code's segment (isa.py lines 192-196) under cross-entropy: features AND labels moved away from j."""
    logits = feats @ w.T + b
    y = F.one_hot(y, logits.shape[1]).float()
    j = F.normalize(feats, dim=1).matmul(F.normalize(feats, dim=1).T).fill_diagonal_(-2).argmax(1)
    nodes, weights = (torch.tensor(v, dtype=torch.float32) for v in np.polynomial.legendre.leggauss(points))
    return sum(wt / 2 * -((y + t * (y - y[j])) * F.log_softmax(logits + t * (logits - logits[j]), -1)).sum(-1).mean()
               for t, wt in zip(eps * (nodes + 1) / 2, weights))


@pytest.mark.parametrize("segment", ["toward", "away"])
def test_every_target_is_a_distribution_so_the_loss_is_bounded_below(segment):
    """Two samples of different classes (as every pair at IPC 1): with the head scaled up along the direction that
    separates them, ISA's extrapolated labels drive cross-entropy to minus infinity; ours stays >= 0."""
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])   # class 0 and class 1, each other's only partner
    y = torch.tensor([0, 1])
    w0, b = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), torch.zeros(2)
    old, new = [], []
    for scale in (1.0, 10.0, 100.0, 1000.0):
        w = scale * w0
        old.append(float(_extrapolated_label_loss(feats, w, b, y, 0.5)))
        new.append(float(isa_cross_entropy(feats, w, b, y, 1.0, 0.5, 4, segment)))
    assert old[-1] < -10 and old == sorted(old, reverse=True)       # unbounded below, falling with the scale
    assert min(new) >= 0                                             # a cross-entropy against a distribution
    # random heads of any size: never below zero
    g = torch.Generator().manual_seed(1)
    for scale in (1.0, 1e2, 1e4):
        f, w = torch.randn(8, 5, generator=g), scale * torch.randn(3, 5, generator=g)
        assert isa_cross_entropy(f, w, torch.zeros(3), torch.arange(8) % 3, 0.8, 1.0, 4, segment) >= 0


def test_toward_rejects_eps_beyond_one():
    from ddflow.errors import DdflowError
    with pytest.raises(DdflowError, match="eps"):
        isa_cross_entropy(torch.randn(4, 3), torch.randn(2, 3), torch.zeros(2), torch.tensor([0, 1, 0, 1]), 1.0,
                          1.5, 4, "toward")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return str(write_fake_experts(tmp_path_factory.mktemp("isa_experts"), 30))


def _method(method, data, man, **over):
    hp = hparams.resolve(method, "mnist5k", 1, "quick")
    hp.update({"syn_steps": 3, **over})
    m = get_method(method)(hp, data, 1, torch.Generator().manual_seed(7), CPU, inputs={"trajectories": man})
    m.init()
    return m


def test_mtt_isa_with_its_module_off_is_mtt_exactly(random_real, manifest):
    assert get_method("mtt-isa").seed_id() == "mtt"   # the runner seeds it with MTT's streams
    data = random_real(3)
    mtt = _method("mtt", data, manifest)
    off = _method("mtt-isa", data, manifest, isa_keep=1.0, isa_eps=0.0)
    on = _method("mtt-isa", data, manifest)
    for it in range(3):
        mtt.step(it)
        off.step(it)
        on.step(it)
    assert torch.equal(off.images, mtt.images) and torch.equal(off.syn_lr, mtt.syn_lr)
    assert torch.isfinite(on.images).all() and not torch.equal(on.images, mtt.images)


def test_mtt_isa_rejects_bad_settings_before_any_job():
    """Method.check_hparams (called by ddflow.config.check at parse time and ddflow.settings.distill_settings)."""
    from ddflow.errors import DdflowError
    from ddflow.methods import get_method
    hp = hparams.resolve("mtt-isa", "cifar10", 1, "paper")
    check = get_method("mtt-isa").check_hparams
    with pytest.raises(DdflowError, match="isa_keep"):
        check({**hp, "isa_keep": 0.0}, "here")
    with pytest.raises(DdflowError, match="isa_segment"):
        check({**hp, "isa_segment": "beyond"}, "here")
    with pytest.raises(DdflowError, match="isa_eps <= 1"):
        check({**hp, "isa_segment": "toward", "isa_eps": 1.5}, "here")
    # the paper preset: ISA's feature direction (isa.py lines 192-196), the label held
    assert hparams.resolve("mtt-isa", "cifar10", 1, "paper")["isa_segment"] == "away"
