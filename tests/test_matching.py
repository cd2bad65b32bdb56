"""Gradient matching (DC/DSA) and DREAM's representative sampling."""
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from ddflow import hparams
from ddflow.errors import DdflowError
from ddflow.methods import get_method
from ddflow.nets import build_net
from ddflow.ops.gradient_distance import distance_wb, loops_for, match_distance, per_class_grads
from ddflow.ops.real_batches import RandomSampler, RepresentativeSampler
from ddflow.settings import distill_cell as run


def test_distance_wb_matches_a_hand_computation_and_ignores_1d_tensors():
    gs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    gr = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, -1.0]])
    # rows: cos = 1, 0, -1 -> (1-1) + (1-0) + (1+1) = 3 (up to the 1e-6 in the denominator)
    assert float(distance_wb(gs, gr)) == pytest.approx(3.0, abs=1e-5)
    assert float(distance_wb(torch.randn(7), torch.randn(7))) == 0.0  # biases, norm weights: nothing
    conv_s, conv_r = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    rows_s, rows_r = conv_s.reshape(4, -1), conv_r.reshape(4, -1)
    expected = sum(1 - torch.dot(a, b) / (a.norm() * b.norm() + 1e-6) for a, b in zip(rows_s, rows_r))
    assert float(distance_wb(conv_s, conv_r)) == pytest.approx(float(expected), rel=1e-5)
    total = match_distance([conv_s, torch.randn(4)], [conv_r, torch.randn(4)])
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    a, b = [torch.ones(2, 2)], [torch.zeros(2, 2)]
    assert float(match_distance(a, b, "mse")) == 4.0
    assert float(match_distance(a, a, "cos")) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DdflowError, match="unknown match distance"):
        match_distance(a, b, "l3")


def test_loops_follow_the_official_schedule_and_other_ipcs_are_a_clear_error():
    loops = hparams.resolve("dc", "cifar10", 1, "paper")["loops"]
    assert [loops_for(i, loops) for i in (1, 10, 20, 30, 40, 50)] == \
        [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15), (50, 10)]
    with pytest.raises(DdflowError, match="no \\(outer, inner\\) loop schedule for IPC 5"):
        loops_for(5, loops)


def test_per_class_grads_equal_the_official_per_class_autograd_loop_including_image_gradients():
    torch.manual_seed(0)
    net = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(0))
    params = {n: p.detach() for n, p in net.named_parameters()}
    x = torch.randn(3, 4, 1, 28, 28)
    y = torch.tensor([0, 1, 2]).repeat_interleave(4).view(3, 4)
    real = torch.randn(3, 6, 1, 28, 28)
    grads = {}
    for batching in ("vmap", "loop"):
        xs = x.clone().requires_grad_(True)
        g_syn = per_class_grads(net, params, {}, xs, y, batching=batching)
        with torch.no_grad():
            g_real = per_class_grads(net, params, {}, real, y[:, :1].expand(3, 6), batching=batching)
        loss = sum(match_distance([g_syn[n][c] for n in params], [g_real[n][c] for n in params]) for c in range(3))
        loss.backward()
        grads[batching] = (loss.item(), xs.grad)
    # the official code: a Python loop over classes, autograd.grad with create_graph for the synthetic batch
    xs = x.clone().requires_grad_(True)
    ps = list(net.parameters())
    loss = 0
    for c in range(3):
        gr = torch.autograd.grad(F.cross_entropy(net(real[c]), y[c, :1].expand(6)), ps)
        gs = torch.autograd.grad(F.cross_entropy(net(xs[c]), y[c]), ps, create_graph=True)
        loss = loss + sum(distance_wb(a, b.detach()) for a, b in zip(gs, gr))
    loss.backward()
    for batching, (value, grad) in grads.items():
        assert value == pytest.approx(loss.item(), rel=1e-4), batching
        torch.testing.assert_close(grad, xs.grad, rtol=1e-3, atol=1e-6)


def _gm(method, mnist5k, ipc=1, **changes):
    hp = hparams.resolve(method, "mnist5k", ipc, "quick")
    hp.update(batch_real=8, **changes)
    m = get_method(method)(hp, mnist5k, ipc, torch.Generator().manual_seed(0), torch.device("cpu"))
    m.init()
    return m


def test_dc_step_moves_noise_images_and_dsa_starts_from_real_images(mnist5k):
    dc = _gm("dc", mnist5k)
    before = dc.images.detach().clone()
    assert not any((mnist5k.x_train[:] == img).flatten(1).all(1).any() for img in before)  # noise init
    stats = dc.step(0)
    assert stats["loss"] > 0 and not torch.equal(before, dc.images.detach())
    dsa = _gm("dsa", mnist5k)
    assert all((mnist5k.x_train[:] == img).flatten(1).all(1).any() for img in dsa.images.detach())
    assert dsa.dsa is not None and dc.dsa is None


