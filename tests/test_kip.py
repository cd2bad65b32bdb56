"""KIP (ddflow.methods.kip), KIP's ZCA (ddflow.data.zca kind 'kip'), its protocols (ddflow.protocols.kip) and the
import of its released sets, against direct computations of the official notebooks (google-research kip/)."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ddflow.data import get_info
from ddflow.data.real import RealData
from ddflow.data.zca import fit_zca
from ddflow.interop.readers import read_sets
from ddflow.methods.kip import class_balanced_indices, kip_loss
from ddflow.nets.kip import build_kip_net
from ddflow.ops.infinite_kernels import KernelNet, kernels
from ddflow.protocols.kip import empirical_ntk, krr_inf_accuracy, max_learning_rate
from ddflow.settings import distill_cell as run

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_kip_zca_follows_the_notebook():
    """nn_training.ipynb cell eUwrmFWxfuAf (`_get_whitening_transform`, `_get_preprocess_op`): channel
    standardisation, per-image centring and unit norm, cov = X^T X / n (no feature centring), reg = zca_reg tr/d,
    eigenvalues beyond n set to 1 (rank control), whitened = x @ T. Direct numpy computation (channels last, as the
    notebook flattens NHWC: the result is the same image)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 2, 4, 4, generator=g, dtype=torch.float64)   # n = 20 < d = 32: rank control applies
    z = fit_zca(x, "kip", 0.1)
    a = x.permute(0, 2, 3, 1).numpy()
    a = (a - a.mean(axis=(0, 1, 2))) / a.std(axis=(0, 1, 2))
    flat = a.reshape(len(a), -1)
    flat = flat - flat.mean(1, keepdims=True)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    cov = flat.T @ flat / len(flat)
    reg = 0.1 * np.trace(cov) / cov.shape[0]
    u, s, _ = np.linalg.svd(cov + reg * np.eye(cov.shape[0]))
    inv = s ** -0.5
    inv[len(flat):] = 1.0
    want = (flat @ (u * inv) @ u.T).reshape(a.shape).transpose(0, 3, 1, 2)
    got = z.apply(x.float()).double().numpy()
    assert np.allclose(got, want, atol=2e-5)
    assert z.reg == pytest.approx(reg, rel=1e-5)
    restored = type(z).from_state_dict(z.state_dict())
    assert torch.allclose(restored.apply(x.float()), z.apply(x.float()))


def test_kip_loss_is_the_notebook_krr_loss_and_reaches_images_and_labels():
    """KIP.ipynb loss_acc_fn (cell XHfPTAAmrBIR): K_ss + |reg| tr(K_ss)/n I, pred = K_ts solve(., y_s),
    0.5 * mean((pred - y_t)^2), accuracy = argmax agreement."""
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ys = (torch.eye(4, dtype=torch.float64) - 0.25).requires_grad_(True)
    xt = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    yt = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 0, 1])] - 0.25
    net = KernelNet("fc", depth=1)
    k_ss, k_ts = kernels(xs, None, net), kernels(xt, xs, net)
    loss, acc = kip_loss(k_ss, k_ts, ys, yt, 1e-6)
    lam = 1e-6 * torch.trace(k_ss) / 4
    pred = k_ts @ torch.linalg.inv(k_ss + lam * torch.eye(4, dtype=torch.float64)) @ ys
    assert float(loss) == pytest.approx(0.5 * float(((pred - yt) ** 2).mean()), rel=1e-9)
    assert float(acc) == pytest.approx(float((pred.argmax(1) == yt.argmax(1)).double().mean()))
    loss.backward()
    assert xs.grad.abs().sum() > 0 and ys.grad.abs().sum() > 0


def test_class_balanced_target_batch():
    """KIP.ipynb class_balanced_sample: size / C distinct indices per class; a size C does not divide is an error."""
    per_class = [torch.arange(c * 10, c * 10 + 10) for c in range(3)]
    idx = class_balanced_indices(per_class, 9, torch.Generator().manual_seed(0))
    assert [int(((idx >= c * 10) & (idx < c * 10 + 10)).sum()) for c in range(3)] == [3, 3, 3]
    assert len(set(idx.tolist())) == 9
    with pytest.raises(Exception, match="must divide"):
        class_balanced_indices(per_class, 10, torch.Generator())


