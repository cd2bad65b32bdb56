"""The kernel family's math and machinery: KRR, ISA's closed form and selection, FRePo's Conv, LAMB, the model
pool, the evaluation steps rule, and resume of a FRePo distillation."""
import math
import shutil

import pytest
import torch
import yaml

from ddflow.errors import DdflowError
from ddflow.hparams import deep_merge, resolve
from ddflow.methods import get_method
from ddflow.nets import FRePoConv, build_frepo_conv, frepo_depth
from ddflow.ops.krr import (
    centred_onehot,
    frepo_kernel_loss,
    init_learned_labels,
    isa_closed_form,
    isa_loss,
    krr_lambda,
    krr_predict,
    krr_weights,
    nearest_other,
    select_by_error,
)
from ddflow.ops.losses import margin_loss
from ddflow.ops.optim import LAMB, cosine_lr, warmup_cosine_lr
from ddflow.protocols.kernel import eval_steps
from ddflow.settings import distill_cell as run
from test_distill import ROOT

CPU = torch.device("cpu")
TINY = {"iterations": 4, "batch_real": 32, "pool": 3, "max_online_updates": 3, "width": 8, "online_batch": 4}


def _feats(n, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype)


def test_krr_matches_a_float64_direct_solve():
    phi_s, phi_t = _feats(12, 40, 0), _feats(30, 40, 1)
    y_s = centred_onehot(torch.arange(12) % 4, 4)
    pred = krr_predict(phi_t, phi_s, krr_weights(phi_s, y_s))
    s, t, y = phi_s.double(), phi_t.double(), y_s.double()
    k_ss = s @ s.T
    lam = 1e-6 * torch.trace(k_ss) / 12
    direct = (t @ s.T) @ torch.linalg.solve(k_ss + lam * torch.eye(12, dtype=torch.float64), y)
    assert torch.allclose(pred.double(), direct, rtol=1e-4, atol=1e-4)


def test_lambda_is_relative_to_the_mean_diagonal_so_krr_ignores_the_feature_scale():
    phi_s, phi_t = _feats(8, 20, 2), _feats(5, 20, 3)
    k = phi_s @ phi_s.T
    assert torch.isclose(krr_lambda(k), 1e-6 * torch.trace(k) / 8)
    assert torch.isclose(krr_lambda(k, 1e-3), 1e-3 * torch.trace(k) / 8)
    assert torch.isclose(krr_lambda(9 * k), 9 * krr_lambda(k))
    y = centred_onehot(torch.arange(8) % 2, 2)
    p1 = krr_predict(phi_t, phi_s, krr_weights(phi_s, y, 1e-2))
    p3 = krr_predict(3 * phi_t, 3 * phi_s, krr_weights(3 * phi_s, y, 1e-2))
    assert torch.allclose(p1, p3, atol=1e-4)


@pytest.mark.parametrize("eps", [0.5, 1.0, 1.5])
def test_isa_closed_form_is_the_mean_over_the_segment(eps):
    a, b = _feats(6, 10, 4, torch.float64), _feats(6, 10, 5, torch.float64)
    lams = torch.linspace(0, eps, 20001, dtype=torch.float64)
    r2 = (a.unsqueeze(0) + lams.view(-1, 1, 1) * b.unsqueeze(0)).square()
    integral = torch.trapezoid(r2, lams, dim=0) / eps            # mean of (A + l B)^2 over l in [0, eps]
    assert torch.allclose(isa_closed_form(a, b, eps, "mean"), integral.mean(-1), rtol=1e-7)
    assert torch.allclose(isa_closed_form(a, b, eps, "half_sum"), 0.5 * integral.sum(-1), rtol=1e-7)


def test_isa_with_nothing_discarded_and_eps_0_equals_frepo_exactly():
    phi_t, phi_s = _feats(64, 30, 6), _feats(10, 30, 7).requires_grad_(True)
    y_t = centred_onehot(torch.arange(64) % 10, 10)
    y_s = init_learned_labels(torch.arange(10), 10).requires_grad_(True)
    frepo = frepo_kernel_loss(phi_t, y_t, phi_s, y_s)
    isa = isa_loss(phi_t, y_t, phi_s, y_s, keep=1.0, eps=0.0, reduce="half_sum")
    assert torch.equal(isa, frepo)
    for a, b in zip(torch.autograd.grad(frepo, [phi_s, y_s]), torch.autograd.grad(isa, [phi_s, y_s])):
        assert torch.equal(a, b)
    # ISA's own reduction averages over classes: 2/C times FRePo's half sum
    assert torch.allclose(isa_loss(phi_t, y_t, phi_s, y_s, 1.0, 0.0, "mean"), frepo * 2 / 10)