def test_dc_inner_loop_trains_the_network_between_outer_loops(mnist5k, monkeypatch):
    m = _gm("dc", mnist5k, ipc=2, loops={2: [3, 2]})
    calls = []
    original = type(m)._train_net
    monkeypatch.setattr(type(m), "_train_net", lambda self, net, opt: (calls.append(1), original(self, net, opt)))
    m.step(0)
    assert len(calls) == 2  # outer_loop - 1 times: never after the last round
    assert m.matching_steps == 3


def test_dream_selection_is_nearest_to_centroids_and_changes_with_the_network(mnist5k):
    g = torch.Generator().manual_seed(0)
    sampler = RepresentativeSampler(mnist5k, 4, g, every=10, pool=40)
    net_a = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(1))
    net_b = build_net("ConvNet", 1, 10, 28, torch.Generator().manual_seed(2))
    first = sampler.indices(net_a, 0)
    assert first.shape == (10, 4)
    assert torch.equal(mnist5k.y_train[first], torch.arange(10).unsqueeze(1).expand(10, 4))
    assert all(len(set(row.tolist())) == 4 for row in first)
    assert torch.equal(sampler.indices(net_b, 5), first)  # cached between re-clusterings
    g_a, g_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    sel_a = RepresentativeSampler(mnist5k, 4, g_a, pool=40).indices(net_a, 0)
    sel_b = RepresentativeSampler(mnist5k, 4, g_b, pool=40).indices(net_b, 0)
    assert not torch.equal(sel_a, sel_b)  # same pool and seeds, another network: another selection
    random = RandomSampler(mnist5k, 4, torch.Generator().manual_seed(0))
    assert not torch.equal(random.indices(None, 0), random.indices(None, 1))


@pytest.mark.parametrize("count,expected", [("network", 12), ("global", 2)])
def test_dm_dream_reclustering_cadence(mnist5k, monkeypatch, count, expected):
    """DREAM's condense.py clusters when `ot % args.interval == 0` inside one network's loop (the count restarts per
    network): DM draws a network per iteration, so `network` clusters at all 12 iterations, `global` at 0 and 10."""
    m = _gm("dm-dream", mnist5k, iterations=12, representative={"every": 10, "pool": 40, "count": count})
    calls = []
    original = RepresentativeSampler.recluster
    monkeypatch.setattr(RepresentativeSampler, "recluster", lambda self, net: (calls.append(1), original(self, net))[1])
    for it in range(12):
        m.step(it)
    assert len(calls) == expected


def test_dsa_dream_clusters_on_each_new_networks_first_step(mnist5k, monkeypatch):
    """count network: every step() (a new network) clusters at its outer loop 0, then every `every` outer loops."""
    m = _gm("dsa-dream", mnist5k, iterations=2, representative={"every": 10, "pool": 40, "count": "network"})
    seen = []
    original = RepresentativeSampler.indices
    monkeypatch.setattr(RepresentativeSampler, "indices",
                        lambda self, net, step: (seen.append(step), original(self, net, step))[1])
    m.step(0)
    m.step(1)
    assert seen == [0, 0]  # IPC 1: one outer loop per network; each network's first step is step 0


def test_dsa_dream_resumes_exactly(mnist5k_path, tmp_path):
    """Resume restores the image optimiser, the matching-step counter and DREAM's current selection."""
    import shutil

    import yaml

    from ddflow.settings import distill_cell as run
    from test_distill import ROOT

    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "dc.yaml").read_text())
    doc["quick"].update(iterations=4, batch_real=4)
    doc.pop("quick_overrides")
    (hp_dir / "methods" / "dc.yaml").write_text(yaml.safe_dump(doc))
    doc = yaml.safe_load((hp_dir / "methods" / "dsa-dream.yaml").read_text())
    doc["quick"]["representative"].update(pool=16, every=3)
    (hp_dir / "methods" / "dsa-dream.yaml").write_text(yaml.safe_dump(doc))
    cpu = torch.device("cpu")
    args = ("dsa-dream", "mnist5k", 1, 0, "quick", cpu, mnist5k_path)
    full = run(*args, tmp_path / "full.pt", hp_dir=hp_dir)
    resume = tmp_path / "state.pt"
    assert run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2, stop_after=3) is None
    resumed = run(*args, tmp_path / "r.pt", hp_dir=hp_dir, resume=resume, save_every=2)
    assert torch.equal(resumed.images, full.images)


