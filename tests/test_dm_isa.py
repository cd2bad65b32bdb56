"""dm-isa (ISA appendix Table 8, "DM + Ours"): DM exactly at keep = 1, eps = 0; its class term against a direct
computation; resume equality."""
import shutil

import pytest
import torch
import yaml

from ddflow import hparams
from ddflow.methods import get_method
from ddflow.settings import distill_cell as run
from test_distill import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _method(method, data, **changes):
    hp = hparams.resolve(method, "mnist5k", 1, "quick")
    hp.update(batch_real=4, **changes)
    m = get_method(method)(hp, data, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    return m


def test_dm_isa_without_selection_and_augmentation_is_dm(mnist5k):
    dm, isa = _method("dm", mnist5k), _method("dm-isa", mnist5k, keep=1.0, eps=0.0)
    assert torch.equal(dm.images, isa.images)
    for it in range(3):
        assert torch.equal(dm.step(it)["loss"], isa.step(it)["loss"])
    assert torch.equal(dm.images, isa.images)
    isa_on = _method("dm-isa", mnist5k)  # the paper settings change the images
    isa_on.step(0)
    dm0 = _method("dm", mnist5k)
    dm0.step(0)
    assert not torch.equal(dm0.images, isa_on.images)


@pytest.mark.parametrize("segment", ["away", "toward"])
def test_dm_isa_class_term_equals_a_direct_computation(mnist5k, segment):
    m = _method("dm-isa", mnist5k, keep=0.6, eps=0.5, segment=segment)
    g = torch.Generator().manual_seed(3)
    real, syn = torch.randn(5, 3, generator=g), torch.randn(2, 3, generator=g)
    mu_s = [sum(float(syn[k, e]) for k in range(2)) / 2 for e in range(3)]
    score = [sum((float(real[i, e]) - mu_s[e]) ** 2 for e in range(3)) for i in range(5)]
    kept = sorted(range(5), key=lambda i: -score[i])[:3]            # floor(0.6 * 5) = 3 hardest
    feats = [[float(real[i, e]) for e in range(3)] for i in kept]

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / (sum(a * a for a in u) * sum(b * b for b in v)) ** 0.5

    partner = [max((j for j in range(3) if j != i), key=lambda j: cos(feats[i], feats[j])) for i in range(3)]
    sign = 1.0 if segment == "away" else -1.0
    a = [sum(f[e] for f in feats) / 3 - mu_s[e] for e in range(3)]
    b = [sign * sum(feats[i][e] - feats[partner[i]][e] for i in range(3)) / 3 for e in range(3)]
    # the squared residual along the segment, averaged over l in [0, eps] by the midpoint rule (independent of the
    # closed form)
    n, eps = 20000, 0.5
    expected = sum(sum((a[e] + (k + 0.5) / n * eps * b[e]) ** 2 for e in range(3)) for k in range(n)) / n
    assert float(m.class_loss(real, syn)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("segment", ["away", "toward"])
def test_dm_isa_is_dm_against_the_kept_mean_shifted_by_half_eps_times_the_neighbour_offset(mnist5k, segment):
    """The faithful reading (docstring of ddflow.methods.dm_isa): with DM's real features constant, ISA's closed form
    ||A||^2 + eps A.B + eps^2 ||B||^2 / 3 (fiona-lxd/ISA isa.py line 196) is ||A + eps B / 2||^2 plus the constant
    eps^2 ||B||^2 / 12: DM on the hardest samples against a shifted real mean, the same gradient."""
    from ddflow.ops.krr import nearest_other, select_by_error
    eps = 0.5
    m = _method("dm-isa", mnist5k, keep=0.8, eps=eps, segment=segment)
    g = torch.Generator().manual_seed(4)
    real = torch.randn(10, 6, generator=g, dtype=torch.float64)   # float64: the constant is a small difference
    syn = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = m.class_loss(real, syn)
    (grad,) = torch.autograd.grad(loss, syn)
    kept = real[select_by_error((real - syn.detach().mean(0)).square().sum(1), 0.8)]
    b = (kept - kept[nearest_other(kept)]).mean(0) * (1.0 if segment == "away" else -1.0)
    shifted = ((kept.mean(0) + eps / 2 * b - syn.mean(0)) ** 2).sum()
    (want,) = torch.autograd.grad(shifted, syn)
    assert grad.abs().max() > 0 and torch.allclose(grad, want, rtol=1e-10, atol=1e-12)
    assert float((loss - shifted).detach()) == pytest.approx(eps ** 2 / 12 * float((b ** 2).sum()), rel=1e-9)


def test_dm_isa_gradient_reaches_only_the_synthetic_images(mnist5k):
    m = _method("dm-isa", mnist5k)
    real, syn = torch.randn(8, 4), torch.randn(2, 4, requires_grad=True)
    m.class_loss(real, syn).backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


def test_killed_dm_isa_run_resumes_to_the_same_images(mnist5k_path, tmp_path):
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "dm.yaml").read_text())
    doc["quick"].update(iterations=5, batch_real=4)
    (hp_dir / "methods" / "dm.yaml").write_text(yaml.safe_dump(doc))
    args = ("dm-isa", "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2, stop_after=3) is None
    resumed = run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2)
    assert torch.equal(resumed.images, full.images)
