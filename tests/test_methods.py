import pytest
import torch

from ddflow import hparams
from ddflow.augment import DSA
from ddflow.errors import DdflowError
from ddflow.methods import REGISTRY, get_method
from ddflow.methods.herding import herding_select
from ddflow.nets import build_net


def test_registry_holds_the_implemented_methods_and_rejects_unknown_ids():
    assert {"random", "herding", "dm"} <= set(REGISTRY)
    with pytest.raises(DdflowError, match="unknown method 'dsa2'.*dm"):
        get_method("dsa2")


def test_herding_picks_the_greedy_mean_tracking_sequence():
    feats = torch.tensor([[0.0], [1.8], [2.1], [4.0], [2.05]])
    assert feats.mean().item() == pytest.approx(1.99)
    chosen = herding_select(feats, 3).tolist()
    # step 1: target 1.99 -> 2.05 (idx 4); step 2: 3.98 - 2.05 = 1.93 -> 1.8 (idx 1); step 3: 5.97 - 3.85 = 2.12 -> 2.1
    assert chosen == [4, 1, 2]
    assert len(set(herding_select(feats, 5).tolist())) == 5  # never picks a sample twice


def test_herding_differs_from_nearest_to_mean_selection():
    # two tight clusters: the mean lies between them; herding alternates clusters, nearest-to-mean would not
    feats = torch.tensor([[-1.0], [-1.01], [-0.99], [1.0], [1.01], [0.99]]) + 0.001
    chosen = herding_select(feats, 2).tolist()
    assert {feats[i].sign().item() for i in chosen} == {-1.0, 1.0}


def _dm(mnist5k, ipc=2):
    hp = hparams.resolve("dm", "mnist5k", ipc, "quick")
    hp["batch_real"] = 8
    m = get_method("dm")(hp, mnist5k, ipc, torch.Generator().manual_seed(0), torch.device("cpu"))
    m.init()
    return m


def test_dm_loss_is_the_sum_over_classes_of_squared_mean_embedding_distances(mnist5k):
    m = _dm(mnist5k)
    net = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    real = [torch.randn(4, 1, 28, 28, generator=g) for _ in range(3)]
    syn = [torch.randn(2, 1, 28, 28, generator=g) for _ in range(3)]
    expected = sum(((net.embed(r).mean(0) - net.embed(s).mean(0)) ** 2).sum() for r, s in zip(real, syn))
    torch.testing.assert_close(m.loss(net, real, syn), expected, rtol=1e-4, atol=1e-4)
    assert float(m.loss(net, real, [r.clone() for r in real]).detach()) == pytest.approx(0.0, abs=1e-6)


def test_dm_loss_class_by_class_equals_the_batched_forward(mnist5k):
    """The CPU's class-by-class forwards (official main_DM.py's loop) and the one batched forward used on a GPU give
    the same loss and image gradient: the instance-norm ConvNet treats every image on its own."""
    m = _dm(mnist5k)
    net = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    real = [torch.randn(5, 1, 28, 28, generator=g) for _ in range(3)]
    syn0 = torch.randn(3, 2, 1, 28, 28, generator=g)
    out = {}
    for per_class in (True, False):
        m.per_class_forward = per_class
        syn = syn0.clone().requires_grad_(True)
        loss = m.loss(net, real, list(syn))
        loss.backward()
        out[per_class] = (loss.detach(), syn.grad)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-9)


def test_dm_initialises_from_real_images_of_each_class_and_moves_them(mnist5k):
    m = _dm(mnist5k)
    before = m.images.detach().clone()
    for c in range(10):  # each synthetic image is a real training image of its class
        for img in before[2 * c:2 * c + 2]:
            hits = (mnist5k.x_train[:] == img).flatten(1).all(1).nonzero().flatten()
            assert len(hits) >= 1 and int(mnist5k.y_train[hits[0]]) == c
    stats = m.step(0)
    assert stats["loss"] > 0
    assert not torch.equal(before, m.images.detach())


def test_dm_step_uses_one_siamese_draw_per_class(mnist5k, monkeypatch):
    m = _dm(mnist5k)
    calls = []
    original = DSA.siamese

    def spy(self, g):
        calls.append(1)
        return original(self, g)

    monkeypatch.setattr(DSA, "siamese", spy)
    m.step(0)
    assert len(calls) == 10


def test_random_selection_is_distinct_real_images_per_class(mnist5k):
    m = get_method("random")({}, mnist5k, 5, torch.Generator().manual_seed(0), torch.device("cpu"))
    m.init()
    r = m.result()
    assert r["images"].shape == (50, 1, 28, 28)
    assert torch.equal(r["labels"], torch.arange(10).repeat_interleave(5))
    assert torch.equal(mnist5k.y_train[r["train_indices"]], r["labels"])
    assert len(set(r["train_indices"].tolist())) == 50
