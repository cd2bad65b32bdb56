"""MTT's distillation loop pinned to the official GeorgeCazenavette/mtt-distillation distill.py (at 50dccea).

Line numbers refer to that distill.py. The method runs on synthetic 28x28 data with two fake expert trajectories of
a ConvNetW32 written in ddflow's expert format (their parameters are random: only the bookkeeping is under test).
"""
from __future__ import annotations

import pytest
import torch

from ddflow import hparams
from ddflow.io import save_pt
from ddflow.methods import get_method
from ddflow.methods import mtt as mtt_mod
from ddflow.nets import build_net
from ddflow.records.experts import EXPERT_FORMAT
from ddflow.stages.sampling import write_mtt_manifest

CPU = torch.device("cpu")
EPOCHS = 6          # expert epochs on file: long enough that an off-by-one window would not raise


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small(random_real):
    return random_real(4)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Two expert files: per parameter name a (EPOCHS + 1, ...) stack, every epoch a different random tensor."""
    d = tmp_path_factory.mktemp("mtt_experts")
    paths, trajs = [], []
    for k in range(2):
        g = torch.Generator().manual_seed(10 + k)
        base = build_net("ConvNetW32", 1, 10, 28, g)
        params = {n: torch.stack([p.detach() + 0.01 * e * torch.randn(p.shape, generator=g)
                                  for e in range(EPOCHS + 1)])
                  for n, p in base.named_parameters()}
        path = d / f"e{k}.pt"
        save_pt({"format": EXPERT_FORMAT, "dataset": "mnist5k", "prep": "raw", "net": "ConvNetW32", "index": k,
                 "epochs": EPOCHS, "lr": [0.01] * EPOCHS, "settings": {}, "params": params}, path)
        paths.append(str(path))
        trajs.append(params)
    return paths, trajs


def _mtt(small, experts, tmp_path, preset="quick", **over):
    paths, _ = experts
    hp = hparams.resolve("mtt", "mnist5k", 1, preset)
    hp.update({"net": "ConvNetW32", "prep": "raw", "expert_epochs": 2, "max_start_epoch": 3, "syn_steps": 1,
               "batch_syn": None, "dsa": False, "iterations": 40, **over})
    man = tmp_path / "manifest.json"
    write_mtt_manifest(f"mtt-m{hp['expert_epochs']}-t{hp['max_start_epoch']}", "mnist5k", "raw", "ConvNetW32",
                       paths, man)
    m = get_method("mtt")(hp, small, 1, torch.Generator().manual_seed(5), CPU, inputs={"trajectories": str(man)})
    m.init()
    return m


def _which(params, trajs):
    """(expert, epoch) whose stored parameters are exactly `params`."""
    hits = [(k, e) for k, t in enumerate(trajs) for e in range(EPOCHS + 1)
            if all(torch.equal(params[n].detach(), t[n][e]) for n in t)]
    assert len(hits) == 1, hits
    return hits[0]


def _spy_batches(monkeypatch):
    """Record, per iteration, the index batches of the unrolled student steps."""
    seen = []
    real = mtt_mod.student_unroll

    def spy(net, start, images, labels, syn_lr, batches, augment=None, *rest):
        seen.append([b.clone() for b in batches])
        return real(net, start, images, labels, syn_lr, batches, augment, *rest)

    monkeypatch.setattr(mtt_mod, "student_unroll", spy)
    return seen


# ---- windows ----------------------------------------------------------------------------------------------------
def test_window_start_is_drawn_in_0_to_max_start_and_target_is_start_plus_expert_epochs(small, experts, tmp_path,
                                                                                       monkeypatch):
    """distill.py line 324: start_epoch = np.random.randint(0, max_start_epoch) (upper bound excluded); line 327:
    target = expert_trajectory[start_epoch + expert_epochs]; lines 306-309: the experts are walked in turn
    (each one once per pass over the shuffled buffer)."""
    _, trajs = experts
    m = _mtt(small, experts, tmp_path)
    windows = []
    real = mtt_mod.trajectory_loss

    def spy(final, start, target):
        windows.append((_which(start, trajs), _which(target, trajs)))
        return real(final, start, target)

    def no_unroll(net, start, images, labels, syn_lr, batches, augment=None, *rest):  # the student is not under test
        return {n: v + 0 * syn_lr * images.sum() for n, v in start.items()}

    monkeypatch.setattr(mtt_mod, "trajectory_loss", spy)
    monkeypatch.setattr(mtt_mod, "student_unroll", no_unroll)
    for it in range(40):
        m.step(it)
    starts = [s for (_, s), _ in windows]
    assert set(starts) == {0, 1, 2}                       # every start in [0, 3) drawn, nothing outside
    for (k_s, s), (k_t, t) in windows:
        assert k_s == k_t and t == s + 2                  # the same expert, expert_epochs later
    for p in range(0, 40, 2):                             # each pass of 2 iterations uses both experts once
        assert {windows[p][0][0], windows[p + 1][0][0]} == {0, 1}


# ---- batch_syn chunking ---------------------------------------------------------------------------------------
def test_student_batches_are_the_chunks_of_one_permutation_until_they_run_out(small, experts, tmp_path,
                                                                            monkeypatch):
    """distill.py lines 344-348: `if not indices_chunks: indices = randperm(n); indices_chunks =
    list(split(indices, batch_syn))`, then one chunk per student step: 10 images, batch_syn 4, 6 steps = two whole
    permutations, each split into chunks of 4, 4 and 2 (and batch_syn None = every image at every step, line 75)."""
    seen = _spy_batches(monkeypatch)
    m = _mtt(small, experts, tmp_path, syn_steps=6, batch_syn=4)
    m.step(0)
    batches = seen[0]
    for perm in (batches[:3], batches[3:]):
        assert sorted(len(b) for b in perm) == [2, 4, 4]
        assert sorted(torch.cat(perm).tolist()) == list(range(10))
    seen.clear()
    m = _mtt(small, experts, tmp_path, syn_steps=3)
    m.step(0)
    assert all(sorted(b.tolist()) == list(range(10)) for b in seen[0])


def test_student_batches_restart_from_a_fresh_permutation_every_iteration(small, experts, tmp_path, monkeypatch):
    """distill.py line 340: `indices_chunks = []` inside the iteration loop (line 185), so every iteration starts a
    fresh permutation: with 10 images, batch_syn 5 and 3 steps, steps 1 and 2 of EVERY iteration are the two
    halves of one permutation (step 3 opens another one, whose rest is dropped)."""
    seen = _spy_batches(monkeypatch)
    m = _mtt(small, experts, tmp_path, syn_steps=3, batch_syn=5)
    for it in range(4):
        m.step(it)
    for batches in seen:
        assert sorted(torch.cat(batches[:2]).tolist()) == list(range(10))


def test_student_batches_take_the_last_chunk_first(small, experts, tmp_path, monkeypatch):
    """distill.py line 348: `these_indices = indices_chunks.pop()`: the chunks of split(randperm(10), 4) =
    [4, 4, 2] are used from the end, so the steps of an iteration see 2, 4, 4 images (3 steps = exactly one
    permutation: the per-iteration restart does not matter here)."""
    seen = _spy_batches(monkeypatch)
    m = _mtt(small, experts, tmp_path, syn_steps=3, batch_syn=4)
    for it in range(2):
        m.step(it)
    assert [[len(b) for b in batches] for batches in seen] == [[2, 4, 4], [2, 4, 4]]


# ---- DSA ---------------------------------------------------------------------------------------------------------
def test_one_dsa_draw_per_unrolled_step_on_that_steps_batch(small, experts, tmp_path, monkeypatch):
    """distill.py lines 351-359: per student step, x = syn_images[these_indices] then DiffAugment(x, ...) once (a new
    draw every step, on that step's batch only)."""
    seen = _spy_batches(monkeypatch)
    m = _mtt(small, experts, tmp_path, syn_steps=4, batch_syn=5, dsa=True)
    calls = []

    class Spy:
        def __init__(self, dsa):
            self.dsa = dsa

        def __call__(self, x, g):
            calls.append(x.detach().clone())
            return self.dsa(x, g)

    m.dsa = Spy(m.dsa)
    before = m.images.detach().clone()   # the images during the step (the update comes after the unroll)
    m.step(0)
    batches = seen[0]
    assert len(calls) == len(batches) == 4
    for x, b in zip(calls, batches):
        assert torch.equal(x, before[b])


# ---- the two optimisers --------------------------------------------------------------------------------------------
def test_images_and_learnable_lr_have_their_own_sgd_with_momentum_half(small, experts, tmp_path):
    """distill.py lines 118/137: syn_lr starts at lr_teacher and is learnable; line 138: SGD([image_syn],
    lr=lr_img, momentum=0.5); line 139: SGD([syn_lr], lr=lr_lr, momentum=0.5) (defaults lr_img 1000, lr_lr 1e-5,
    lines 433-434); lines 390-396: both zero_grad, one backward, both step. Two steps checked against the SGD
    update with momentum 0.5 written out (lr_lr raised to 0.05 so that the lr's own step is resolved in float32);
    the learned lr is the record's lr (evaluated by protocol mtt)."""
    hp = hparams.resolve("mtt", "mnist5k", 1, "paper")
    assert (hp["lr_img"], hp["lr_lr"], hp["momentum"], hp["lr_teacher"]) == (1000, 1e-5, 0.5, 0.01)
    m = _mtt(small, experts, tmp_path, preset="paper", syn_steps=2, lr_lr=0.05)
    lr_img, lr_lr = 1000, 0.05
    assert m.syn_lr.item() == pytest.approx(0.01) and m.syn_lr.requires_grad
    x0, lr0 = m.images.detach().clone(), m.syn_lr.detach().clone()
    m.step(0)
    gx1, gl1 = m.images.grad.clone(), m.syn_lr.grad.clone()
    assert gx1.abs().sum() > 0 and gl1.abs() > 0
    x1, lr1 = m.images.detach().clone(), m.syn_lr.detach().clone()
    torch.testing.assert_close(x1 - x0, -lr_img * gx1, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(lr1 - lr0, -lr_lr * gl1, rtol=1e-3, atol=0.0)
    m.step(1)
    gx2, gl2 = m.images.grad.clone(), m.syn_lr.grad.clone()
    torch.testing.assert_close(m.images.detach() - x1, -lr_img * (0.5 * gx1 + gx2), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(m.syn_lr.detach() - lr1, -lr_lr * (0.5 * gl1 + gl2), rtol=1e-3, atol=0.0)
    assert m.result()["lr"] == m.syn_lr.item()
