"""HaBa's own experts and evaluation (Huage001/DatasetFactorization, commit 60c9128): per-batch standardisation
(utils.py line 409), experts trained through it (buffer.py line 84, prep `-batchstd`), and protocol `haba` (one
random hallucinator per basis at every access, utils.py lines 238-254; an epoch = the bases)."""
import numpy as np
import pytest
import torch

from ddflow import hparams
from ddflow.data import get_info
from ddflow.errors import DdflowError
from ddflow.io import load_pt
from ddflow.methods import get_method
from ddflow.nets import build_net
from ddflow.ops.hallucinator import build_hallucinators, hallucinate
from ddflow.ops.standardize import standardize, standardize_chunks, standardize_groups
from ddflow.protocols import protocol_settings
from ddflow.protocols.haba import evaluate_haba, hallucinated_batches
from ddflow.records import DistilledSet
from ddflow.records import experts as rex
from ddflow.records.trajectories import manifest_path
from ddflow.report.tables import load_spec
from ddflow.stages import experts as ex
from ddflow.train import NetStack, TrainSettings, train_stack
from tiny_workflow import write_tiny_mnist5k

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def test_standardize_is_utils_epoch_line_409_one_scalar_mean_and_unbiased_std_per_batch():
    # utils.py line 409: img = (img - img.mean()) / img.std()  (whole batch, torch's unbiased std)
    g = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    a = x.numpy()
    assert np.allclose(standardize(x).numpy(), (a - a.mean()) / a.std(ddof=1))
    two = torch.cat([x, 5 * x + 1])
    assert torch.allclose(standardize_groups(two, 2), torch.cat([standardize(x), standardize(5 * x + 1)]))
    # get_dataset line 221: testloader batch 128, shuffle False -> consecutive chunks of 128, each on its own
    big = torch.randn(300, 1, 2, 2, generator=g, dtype=torch.float64) * torch.arange(300.0).view(-1, 1, 1, 1)
    want = torch.cat([standardize(big[:128]), standardize(big[128:256]), standardize(big[256:])])
    assert torch.allclose(standardize_chunks(big, 128), want)


class _Recorder:
    """An augmentation that records what it is given (the images after `prepare`) and returns them unchanged."""

    def __init__(self):
        self.seen = []

    def augment_many(self, x, sizes, generators):
        self.seen.append((x.clone(), list(sizes)))
        return x


def test_train_stack_prepare_hook_runs_before_the_augmentation_on_each_models_batch():
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    stack = NetStack(build_net("ConvNetW32", 1, 3, 28), gens, CPU, "loop")
    x, y = 7 + 3 * torch.randn(10, 1, 28, 28, generator=gens[0]), torch.arange(10) % 3
    rec = _Recorder()
    train_stack(stack, x, y, gens, TrainSettings(epochs=1, batch=4), rec, prepare=lambda xb, k, g: standardize_groups(
        xb, k))
    assert [s for _, s in rec.seen] == [[4, 4], [4, 4], [2, 2]]
    for xb, (b, _) in rec.seen:
        for m in xb.view(2, -1):
            assert abs(float(m.mean())) < 1e-5 and abs(float(m.std()) - 1) < 1e-5


def test_experts_prep_names_distinct_files_for_standardised_experts_and_haba_paper_asks_for_them():
    assert rex.experts_prep({"prep": "kornia"}) == "kornia"
    assert rex.experts_prep({"prep": "kornia", "expert_standardize": "batch"}) == "kornia-batchstd"
    assert rex.split_prep("raw-batchstd") == ("raw", True) and rex.split_prep("frepo") == ("frepo", False)
    with pytest.raises(DdflowError, match="expert_standardize 'per-image'; allowed: none, batch"):
        rex.experts_prep({"prep": "raw", "expert_standardize": "per-image"})
    hp = hparams.resolve("haba", "cifar10", 10, "paper")   # run_cifar10_ipc10_style5.sh --zca; buffer.py --zca
    assert manifest_path("cifar10", hp) == "results/trajectories/cifar10/kornia-batchstd/ConvNet/mtt-m2-t20.json"
    mtt = hparams.resolve("mtt", "cifar10", 10, "paper")
    assert manifest_path("cifar10", mtt) == "results/trajectories/cifar10/kornia/ConvNet/mtt-m2-t20.json"


