"""MTT + ISA (ISA appendix Table 8): ISA's module on the student's steps; switched off it is MTT exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddflow import hparams
from ddflow.methods import get_method
from ddflow.ops.trajectory import isa_cross_entropy
from fake_experts import write_fake_experts

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _brute(feats, w, b, y, keep, eps, grid=4001):
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
        vals = torch.stack([-(y[i] + t * (y[i] - y[j])) @ F.log_softmax((feats[i] + t * (feats[i] - feats[j])) @ w.T
                                                                         + b, -1) for t in ls])
        total += float(torch.trapezoid(vals, ls)) / eps
    return total / len(kept)


def test_isa_cross_entropy_is_the_segment_mean_over_the_hardest_samples():
    g = torch.Generator().manual_seed(0)
    feats, w, b = torch.randn(10, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    for keep, eps in ((0.8, 0.5), (1.0, 1.0), (0.5, 0.3)):
        got = isa_cross_entropy(feats, w, b, y, keep, eps, points=6)
        assert got.item() == pytest.approx(_brute(feats, w, b, y, keep, eps), rel=1e-4)
    # eps 0, keep 1: the plain mean cross-entropy
    assert torch.allclose(isa_cross_entropy(feats, w, b, y, 1.0, 0.0, 4), F.cross_entropy(feats @ w.T + b, y))


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


def test_mtt_isa_rejects_bad_settings(random_real, manifest):
    from ddflow.errors import DdflowError
    with pytest.raises(DdflowError, match="isa_keep"):
        _method("mtt-isa", random_real(3), manifest, isa_keep=0.0)