def test_max_learning_rate_from_the_empirical_ntk():
    """nn_training.ipynb run_trainer: the empirical NTK of sum(f)/sqrt(C) (logit_reduced_f) and neural-tangents
    predict.max_learning_rate = 2 (1 + momentum) * y_size / (lambda_max + eps): against a full Jacobian."""
    net = build_kip_net("conv", 1, 3, 8, 8, 1, "standard", generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = empirical_ntk(net, x)
    rows = []
    for i in range(5):
        net.zero_grad()
        (net(x[i:i + 1]).sum() / math.sqrt(3)).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    j = torch.stack(rows)
    assert torch.allclose(k, j @ j.T, rtol=1e-8)
    lam = float(torch.linalg.eigvalsh(j @ j.T)[-1])
    assert max_learning_rate(k, 15) == pytest.approx(2 * 15 / (lam + 1e-12), rel=1e-8)


def test_krr_inf_recovers_the_support_and_is_chance_free_on_separable_data():
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(10, 1, 4, 4, generator=g)
    ys = torch.eye(10) - 0.1
    y_test = torch.arange(10)
    net = KernelNet("fc", depth=1)
    assert krr_inf_accuracy(xs, ys, xs, y_test, net) == 100.0
    assert krr_inf_accuracy(xs, ys, xs + 0.01 * torch.randn(10, 1, 4, 4, generator=g), y_test, net) == 100.0


def test_kip_format_reads_channels_last_images_and_centred_labels(tmp_path):
    """kip/dataset.ipynb: .npz with 'images' (NHWC) and 'labels' (N, C), as nn_training.ipynb load_kip_data reads."""
    images = np.random.default_rng(0).normal(size=(20, 28, 28, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[np.arange(20) % 10] - 0.1
    path = tmp_path / "kip_mnist_ConvNet_ssize20_zca_nol_noaug_ckpt1000.npz"
    np.savez(path, images=images, labels=labels)
    (raw,) = read_sets("kip", path, 1)
    assert raw.images.shape == (20, 1, 28, 28)
    assert torch.equal(raw.images[3, 0], torch.from_numpy(images[3, :, :, 0]))
    assert torch.equal(raw.labels, torch.from_numpy(labels))
    np.savez(tmp_path / "bad.npz", images=images[..., 0], labels=labels)
    with pytest.raises(Exception, match="NHWC|N, H, W, C"):
        read_sets("kip", tmp_path / "bad.npz", 1)


def _hp_dir(tmp_path: Path, **quick) -> Path:
    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "kip.yaml").read_text())
    doc["quick"].update(quick)
    (hp_dir / "methods" / "kip.yaml").write_text(yaml.safe_dump(doc))
    return hp_dir


def test_killed_kip_run_resumes_to_the_same_images(mnist5k_path, tmp_path):
    hp_dir = _hp_dir(tmp_path, iterations=4, target_batch=100, learn_labels=True, snapshots=[0])
    args = ("kip", "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2, stop_after=3) is None
    resumed = run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2)
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.labels, full.labels)
    assert full.labels.shape == (10, 10)          # learned labels are kept as (N, C) targets


def test_kip_reduces_its_loss_on_real_data(random_real):
    from ddflow.methods import get_method
    data = random_real(20)
    hp = yaml.safe_load((ROOT / "workflow" / "hparams" / "methods" / "kip.yaml").read_text())["paper"]
    hp.update(target_batch=100, iterations=10)
    m = get_method("kip")(hp, data, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    losses = [float(m.step(i)["loss"]) for i in range(10)]
    assert losses[-1] < losses[0]
    assert RealData is not None and get_info("mnist5k").classes == 10


def test_kip_npz_imports_as_a_record_in_kips_zca_space_for_both_protocols(tmp_path):
    """A 'zca' KIP file (kip/dataset.ipynb naming) imported with a kind-'kip' ZCA state: the record keeps KIP's
    centred labels as (N, C) targets and fits krr-inf and kip-nn (eval_as kip)."""
    from ddflow.interop.imports import build_records, check_entry
    g = torch.Generator().manual_seed(5)
    zca = fit_zca(torch.rand(64, 1, 28, 28, generator=g), "kip", 0.1)
    torch.save(zca.state_dict(), tmp_path / "zca.pt")
    x = zca.apply(torch.rand(20, 1, 28, 28, generator=g))
    labels = np.eye(10, dtype=np.float32)[np.arange(20) % 10] - 0.1
    path = tmp_path / "ConvNet_ssize20_zca_nol_noaug_ckpt1000.npz"
    np.savez(path, images=x.permute(0, 2, 3, 1).numpy(), labels=labels)
    entry = check_entry("kip-released", {"path": str(path), "format": "kip", "dataset": "mnist5k", "ipc": 2,
                                         "space": "zca", "zca": str(tmp_path / "zca.pt"),
                                         "protocols": ["kip-nn", "krr-inf"]}, "quick")
    assert check_entry("k", {"path": str(path), "format": "kip", "dataset": "mnist5k", "ipc": 2, "space": "zca",
                             "zca": str(tmp_path / "zca.pt")}, "quick").protocols == ["kip-nn"]
    assert entry.eval_as == "kip"
    (rec,) = build_records(entry, "quick")
    assert rec.space == "zca" and rec.zca["kind"] == "kip" and rec.labels.shape == (20, 10)
    assert torch.allclose(rec.labels.sum(1), torch.zeros(20), atol=1e-6)


def test_kip_with_the_convnet_kernel_takes_finite_steps_on_tiny_images():
    """kernel: conv (nn_training.ipynb ConvNet, prepended conv, depth 1 here) through the method's step."""
    from ddflow.methods import get_method
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(4)
    x = torch.randn(40, 1, 4, 4, generator=g)
    data = RealData(x, y, x[:10].clone(), y[:10].clone(), get_info("mnist5k"))
    hp = yaml.safe_load((ROOT / "workflow" / "hparams" / "methods" / "kip.yaml").read_text())["paper"]
    hp.update(target_batch=20, kernel="conv", depth=1, learn_labels=True)
    m = get_method("kip")(hp, data, 1, torch.Generator().manual_seed(0), CPU)
    m.init()
    before = m.images.detach().clone()
    out = [m.step(i) for i in range(2)]
    assert all(math.isfinite(float(o["loss"])) for o in out)
    assert not torch.equal(before, m.images.detach())


def test_kip_zca_inverse_returns_finite_images_of_the_fitted_shape():
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    z = fit_zca(x, "kip", 0.1)
    back = z.inverse(z.apply(x))
    assert back.shape == x.shape and torch.isfinite(back).all()
