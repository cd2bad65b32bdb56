"""ZCA whitening: spectra, train-only fitting, inverse, persistence, and the kornia/frepo difference."""
import pytest
import torch

from ddflow.data.zca import ZCA, fit_zca
from ddflow.errors import DdflowError


def make_data(n=500, c=3, h=4, w=4, seed=0, scale=0.1, shift=0.5):
    """Full-rank data with a non-trivial covariance: z @ A with A's singular values spread over [0.5, 2]."""
    g = torch.Generator().manual_seed(seed)
    d = c * h * w
    q1, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    sv = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    a = q1 @ torch.diag(sv) @ q2
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    chan = torch.linspace(0.0, 0.2, c, dtype=torch.float64).repeat_interleave(h * w)  # channel offsets
    x = shift + chan + scale * (z @ a)
    return x.reshape(n, c, h, w).float()


def cov(flat: torch.Tensor, unbiased: bool) -> torch.Tensor:
    f = flat.double()
    f = f - f.mean(0)
    return f.T @ f / (f.shape[0] - (1 if unbiased else 0))


def standardise(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    m = x.mean(dim=(0, 2, 3), keepdim=True)
    s = ((x - m) ** 2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
    return (x - m) / s


def rel_close(a, b, tol):
    return bool(((a - b).abs() <= tol * b.abs()).all())


@pytest.mark.parametrize("c", [1, 3])
def test_kornia_whitened_spectrum(c):
    x = make_data(c=c, scale=0.3)  # eigenvalues ~0.02..0.36 around eps = 0.1
    eps = 0.1
    z = fit_zca(x, "kornia", eps)
    assert z.reg == pytest.approx(eps)
    s = torch.linalg.eigvalsh(cov(x.reshape(len(x), -1), unbiased=True))
    want = torch.sort(s / (s + eps)).values
    got = torch.sort(torch.linalg.eigvalsh(cov(z.apply(x).reshape(len(x), -1), unbiased=True))).values
    assert want.min() < 0.5 < want.max()  # the eps matters: non-trivial spectrum
    assert rel_close(got, want, 1e-5), (got, want)


@pytest.mark.parametrize("c", [1, 3])
def test_frepo_whitened_spectrum(c):
    x = make_data(c=c)
    zreg = 0.1
    z = fit_zca(x, "frepo", zreg)
    xs = standardise(x).reshape(len(x), -1)
    cv = cov(xs, unbiased=False)
    d = cv.shape[0]
    reg = zreg * torch.trace(cv) / d
    assert z.reg == pytest.approx(float(reg), rel=1e-6)
    s = torch.linalg.eigvalsh(cv)
    want = torch.sort(s / (s + reg)).values
    got = torch.sort(torch.linalg.eigvalsh(cov(z.apply(x).reshape(len(x), -1), unbiased=False))).values
    assert rel_close(got, want, 1e-5), (got, want)


@pytest.mark.parametrize("kind,unbiased", [("kornia", True), ("frepo", False)])
def test_tiny_eps_gives_identity_covariance(kind, unbiased):
    x = make_data(c=2)
    z = fit_zca(x, kind, 1e-10)
    c = cov(z.apply(x).reshape(len(x), -1), unbiased)
    assert torch.allclose(c, torch.eye(c.shape[0], dtype=c.dtype), atol=1e-4)
    # and whitened train data are centred
    assert z.apply(x).reshape(len(x), -1).double().mean(0).abs().max() < 1e-5


def test_fitted_on_train_only_kornia():
    x_tr = make_data(seed=1)
    x_te = make_data(n=100, seed=2, shift=0.7)  # a test split with a different mean
    z = fit_zca(x_tr, "kornia")
    assert torch.allclose(z.mean, x_tr.reshape(len(x_tr), -1).double().mean(0).float(), atol=1e-6)
    manual = (x_te.reshape(len(x_te), -1) - z.mean) @ z.transform
    assert torch.allclose(z.apply(x_te), manual.reshape(x_te.shape), atol=1e-5)
    # a fit that saw the test split would give a different map
    z_all = fit_zca(torch.cat([x_tr, x_te]), "kornia")
    assert not torch.allclose(z_all.apply(x_te), z.apply(x_te), atol=1e-2)


def test_fitted_on_train_only_frepo():
    x_tr = make_data(seed=1)
    x_te = make_data(n=100, seed=2, shift=0.7, scale=0.2)
    z = fit_zca(x_tr, "frepo")
    cm = x_tr.double().mean(dim=(0, 2, 3))
    cs = ((x_tr.double() - cm.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3)).sqrt()
    assert torch.allclose(z.channel_mean.double(), cm, atol=1e-6)
    assert torch.allclose(z.channel_std.double(), cs, atol=1e-6)
    xs = (x_te - z.channel_mean.view(1, -1, 1, 1)) / z.channel_std.view(1, -1, 1, 1)
    manual = (xs.reshape(len(x_te), -1) - z.mean) @ z.transform
    assert torch.allclose(z.apply(x_te), manual.reshape(x_te.shape), atol=1e-4)
    z_all = fit_zca(torch.cat([x_tr, x_te]), "frepo")
    assert not torch.allclose(z_all.apply(x_te), z.apply(x_te), atol=1e-2)


@pytest.mark.parametrize("kind", ["kornia", "frepo"])
def test_inverse_round_trip(kind):
    x = make_data(c=3)
    z = fit_zca(x, kind)
    y = z.apply(x)
    assert not torch.allclose(y, x, atol=1e-2)
    assert torch.allclose(z.inverse(y), x, atol=1e-4)


def test_kinds_differ_absolute_vs_relative_eps():
    x = make_data(c=3, scale=0.1)  # raw pixel variances ~0.01-0.04, far from 1: eps 0.1 absolute dominates
    zk = fit_zca(x, "kornia", 0.1)
    zf = fit_zca(x, "frepo", 0.1)
    assert zk.reg == 0.1
    assert zf.reg < 0.15 and zf.reg != pytest.approx(0.1, rel=1e-3)
    # kornia's whitened covariance is strongly shrunk (eigenvalues S/(S+0.1) with small S), frepo's is not
    ek = torch.linalg.eigvalsh(cov(zk.apply(x).reshape(len(x), -1), True))
    ef = torch.linalg.eigvalsh(cov(zf.apply(x).reshape(len(x), -1), False))
    assert ek.max() < 0.4 and ef.min() > 0.5
    assert not torch.allclose(zk.apply(x), zf.apply(x), atol=1e-1)


def test_relative_reg_scales_with_data_absolute_does_not():
    x = make_data(c=1)
    # rescaling the input leaves frepo's output unchanged (standardised first, relative reg) but not kornia's
    zf1, zf2 = fit_zca(x, "frepo"), fit_zca(3 * x, "frepo")
    assert torch.allclose(zf1.apply(x), zf2.apply(3 * x), atol=1e-4)
    zk1, zk2 = fit_zca(x, "kornia"), fit_zca(3 * x, "kornia")
    assert not torch.allclose(zk1.apply(x), zk2.apply(3 * x), atol=1e-2)


def test_default_eps():
    x = make_data(c=1, n=200)
    assert fit_zca(x).kind == "kornia"
    assert fit_zca(x).eps == 0.1 and fit_zca(x, "frepo").eps == 0.1


@pytest.mark.parametrize("kind", ["kornia", "frepo"])
def test_state_dict_round_trip(kind, tmp_path):
    x = make_data(c=2, n=200)
    z = fit_zca(x, kind)
    p = tmp_path / "zca.pt"
    torch.save(z.state_dict(), p)
    z2 = ZCA.from_state_dict(torch.load(p, weights_only=True))
    assert z2.kind == kind and z2.shape == z.shape and z2.reg == z.reg
    assert torch.equal(z2.apply(x), z.apply(x))
    assert torch.allclose(z2.inverse(z.apply(x)), x, atol=1e-4)


def test_state_dict_bad():
    z = fit_zca(make_data(c=1, n=100), "frepo")
    d = z.state_dict()
    d.pop("transform")
    with pytest.raises(DdflowError, match="transform"):
        ZCA.from_state_dict(d)
    d = z.state_dict()
    d.pop("channel_std")
    with pytest.raises(DdflowError, match="channel"):
        ZCA.from_state_dict(d)


def test_frepo_rank_control_when_fewer_images_than_features():
    x = make_data(c=3, n=20)  # d = 48 > N = 20
    z = fit_zca(x, "frepo", 0.1)
    y = z.apply(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(z.inverse(y), x, atol=1e-3)
    # as in FRePo, the d - N smallest eigen-directions are left unscaled: the transform has eigenvalue 1 there
    ev = torch.linalg.eigvalsh(z.transform.double())
    assert int(((ev - 1).abs() < 1e-4).sum()) >= 48 - 20


def test_unknown_kind_and_wrong_shape():
    x = make_data(c=1, n=50)
    with pytest.raises(DdflowError, match="kornia"):
        fit_zca(x, "pca")
    z = fit_zca(x)
    with pytest.raises(DdflowError, match="shape"):
        z.apply(torch.zeros(2, 3, 4, 4))
