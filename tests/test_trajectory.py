"""Trajectory family: expert training, checkpoint sampling, the MTT and EAD math, the mtt / soft protocols."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddflow.data import load_arrays
from ddflow.errors import DdflowError
from ddflow.io import save_npz
from ddflow.methods.ead import ead_loss, effect_terms, literal_coefficient
from ddflow.methods.mtt import student_unroll, trajectory_loss
from ddflow.ops.losses import soft_ce
from ddflow.records.experts import blocks, load_expert
from ddflow.records.trajectories import load_manifest
from ddflow.stages.experts import run as train_experts
from ddflow.stages.sampling import pool_weights, write_ead_pool, write_mtt_manifest

CPU = torch.device("cpu")
SETTINGS = {"epochs": 2, "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch": 64, "augment": "dsa",
            "strategy": "color_crop_cutout_flip_scale_rotate", "zca_eps": 0.1, "batching": "loop"}


@pytest.fixture(scope="module")
def tiny_npz(mnist5k_path, tmp_path_factory):
    """mnist5k cut to 12 training images per class and 100 test images: experts train in a fraction of a second."""
    a = load_arrays(mnist5k_path)
    keep = np.concatenate([np.flatnonzero(a["y_train"] == c)[:12] for c in range(10)])
    out = tmp_path_factory.mktemp("tiny") / "mnist5k-tiny.npz"
    save_npz(out, x_train=a["x_train"][keep], y_train=a["y_train"][keep], x_test=a["x_test"][:100],
             y_test=a["y_test"][:100])
    return out


@pytest.fixture(scope="module")
def experts(tiny_npz, tmp_path_factory):
    d = tmp_path_factory.mktemp("experts")
    outs = [d / f"e{i}.pt" for i in range(3)]
    train_experts("mnist5k", "raw", "ConvNetW32", [0, 1, 2], SETTINGS, tiny_npz, outs, CPU)
    return outs


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(4, 4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _params(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


# ---- experts ---------------------------------------------------------------------------------------------------
def test_expert_file_holds_every_epoch_and_is_the_same_in_any_block(experts, tiny_npz, tmp_path):
    e1 = load_expert(experts[1], "mnist5k", "raw", "ConvNetW32")
    assert e1["epochs"] == 2 and e1["lr"] == [0.01, 0.01] and e1["index"] == 1
    w = e1["params"]["classifier.weight"]
    assert w.shape[0] == 3 and not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    # expert 1 trained alone (a block of one) is bitwise the expert trained in the block of three
    alone = tmp_path / "alone.pt"
    train_experts("mnist5k", "raw", "ConvNetW32", [1], SETTINGS, tiny_npz, [alone], CPU)
    a = load_expert(alone)
    for n, v in e1["params"].items():
        assert torch.equal(v, a["params"][n]), n
    with pytest.raises(DdflowError, match="expected 'ConvNet'"):
        load_expert(experts[1], net="ConvNet")


def test_killed_expert_block_resumes_from_its_last_epoch(experts, tiny_npz, tmp_path):
    resume, outs = tmp_path / "resume.pt", [tmp_path / "e0.pt", tmp_path / "e1.pt"]
    train_experts("mnist5k", "raw", "ConvNetW32", [0, 1], SETTINGS, tiny_npz, outs, CPU, resume=resume,
                  stop_after_epoch=1)
    assert resume.exists() and not outs[0].exists()
    train_experts("mnist5k", "raw", "ConvNetW32", [0, 1], SETTINGS, tiny_npz, outs, CPU, resume=resume)
    assert not resume.exists()
    ref = load_expert(experts[0])
    for n, v in load_expert(outs[0])["params"].items():
        assert torch.equal(v, ref["params"][n]), n


def test_blocks():
    assert blocks(5, 2) == [[0, 1], [2, 3], [4]]
    with pytest.raises(DdflowError):
        blocks(0, 2)


# ---- checkpoint sampling ---------------------------------------------------------------------------------------
def test_mtt_manifest_is_deterministic_references_experts_and_checks_windows(experts, tmp_path):
    paths = [str(p) for p in experts]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_mtt_manifest("mtt-m1-t2", "mnist5k", "raw", "ConvNetW32", paths, a)
    write_mtt_manifest("mtt-m1-t2", "mnist5k", "raw", "ConvNetW32", paths, b)
    assert a.read_text() == b.read_text()
    man = json.loads(a.read_text())
    assert man["experts"] == paths and man["expert_epochs"] == 1 and man["max_start_epoch"] == 2
    assert a.stat().st_size < 2000  # references, not parameters
    with pytest.raises(DdflowError, match="needs epoch 3"):
        write_mtt_manifest("mtt-m2-t2", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "c.json")
    with pytest.raises(DdflowError, match="expected 'kornia'"):
        write_mtt_manifest("mtt-m1-t2", "mnist5k", "kornia", "ConvNetW32", paths, tmp_path / "c.json")
    with pytest.raises(DdflowError, match="this distillation needs 'ConvNet'"):
        load_manifest(a, "mnist5k", "raw", "ConvNet")


def test_pool_weights_follow_the_lr_of_each_step():
    refs, w = pool_weights([[0.01, 0.01, 0.001], [0.02]])
    assert refs == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert torch.allclose(w, torch.tensor([10, 10, 1, 20], dtype=torch.float64) / 41)
    _, u = pool_weights([[0.01] * 4])
    assert torch.allclose(u, torch.full((4,), 0.25, dtype=torch.float64))


def test_ead_pool_is_deterministic_and_holds_the_drawn_checkpoints(experts, tmp_path):
    paths = [str(p) for p in experts]
    p1 = write_ead_pool("ead-p4", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "p1.pt")
    p2 = write_ead_pool("ead-p4", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "p2.pt")
    assert torch.equal(p1["refs"], p2["refs"]) and len(set(map(tuple, p1["refs"].tolist()))) == 4
    assert all(0 <= t < 2 for _, t in p1["refs"].tolist())  # theta^t with t < epochs: each has a step
    k, t = p1["refs"][0].tolist()
    e = load_expert(experts[k])
    for n, v in p1["params"].items():
        assert torch.equal(v[0], e["params"][n][t])
    assert torch.equal(p1["final"]["classifier.bias"], load_expert(experts[0])["params"]["classifier.bias"][-1])
    with pytest.raises(DdflowError, match="pool of 7"):
        write_ead_pool("ead-p7", "mnist5k", "raw", "ConvNetW32", paths, tmp_path / "p3.pt")


# ---- MTT ---------------------------------------------------------------------------------------------------------
def test_trajectory_loss_is_normalised_by_the_expert_distance():
    start = {"a": torch.zeros(3), "b": torch.zeros(2)}
    target = {"a": torch.ones(3), "b": torch.ones(2)}
    assert trajectory_loss(start, start, target) == 1.0
    assert trajectory_loss(target, start, target) == 0.0
    half = {n: v * 0.5 for n, v in target.items()}
    assert torch.isclose(trajectory_loss(half, start, target), torch.tensor(0.25))
    big = {n: v * 10 for n, v in target.items()}  # scale invariance
    assert torch.isclose(trajectory_loss({n: v * 0.5 for n, v in big.items()}, start, big), torch.tensor(0.25))


def test_student_unroll_equals_two_manual_sgd_steps_and_gives_the_lr_a_gradient():
    net = _tiny_net()
    start = {n: p.requires_grad_(True) for n, p in _params(net).items()}
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    lr = torch.tensor(0.1, requires_grad=True)
    batches = [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])]
    final = student_unroll(net, start, x, y, lr, batches)
    # manual: two plain SGD steps
    p = {n: v.detach().clone() for n, v in start.items()}
    for idx in batches:
        q = {n: v.clone().requires_grad_(True) for n, v in p.items()}
        loss = F.cross_entropy(functional_call(net, q, (x[idx].detach(),)), y[idx])
        g = torch.autograd.grad(loss, list(q.values()))
        p = {n: v - 0.1 * gi for (n, v), gi in zip(p.items(), g)}
    for n in p:
        assert torch.allclose(final[n], p[n], atol=1e-6), n
    target = {n: v.detach() + 0.05 for n, v in start.items()}
    loss = trajectory_loss(final, {n: v.detach() for n, v in start.items()}, target)
    gx, glr = torch.autograd.grad(loss, [x, lr])
    assert glr.abs() > 0 and gx.abs().sum() > 0
    # the lr gradient matches a central finite difference
    def at(v):
        leaf = {n: s.detach().clone().requires_grad_(True) for n, s in start.items()}
        f = student_unroll(net, leaf, x.detach(), y, torch.tensor(v), batches)
        return trajectory_loss(f, {n: s.detach() for n, s in start.items()}, target).item()
    fd = (at(0.1 + 1e-3) - at(0.1 - 1e-3)) / 2e-3
    assert abs(fd - float(glr)) < 1e-2 * max(1.0, abs(fd)), (fd, float(glr))


# ---- EAD ---------------------------------------------------------------------------------------------------------
def test_ead_jvp_terms_equal_double_backward_brute_force():
    torch.manual_seed(1)
    net = _tiny_net()
    params = _params(net)
    x_p, x_t = torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8)
    y_p, y_t = torch.randint(0, 3, (5,)), torch.randint(0, 3, (5,))
    x_s = torch.randn(4, 1, 8, 8, requires_grad=True)
    z_s = torch.randn(4, 3, requires_grad=True)
    p_s = F.softmax(z_s, -1)
    real, syn = effect_terms(net, params, x_p, y_p, x_t, y_t, x_s, p_s)
    gx, gz = torch.autograd.grad(syn, [x_s, z_s])
    # brute force: full gradients and their inner products, double backward to the synthetic set
    q = {n: v.clone().requires_grad_(True) for n, v in params.items()}
    gp = torch.autograd.grad(F.cross_entropy(functional_call(net, q, (x_p,)), y_p), list(q.values()))
    gt = torch.autograd.grad(F.cross_entropy(functional_call(net, q, (x_t,)), y_t), list(q.values()))
    gs = torch.autograd.grad(soft_ce(functional_call(net, q, (x_s,)), F.softmax(z_s, -1)), list(q.values()),
                             create_graph=True)
    real_b = sum((a * b).sum() for a, b in zip(gp, gt))
    syn_b = sum((a.detach() * b).sum() for a, b in zip(gp, gs))
    bx, bz = torch.autograd.grad(syn_b, [x_s, z_s])
    assert torch.allclose(real, real_b, rtol=1e-5, atol=1e-7)
    assert torch.allclose(syn, syn_b, rtol=1e-5, atol=1e-7)
    assert torch.allclose(gx, bx, rtol=1e-4, atol=1e-7) and torch.allclose(gz, bz, rtol=1e-4, atol=1e-7)
    # the loss: |sum_t c * real_t - syn_t| over checkpoints
    loss = ead_loss(net, [params, params], [(x_p, y_p, x_t, y_t)] * 2, x_s, p_s, coef=1.0)
    assert torch.isclose(loss, (2 * (real_b - syn_b)).abs(), rtol=1e-4, atol=1e-6)
    lit = ead_loss(net, [params], [(x_p, y_p, x_t, y_t)], x_s, p_s, coef=-3.0)
    assert torch.isclose(lit, (-3.0 * real_b - syn_b).abs(), rtol=1e-4, atol=1e-6)


def test_literal_coefficient():
    # alpha = (|G| - |A|) / (|D| - |G| + |A|) with G = D, A = S: (|D| - |S|) / |S|
    assert literal_coefficient(4000, 10) == pytest.approx(1 - 399)
    assert literal_coefficient(4000, 100) == pytest.approx(1 - 39)
    assert literal_coefficient(50, 50) == 1.0


# ---- MTT through the runner: NaN stops with the last good state kept ---------------------------------------------
@pytest.fixture()
def mtt_setup(experts, tmp_path):
    import shutil

    import yaml

    from test_distill import ROOT
    hp = tmp_path / "hparams"
    shutil.copytree(ROOT / "workflow" / "hparams", hp)
    doc = yaml.safe_load((hp / "methods" / "mtt.yaml").read_text())
    doc["quick"].update({"iterations": 4, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2})
    doc.pop("quick_overrides")
    (hp / "methods" / "mtt.yaml").write_text(yaml.safe_dump(doc))
    man = tmp_path / "man.json"
    write_mtt_manifest("mtt-m1-t2", "mnist5k", "raw", "ConvNetW32", [str(p) for p in experts], man)
    return hp, man


def test_mtt_nan_loss_stops_clearly_and_keeps_the_last_good_state(mtt_setup, tiny_npz, tmp_path, monkeypatch):
    from ddflow.io import load_pt
    from ddflow.methods import mtt as mtt_mod
    from ddflow.settings import distill_cell as run
    hp, man = mtt_setup
    kw = dict(inputs={"trajectories": str(man)}, hp_dir=hp, save_every=1)
    full = run("mtt", "mnist5k", 1, 0, "quick", CPU, tiny_npz, tmp_path / "full.pt", **kw)
    calls = {"n": 0}
    real = mtt_mod.trajectory_loss

    def flaky(*a):
        calls["n"] += 1
        out = real(*a)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(mtt_mod, "trajectory_loss", flaky)
    resume = tmp_path / "resume.pt"
    with pytest.raises(DdflowError, match="non-finite trajectory loss at iteration 2"):
        run("mtt", "mnist5k", 1, 0, "quick", CPU, tiny_npz, tmp_path / "out.pt", resume=resume, **kw)
    state = load_pt(resume)
    assert state["iteration"] == 2 and torch.isfinite(state["method"]["images"]).all()
    monkeypatch.setattr(mtt_mod, "trajectory_loss", real)
    resumed = run("mtt", "mnist5k", 1, 0, "quick", CPU, tiny_npz, tmp_path / "out.pt", resume=resume, **kw)
    assert torch.equal(resumed.images, full.images) and resumed.lr == full.lr
    with pytest.raises(DdflowError, match="this distillation needs 'ConvNet'"):
        run("mtt", "mnist5k", 1, 0, "paper", CPU, tiny_npz, tmp_path / "x.pt", **kw)


def test_soft_protocol_trains_on_soft_labels(tiny_npz):
    from ddflow.data import get_info, load_real
    from ddflow.protocols.dc import evaluate_soft
    from ddflow.records import DistilledSet
    from ddflow.seeding import generator
    logits = torch.randn(2, 3, 4)
    t = F.softmax(torch.randn(2, 3, 4), -1)
    assert torch.allclose(soft_ce(logits, t)[1], soft_ce(logits[1], t[1]))  # (K, B, C): one value per model
    info = get_info("mnist5k")
    data = load_real(tiny_npz, info)
    x, y = data.x_train[:20], F.one_hot(data.y_train[:20], 10).float()

    def record(labels):
        return DistilledSet(images=x, labels=labels, method="ead", dataset="mnist5k", ipc=2, seed=0, mean=info.mean,
                            std=info.std)

    settings = {"net": "ConvNetW32", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "batch": 256,
                "epochs": 2, "augment": "none", "batching": "loop"}
    accs = evaluate_soft(record(y), data, settings, [generator("t", 0)], CPU)
    assert len(accs) == 1 and 0 <= accs[0] <= 100
    with pytest.raises(DdflowError, match="soft labels"):
        evaluate_soft(record(data.y_train[:20]), data, settings, [generator("t", 0)], CPU)
