"""HaBa (methods/haba.py): the hallucinator's shapes, the evaluated image count, the supervised contrastive loss
against a direct computation, the record that regenerates its images, resume equality."""
import math

import pytest
import torch
import torch.nn.functional as F

from ddflow.ops.hallucinator import Hallucinator, build_hallucinators, generate, generate_from_record, storage
from ddflow.ops.losses import supervised_contrastive
from ddflow.records import load_distilled
from ddflow.settings import distill_cell as run
from ddflow.stages.experts import run as train_experts
from ddflow.stages.sampling import write_mtt_manifest
from tiny_workflow import write_tiny_mnist5k

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
SETTINGS = {"epochs": 2, "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch": 64, "augment": "dsa",
            "strategy": "color_crop_cutout_flip_scale_rotate", "zca_eps": 0.1, "batching": "loop"}
TINY = {"iterations": 4, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2, "n_hallucinators": 3}


def test_hallucinator_maps_bases_to_images_of_the_data_shape_with_official_parameter_shapes():
    # utils.py StyleTranslator(in_channel, mid_channel=channel, out_channel=channel, kernel_size=3) at 32 px
    h = Hallucinator(3, 3, 32, 3)
    assert tuple(h.scale.shape) == tuple(h.shift.shape) == (1, 3, 30, 30)
    assert h(torch.randn(4, 3, 32, 32)).shape == (4, 3, 32, 32)
    assert sum(p.numel() for p in h.parameters()) == (3 * 3 * 9 + 3) * 2 + 2 * 3 * 30 * 30   # 5568
    one = Hallucinator(1, 1, 28, 3)   # mnist: one-channel bases and images, 26 x 26 affine map
    assert one(torch.randn(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    gray = Hallucinator(1, 3, 32, 3)  # the single-channel variant: one-channel bases, three-channel images
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_generate_puts_every_basis_through_every_hallucinator_and_counts_storage():
    g = torch.Generator().manual_seed(0)
    hals = build_hallucinators(5, 3, 3, 32, 3, g)
    bases = torch.randn(10 * 2, 3, 32, 32, generator=g)   # 10 classes x 2 bases per class
    out = generate(bases, hals)
    assert out.shape == (5 * 20, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(out[3 * 20 + 7], hals[3](bases[7:8])[0], atol=1e-6)
    s = storage(bases, hals, 3 * 32 * 32)
    assert s["bases"] == 20 * 3072 and s["hallucinators"] == 5 * 5568
    assert s["images_equivalent"] == pytest.approx((20 * 3072 + 5 * 5568) / 3072)


def _supcon_direct(feats, labels, t):
    """SupCon (Khosla et al. eq. 2, every view an anchor) by explicit loops over anchors and positives."""
    b, v, _ = feats.shape
    z = [feats[i, j] for j in range(v) for i in range(b)]
    y = [int(labels[i]) for _ in range(v) for i in range(b)]
    total = 0.0
    for a in range(len(z)):
        denom = sum(math.exp(float(z[a] @ z[o]) / t) for o in range(len(z)) if o != a)
        pos = [p for p in range(len(z)) if p != a and y[p] == y[a]]
        total += -sum(math.log(math.exp(float(z[a] @ z[p]) / t) / denom) for p in pos) / len(pos)
    return total / len(z)


def test_supervised_contrastive_equals_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(6, 2, 8, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 1])
    got = supervised_contrastive(feats, labels, 0.07, 0.07)
    assert float(got) == pytest.approx(_supcon_direct(feats, labels, 0.07), rel=1e-9)
    assert float(supervised_contrastive(feats, labels, 0.5, 0.07)) == pytest.approx(
        0.5 / 0.07 * _supcon_direct(feats, labels, 0.5), rel=1e-9)


@pytest.fixture(scope="module")
def setup(mnist5k_path, tmp_path_factory):
    """mnist5k cut to 12 training images per class, three 2-epoch experts and their MTT windows manifest."""
    d = tmp_path_factory.mktemp("haba")
    npz = write_tiny_mnist5k(mnist5k_path, d / "tiny.npz", per_class=12)
    outs = [d / f"e{i}.pt" for i in range(2)]
    train_experts("mnist5k", "raw", "ConvNetW32", [0, 1], SETTINGS, npz, outs, CPU)
    man = d / "man.json"
    write_mtt_manifest("mtt-m1-t2", "mnist5k", "raw", "ConvNetW32", [str(p) for p in outs], man)
    return npz, man


def test_haba_record_holds_the_generated_set_and_regenerates_it_and_a_killed_run_resumes_exactly(setup, tmp_path):
    npz, man = setup
    kw = dict(inputs={"trajectories": str(man)}, overrides=TINY, save_every=1)
    full = run("haba", "mnist5k", 2, 0, "quick", CPU, npz, tmp_path / "full.pt", **kw)
    rec = load_distilled(tmp_path / "full.pt")
    assert rec.images.shape == (3 * 10 * 2, 1, 28, 28)          # 3 hallucinators x 10 classes x 2 bases
    assert torch.equal(rec.labels, torch.arange(10).repeat_interleave(2).repeat(3))
    assert rec.lr is not None and rec.lr >= 0.001
    assert rec.extra["haba"]["images"] == 60 and rec.extra["haba_bases"].shape == (20, 1, 28, 28)
    assert torch.allclose(generate_from_record(rec.extra), rec.images, atol=1e-6)
    resume = tmp_path / "state.pt"
    assert run("haba", "mnist5k", 2, 0, "quick", CPU, npz, tmp_path / "out.pt", resume=resume, stop_after=3,
               **kw) is None
    resumed = run("haba", "mnist5k", 2, 0, "quick", CPU, npz, tmp_path / "out.pt", resume=resume, **kw)
    assert torch.equal(resumed.images, full.images) and resumed.lr == full.lr
    assert torch.equal(resumed.extra["haba_bases"], full.extra["haba_bases"])


def test_one_iteration_updates_the_factors_then_the_extractor_alone(setup):
    """distill_fac.py lines 375-417: param_loss + club steps the bases, hallucinators and syn_lr (the extractor's
    gradients from it are discarded); the extractor's own loss then steps the extractor only."""
    from ddflow import hparams
    from ddflow.data import get_info, load_real
    from ddflow.methods import get_method
    from ddflow.seeding import generator
    npz, man = setup
    hp = hparams.deep_merge(hparams.resolve("haba", "mnist5k", 1, "quick"), TINY)
    m = get_method("haba")(hp, load_real(npz, get_info("mnist5k")), 1, generator("t"), CPU, {"trajectories": str(man)})
    m.init()
    before = {k: v.detach().clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}
    ext0 = {k: v.clone() for k, v in m.extractor.state_dict().items()}
    hal0 = {k: v.clone() for k, v in m.hallucinators.state_dict().items()}
    calls = []
    real_step = m.extractor_step

    def spy(idx):
        calls.append({k: v.clone() for k, v in m.extractor.state_dict().items()})  # before its own step
        return real_step(idx)

    m.extractor_step = spy
    out = m.step(0)
    assert all(torch.equal(calls[0][k], ext0[k]) for k in ext0)           # untouched by the factors' step
    assert not torch.equal(m.bases, before["bases"]) and m.syn_lr.item() != before["syn_lr"].item()
    assert any(not torch.equal(v, hal0[k]) for k, v in m.hallucinators.state_dict().items())
    assert any(not torch.equal(v, ext0[k]) for k, v in m.extractor.state_dict().items())
    assert 0 <= float(out["club"]) <= float(hp["lambda_club"])             # lambda * (cos + 1) / 2