@pytest.fixture(scope="module")
def tiny_npz(mnist5k_path, tmp_path_factory):
    return write_tiny_mnist5k(mnist5k_path, tmp_path_factory.mktemp("habaoff") / "tiny.npz", n_test=200)


def test_batchstd_experts_standardise_every_train_batch_and_test_batches_of_128(tiny_npz, tmp_path, monkeypatch):
    """buffer.py line 84 (epoch('train', ..., aug=True)) and line 87 (epoch('test', testloader)): both through
    utils.py epoch(), line 409."""
    calls = {"groups": [], "chunks": []}
    real_groups, real_chunks = ex.standardize_groups, ex.standardize_chunks

    def groups(xb, k):
        calls["groups"].append((len(xb), k))
        return real_groups(xb, k)

    def chunks(x, chunk):
        calls["chunks"].append((len(x), chunk))
        return real_chunks(x, chunk)

    monkeypatch.setattr(ex, "standardize_groups", groups)
    monkeypatch.setattr(ex, "standardize_chunks", chunks)
    settings = {"epochs": 1, "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch": 64, "augment": "dsa",
                "strategy": "color_crop_cutout_flip_scale_rotate", "batching": "loop"}
    outs = [tmp_path / "s0.pt", tmp_path / "s1.pt"]
    ex.run("mnist5k", "raw-batchstd", "ConvNetW32", [0, 1], settings, tiny_npz, outs, CPU)
    assert calls["groups"] == [(128, 2), (72, 2)] and calls["chunks"] == [(200, 128)]   # 100 images, batch 64
    e = rex.load_expert(outs[0], "mnist5k", "raw-batchstd", "ConvNetW32")
    assert e["prep"] == "raw-batchstd" and e["epochs"] == 1
    plain = tmp_path / "p0.pt"
    ex.run("mnist5k", "raw", "ConvNetW32", [0], settings, tiny_npz, [plain], CPU)
    assert len(calls["groups"]) == 2                                  # no standardisation for the plain prep
    assert not torch.equal(load_pt(plain)["params"]["classifier.weight"][1], e["params"]["classifier.weight"][1])


def test_hallucinated_batches_draw_one_hallucinator_per_basis_per_access_from_each_models_generator():
    """utils.py lines 244-251: every __getitem__ draws random.randint(0, len(styles) - 1) and returns the basis
    through that style; the batch is then standardised (line 409)."""
    g = torch.Generator().manual_seed(3)
    hals = build_hallucinators(4, 1, 1, 8, 3, g)
    bases = torch.randn(2 * 6, 1, 8, 8, generator=g)    # two models' gathered batches of 6 bases
    gens = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    copies = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    out = hallucinated_batches(hals, standardize=False)(bases, 2, gens)
    picks = torch.cat([torch.randint(0, 4, (6,), generator=c) for c in copies])
    assert len(picks.unique()) > 1                                    # a draw per basis, not one per batch
    with torch.no_grad():
        for i in range(12):
            assert torch.allclose(out[i], hals[int(picks[i])](bases[i:i + 1])[0], atol=1e-6)
    again = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    std = hallucinated_batches(hals, standardize=True)(bases, 2, again)
    assert torch.allclose(std, standardize_groups(hallucinate(bases, hals, picks), 2), atol=1e-6)


def _record(scale: float = 1.0) -> DistilledSet:
    """A small HaBa record (10 classes x 1 basis, 3 hallucinators on 28 x 28 x 1); `scale` multiplies every
    hallucinated image (the hallucinators' decoders are affine)."""
    g = torch.Generator().manual_seed(5)
    hals = build_hallucinators(3, 1, 1, 28, 3, g)
    with torch.no_grad():
        for h in hals:
            h.dec.weight.mul_(scale)
            h.dec.bias.mul_(scale)
    bases = torch.randn(10, 1, 28, 28, generator=g)
    extra = {"haba": {"n_hallucinators": 3, "bases_per_class": 1, "single_channel": False, "kernel": 3,
                      "channels": 1}, "haba_bases": bases,
             "haba_hallucinators": {k: v.clone() for k, v in hals.state_dict().items()}}
    info = get_info("mnist5k")
    return DistilledSet(images=torch.zeros(30, 1, 28, 28), labels=torch.arange(10).repeat(3), method="haba",
                        dataset="mnist5k", ipc=1, seed=0, mean=info.mean, std=info.std, lr=0.01, extra=extra)