def test_dream_variants_share_their_base_methods_initial_set_and_evaluation_models(mnist5k_path, mnist5k, tmp_path):
    import shutil

    import yaml

    from ddflow.records import load_distilled
    from ddflow.settings import distill_cell as run
    from ddflow.stages.evaluate import evaluate_record as evaluate_cell
    from test_distill import ROOT

    hp_dir = tmp_path / "hp"
    shutil.copytree(ROOT / "workflow" / "hparams", hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / "dc.yaml").read_text())
    doc["quick"].update(iterations=1, batch_real=4, snapshots=[0])
    (hp_dir / "methods" / "dc.yaml").write_text(yaml.safe_dump(doc))
    cpu = torch.device("cpu")
    sets = {}
    for method in ("dsa", "dsa-dream"):
        run(method, "mnist5k", 1, 0, "quick", cpu, mnist5k_path, tmp_path / f"{method}.pt", hp_dir=hp_dir,
            snapshot_dir=tmp_path / method)
        sets[method] = load_distilled(tmp_path / method / "it0.pt")
    assert torch.equal(sets["dsa"].images, sets["dsa-dream"].images)
    settings = {"net": "ConvNet", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch": 256, "epochs": 1,
                "augment": "none", "models": 2}
    accs = [evaluate_cell(sets[m], "dc", settings, mnist5k, cpu)["accuracies"] for m in ("dsa", "dsa-dream")]
    assert accs[0] == accs[1]  # same set, same model draws: same numbers


@pytest.mark.parametrize("method", ["dc-dream", "dsa-dream"])
def test_dream_variants_run_on_a_batchnorm_net_with_its_layers_kept_frozen(method, mnist5k_path, mnist5k, tmp_path):
    """The official DC loop freezes the BatchNorm layers after fixing their statistics (VICO-UoE/DatasetCondensation
    main.py lines 158-174, "freeze the running mu and sigma"); DREAM's re-clustering must hand the net back with
    every module's own training flag (before: torch.func.grad failed on BatchNorm's in-place statistics update).
    `mnist5k`: one CPU thread."""
    root = Path(__file__).resolve().parents[1] / "workflow" / "hparams"
    hp_dir = tmp_path / "hparams"
    shutil.copytree(root, hp_dir)
    doc = yaml.safe_load((hp_dir / "methods" / f"{method}.yaml").read_text())
    doc["quick"] = {"net": "ConvNetBN", "iterations": 2, "batch_real": 4, "snapshots": [],
                    "loops": {1: [2, 1]}, "representative": {"every": 1, "pool": 16, "kmeans_iters": 5}}
    (hp_dir / "methods" / f"{method}.yaml").write_text(yaml.safe_dump(doc))
    out = run(method, "mnist5k", 1, 0, "quick", torch.device("cpu"), mnist5k_path, tmp_path / "out.pt",
              hp_dir=hp_dir)
    assert out.iterations == 2 and torch.isfinite(out.images).all()


def test_representative_sampler_restores_every_modules_own_training_flag(mnist5k):
    net = build_net("ConvNetBN", 1, 10, 28, torch.Generator().manual_seed(0)).train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    before = [m.training for m in net.modules()]
    sampler = RepresentativeSampler(mnist5k, 4, torch.Generator().manual_seed(0), every=1, pool=16, kmeans_iters=5)
    sampler.indices(net, 0)
    assert [m.training for m in net.modules()] == before and net.training and not all(before)


@pytest.mark.parametrize("pool", [None, 30])
def test_representative_sampler_picks_what_class_by_class_kmeans_picks(mnist5k, pool):
    """All classes in one Lloyd loop (no pool) or class by class (pool: each class's subset is drawn before its
    k-means draws): the same indices as clustering each class on its own from the same generator stream."""
    from ddflow.ops.kmeans import representative_indices
    net = build_net("ConvNetW32", 1, 10, 28, torch.Generator().manual_seed(0)).eval()
    sampler = RepresentativeSampler(mnist5k, 3, torch.Generator().manual_seed(5), every=1, pool=pool, kmeans_iters=4)
    got = sampler.indices(net, 0)
    g, want = torch.Generator().manual_seed(5), []
    with torch.no_grad():
        for idx in mnist5k.indices_per_class():
            if pool is not None:
                idx = idx[torch.randperm(len(idx), generator=g)[:pool]]
            feats = net.embed(mnist5k.x_train[idx])
            want.append(idx[representative_indices(feats, 3, g, 4)])
    assert torch.equal(got, torch.stack(want))
    assert all(len(i) > 30 for i in mnist5k.indices_per_class())  # the cached per-class indices stay whole