def test_method_isa_with_p0_eps0_and_frepo_normalisation_reproduces_frepo(mnist5k):
    out = {}
    for mid, extra in (("frepo", {}), ("isa", {"keep": 1.0, "eps": 0.0, "reduce": "half_sum"})):
        hp = deep_merge(resolve(mid, "mnist5k", 1, "quick"), {**TINY, **extra})
        cls = get_method(mid)
        m = cls(hp, mnist5k, 1, torch.Generator().manual_seed(0), CPU)
        m.init()
        for it in range(3):
            m.step(it)
        out[mid] = m.result()
    assert torch.equal(out["frepo"]["images"], out["isa"]["images"])
    assert torch.equal(out["frepo"]["labels"], out["isa"]["labels"])


def test_hardest_fraction_selection():
    err = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])
    assert select_by_error(err, 0.8).tolist() == [1, 6, 4, 8, 2, 7, 3, 5]       # the 8 hardest, hardest first
    assert select_by_error(err, -0.7).tolist() == [9, 0, 5, 3, 7, 2, 8]               # the 7 easiest
    assert select_by_error(err, 1.0).tolist()[0] == 1
    with pytest.raises(DdflowError):
        select_by_error(err, 0.05)
    # the kept samples and only they enter the loss: ISA with keep 0.5 = FRePo's loss on the hardest half
    phi_t, phi_s = _feats(20, 16, 8), _feats(5, 16, 9)
    y_t, y_s = centred_onehot(torch.arange(20) % 5, 5), init_learned_labels(torch.arange(5), 5)
    resid = krr_predict(phi_t, phi_s, krr_weights(phi_s, y_s)) - y_t
    hard = resid.square().mean(-1).argsort(descending=True)[:10]
    loss = isa_loss(phi_t, y_t, phi_s, y_s, keep=0.5, eps=0.0, reduce="half_sum")
    assert torch.allclose(loss, frepo_kernel_loss(phi_t[hard], y_t[hard], phi_s, y_s), atol=1e-6)


def test_nearest_other_never_picks_itself():
    phi = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert nearest_other(phi).tolist() == [1, 0, 3, 2]


def test_pool_draws_trains_and_resets_on_schedule(mnist5k):
    hp = deep_merge(resolve("frepo", "mnist5k", 1, "quick"), {**TINY, "pool": 3, "max_online_updates": 3,
                                                             "iterations": 30})
    m = get_method("frepo")(hp, mnist5k, 1, torch.Generator().manual_seed(1), CPU)
    m.init()
    assert m.net_steps == [0, 1, 2]                      # ages staggered: (max // pool) * i
    drawn, resets = [], 0
    for it in range(30):
        cur, before = m.current, list(m.net_steps)
        weights = m.nets[cur].features[0].weight.detach().clone()
        others = [m.nets[i].features[0].weight.detach().clone() for i in range(3)]
        m.step(it)
        drawn.append(cur)
        if before[cur] > 3:                              # past max_online_updates: re-initialised, age 0
            assert m.net_steps[cur] == 0
            resets += 1
        else:                                            # trained one step
            assert m.net_steps[cur] == before[cur] + 1
            assert not torch.equal(m.nets[cur].features[0].weight, weights)
        for i in range(3):                               # the others wait
            if i != cur:
                assert m.net_steps[i] == before[i] and torch.equal(m.nets[i].features[0].weight, others[i])
    assert set(drawn) == {0, 1, 2} and resets >= 1