def _settings(standardize="batch", epochs=2):
    s = protocol_settings("haba", "mnist5k", 1, "quick", "haba")
    return {**s, "net": "ConvNetW32", "epochs": epochs, "models": 2, "batching": "loop", "standardize": standardize}


def test_protocol_haba_trains_an_epoch_of_bases_and_standardises_train_and_test_batches(mnist5k, monkeypatch):
    import ddflow.protocols.haba as ph
    data = type(mnist5k)(mnist5k.x_train[:50], mnist5k.y_train[:50], mnist5k.x_test[:150], mnist5k.y_test[:150],
                         mnist5k.info)
    sizes, tested = [], []
    real_batches, real_accuracy = ph.hallucinated_batches, ph.accuracy

    def spy(hals, standardize):
        prep = real_batches(hals, standardize)
        return lambda xb, k, gens: (sizes.append((len(xb), k)), prep(xb, k, gens))[1]

    def accuracy(stack, x, y):
        tested.append(x.clone())
        return real_accuracy(stack, x, y)

    monkeypatch.setattr(ph, "hallucinated_batches", spy)
    monkeypatch.setattr(ph, "accuracy", accuracy)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    accs = evaluate_haba(_record(), data, _settings(), gens, CPU)
    assert len(accs) == 2 and all(0 <= a <= 100 for a in accs)
    assert sizes == [(20, 2)] * 3   # Epoch + 1 epochs, each one batch of the 10 bases per model (batch 256)
    # test batches of 128 in order, each standardised (get_dataset line 221, epoch() line 409)
    assert torch.allclose(tested[0], standardize_chunks(data.x_test, 128))
    evaluate_haba(_record(), data, _settings("none", epochs=0), gens, CPU)
    assert torch.equal(tested[1], data.x_test)
    # training batches: a scale of every hallucinated image changes nothing once standardised
    bases = _record().extra["haba_bases"]
    one, three = (ph.factors_from_record(_record(c).extra)[1] for c in (1.0, 3.0))
    draw = lambda: [torch.Generator().manual_seed(7)]  # noqa: E731
    assert torch.allclose(real_batches(one, True)(bases, 1, draw()), real_batches(three, True)(bases, 1, draw()),
                          atol=1e-5)
    assert not torch.allclose(real_batches(one, False)(bases, 1, draw()), real_batches(three, False)(bases, 1, draw()))
    with pytest.raises(DdflowError, match="standardize 'per-image'; allowed: batch, none"):
        evaluate_haba(_record(), data, _settings("per-image"), gens, CPU)
    plain = _record()
    plain.extra = {}
    with pytest.raises(DdflowError, match="not a HaBa record: its extras lack haba, haba_bases, haba_hallucinators"):
        evaluate_haba(plain, data, _settings(), gens, CPU)


def test_haba_rows_default_to_protocol_haba_with_the_official_lengths():
    assert get_method("haba").protocols[0] == "haba"
    paper = protocol_settings("haba", "cifar10", 1, "paper", "haba")
    # distill_fac.py line 456 epoch_eval_train 1000, line 452 num_eval 5, line 468 batch_train 256
    assert (paper["epochs"], paper["models"], paper["batch"], paper["net"]) == (1000, 5, 256, "ConvNet")
    assert (paper["standardize"], paper["test_batch"], paper["augment"]) == ("batch", 128, "dsa")
    rows = [r for r in load_spec("workflow/papers/dream_t1.yaml")["rows"] if r.get("method") == "haba"]
    assert rows and all(r["protocol"] == "haba" for r in rows)


def test_quick_hallucinator_lr_is_the_held_out_choice_and_the_paper_keeps_the_scripts_value():
    # run_cifar10_ipc{1,10,50}_style5.sh --lr_style 100 (distill_fac.py line 464);
    # quick: workflow/hparams/methods/haba.yaml
    assert hparams.resolve("haba", "cifar10", 1, "paper")["lr_hallucinator"] == 100
    quick = hparams.resolve("haba", "mnist5k", 1, "quick")
    assert quick["lr_hallucinator"] == 0.1 and quick["expert_standardize"] == "none"
    assert manifest_path("mnist5k", quick) == manifest_path("mnist5k", hparams.resolve("mtt", "mnist5k", 1, "quick"))