@pytest.mark.parametrize("size,channels,depth", [(28, 1, 3), (32, 3, 3), (64, 3, 4), (128, 3, 5)])
def test_frepo_conv_shapes(size, channels, depth):
    assert frepo_depth(size, channels) == depth
    net = build_frepo_conv(channels, 10, size, width=4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, channels, size, size)
    assert net.embed(x).shape == (2, 4 * 2 ** (depth - 1) * 16) == (2, net.feature_dim)   # 4x4 maps
    assert net(x).shape == (2, 10)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == depth - 1                          # normalisation before every conv but the first
    assert not any(isinstance(m, torch.nn.BatchNorm2d)
                   for m in build_frepo_conv(channels, 10, size, width=4, norm="none").modules())
    if size == 32:  # the paper's feature dimension at width 128
        assert FRePoConv(3, 10, 32).feature_dim == 8192 == FRePoConv(1, 10, 28).feature_dim


def test_lamb_update_rule():
    p = torch.tensor([3.0, -4.0], requires_grad=True)
    opt = LAMB([p], lr=0.1)
    grads = [torch.tensor([1.0, 2.0]), torch.tensor([-0.5, 0.25])]
    m = v = torch.zeros(2)
    ref = p.detach().clone()
    for t, g in enumerate(grads, 1):
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        u = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-6)
        ref = ref - 0.1 * (ref.norm() / u.norm()) * u
        assert torch.allclose(p.detach(), ref, atol=1e-6)
    z = torch.zeros(2, requires_grad=True)            # zero weights: trust ratio 1
    opt = LAMB([z], lr=0.1)
    z.grad = torch.tensor([1.0, -1.0])
    opt.step()
    assert torch.allclose(z.detach(), torch.tensor([-0.1, 0.1]), atol=1e-5)


def test_schedules_and_eval_steps():
    assert cosine_lr(1.0, 0, 100, 0.1) == 1.0 and math.isclose(cosine_lr(1.0, 100, 100, 0.1), 0.1)
    assert warmup_cosine_lr(1.0, 0, 1000, 500, 0.01) == 0.0
    assert math.isclose(warmup_cosine_lr(1.0, 250, 1000, 500, 0.01), 0.5)
    assert math.isclose(warmup_cosine_lr(1.0, 1000, 1000, 500, 0.01), 0.01)
    table = {10: 1000, 100: 2000, 200: 20000}
    assert [eval_steps(n, "auto", table) for n in (10, 100, 200, 5000)] == [1000, 2000, 20000, 20000]
    assert eval_steps(20, "auto", table) == 1000 and eval_steps(150, None, table) == 2000
    assert eval_steps(5, "auto", table) == 1000          # below the smallest count: its entry
    assert eval_steps(100, 7) == 7 and eval_steps(100, 7, table) == 7
    with pytest.raises(DdflowError, match="step table"):
        eval_steps(100, "auto")


# (method, dataset, IPC) -> steps. FRePo: yongchao97/FRePo script/eval.py line 208; ISA: fiona-lxd/ISA
# script/eval.py line 208 (step_per_prototpyes in main). Prototypes = IPC x classes.
STEPS = {
    ("frepo", "cifar10", 1): 1000, ("frepo", "cifar100", 1): 2000, ("frepo", "cifar100", 10): 10000,
    ("frepo", "tiny", 1): 20000, ("frepo", "tiny", 10): 40000, ("frepo", "imagenet64", 1): 10000,
    ("frepo", "imagenet64", 2): 40000, ("frepo", "cifar100", 50): 40000,
    ("isa", "cifar10", 1): 1000, ("isa", "cifar100", 1): 2000, ("isa", "cifar100", 10): 4000,
    ("isa", "tiny", 1): 2000, ("isa", "tiny", 10): 5000, ("isa", "imagenet64", 1): 4000,
    ("isa", "imagenet64", 2): 5000, ("isa", "cifar100", 50): 40000,
}


@pytest.mark.parametrize("protocol", ["frepo", "krr"])
def test_isa_cells_use_isas_step_table_and_frepo_cells_frepos(protocol):
    from ddflow.data import get_info
    from ddflow.protocols import protocol_settings

    for (method, dataset, ipc), steps in STEPS.items():
        s = protocol_settings(method, dataset, ipc, "paper", protocol)
        assert s["step_table"] == method and s["steps"] == "auto"
        n = ipc * get_info(dataset).classes
        assert eval_steps(n, s["steps"], s["steps_by_prototypes"]) == steps, (method, dataset, ipc)
    # every row of ISA's Tables 6 and 7: ISA's rows on ISA's table, FRePo's on FRePo's
    for name in ("isa_t6", "isa_t7"):
        spec = yaml.safe_load((ROOT / "workflow" / "papers" / f"{name}.yaml").read_text())
        for row in spec["rows"]:
            for dataset in spec["paper_datasets"]:
                for ipc in spec["paper_ipcs"]:
                    s = protocol_settings(row["method"], dataset, ipc, "paper", row["protocol"])
                    assert s["step_table"] == {"isa": "isa", "frepo": "frepo"}[row["method"]], (name, row, dataset)
    # the quick preset's fixed steps need no table
    assert "steps_by_prototypes" not in protocol_settings("isa", "mnist5k", 1, "quick", protocol)


def test_learned_labels_init_and_margin():
    y = init_learned_labels(torch.arange(100) % 100, 100)
    assert torch.allclose(y[0, 0], torch.tensor((1 - 0.01) / math.sqrt(10)))
    top = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.45, 0.0]])
    assert math.isclose(float(margin_loss(top)), -(1 / 3 + 0.05) / 2, rel_tol=1e-6)


def test_frepo_distillation_resumes_exactly(mnist5k_path, tmp_path):
    hp_dir = tmp_path / "hparams"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "frepo.yaml").read_text())
    doc["quick"] = deep_merge(doc["quick"], {**TINY, "iterations": 5, "snapshots": [0, 3]})
    (hp_dir / "methods" / "frepo.yaml").write_text(yaml.safe_dump(doc))
    args = ("isa", "mnist5k", 1, 0, "quick", CPU, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    assert run(*args, tmp_path / "part.pt", hp_dir=hp_dir, resume=tmp_path / "r.pt", save_every=2,
               stop_after=3) is None
    resumed = run(*args, tmp_path / "part.pt", hp_dir=hp_dir, resume=tmp_path / "r.pt", save_every=2)
    assert torch.equal(full.images, resumed.images) and torch.equal(full.labels, resumed.labels)
    assert full.labels.shape == (10, 10) and full.space == "normalized"


def test_block_zca_whitens_each_checkerboard_block_with_one_shared_transform():
    from ddflow.data.zca import ZCA, fit_zca, from_blocks, to_blocks
    x = torch.rand(200, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_blocks(x, 4)[:, 1].reshape(200, 3, 4, 4), x[:, :, 0::2, 1::2])
    assert torch.equal(from_blocks(to_blocks(x, 4), x.shape, 4), x)
    z = fit_zca(x, "frepo", 0.1, block=4)
    assert z.transform.shape == (48, 48) and z.block == 4
    w = z.apply(x)
    assert w.shape == x.shape and torch.allclose(z.inverse(w), x, atol=1e-4)
    z2 = ZCA.from_state_dict(z.state_dict())
    assert z2.block == 4 and torch.equal(z2.apply(x), w)
    # the same as a full ZCA fitted on the blocks as samples (every block its own image), per block
    blocks = to_blocks((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), unbiased=False, keepdim=True), 4)
    flat = blocks.reshape(-1, 48).double()
    xc = (flat.reshape(200, 4, 48) - blocks.double().mean(0, keepdim=True)).reshape(-1, 48)
    cov = xc.T @ xc / len(xc)
    ev, vec = torch.linalg.eigh(cov)
    t = (vec * (ev + 0.1 * ev.sum() / 48).rsqrt()) @ vec.T
    assert torch.allclose(to_blocks(w, 4).double(), xc.reshape(200, 4, 48) @ t, atol=1e-4)


def test_auto_steps_without_a_named_step_table_is_a_clear_error(tmp_path):
    from ddflow.protocols import protocol_settings

    for sub in ("methods", "stages"):
        (tmp_path / sub).mkdir()
    (tmp_path / "stages" / "protocols.yaml").write_text(
        (ROOT / "workflow" / "hparams" / "stages" / "protocols.yaml").read_text())
    (tmp_path / "methods" / "m.yaml").write_text("paper: {eval: {frepo: {models: 1}}}\n")
    with pytest.raises(DdflowError, match="step_table"):
        protocol_settings("m", "cifar10", 1, "paper", "frepo", tmp_path)
    (tmp_path / "methods" / "m.yaml").write_text("paper: {eval: {frepo: {step_table: nope}}}\n")
    with pytest.raises(DdflowError, match="frepo, isa; got 'nope'"):
        protocol_settings("m", "cifar10", 1, "paper", "frepo", tmp_path)
