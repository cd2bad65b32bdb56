"""The `dc` / `mtt` evaluation schedule pinned to DC's evaluate_synset (an independent reference loop as the oracle).

Official: VICO-UoE/DatasetCondensation utils.py evaluate_synset (lines 337-361 at 53f63a6): `Epoch + 1` epochs
(`for ep in range(Epoch+1)`, line 351), SGD(lr, momentum 0.9, weight decay 5e-4) (line 344), after the epoch
`ep in [Epoch//2+1]` (lines 343, 353) the lr is multiplied by 0.1 and a NEW SGD optimiser is built (line 355: the
momentum buffer starts afresh); `epoch('train', ...)` (lines 297-333) walks a shuffled DataLoader of batch_train with
the last batch kept (no drop_last), one CE step per batch. MTT's copy (GeorgeCazenavette/mtt-distillation utils.py
evaluate_synset, lines 352-389) is the same schedule, run with `args.lr_net = syn_lr.item()` (distill.py line 210).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ddflow.data import RealData, get_info
from ddflow.protocols import dc as dc_protocol
from ddflow.records import DistilledSet

CPU = torch.device("cpu")
EPOCHS = 4                      # evaluate_synset trains EPOCHS + 1 = 5 epochs, lr x0.1 after epoch index 3
SETTINGS = {"net": "ConvNetW32", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch": 8, "epochs": EPOCHS,
            "augment": "none", "strategy": "none", "batching": "loop"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    info = get_info("mnist5k")
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.arange(n) % 10
    return RealData(x, y, x[:10].clone(), y[:10].clone(), info), x, y


def _record(x, y, info, lr=None):
    return DistilledSet(images=x, labels=y, method="dc", dataset=info.name, ipc=2, seed=0, mean=info.mean,
                        std=info.std, lr=lr)


def _capture(monkeypatch):
    """Wrap the protocol's train_stack: remember the stack's initial parameters and the generator state it starts
    from (after the initialisation draws), then train as usual."""
    seen = {}
    real = dc_protocol.train_stack

    def spy(stack, x, y, generators, settings, augment=None, **kw):
        seen["init"] = {n: v[0].detach().clone() for n, v in stack.params.items()}
        seen["gen"] = generators[0].get_state()
        seen["stack"] = stack
        return real(stack, x, y, generators, settings, augment, **kw)

    monkeypatch.setattr(dc_protocol, "train_stack", spy)
    return seen


def _reference_evaluate_synset(template, init, x, y, gen_state, lr, epochs, batch):
    """DC's evaluate_synset on one model with torch.optim.SGD, written from the official semantics: epochs + 1
    epochs of shuffled minibatches (last partial batch kept), lr x0.1 and a fresh optimiser after epoch
    epochs // 2 + 1. The shuffle of each epoch is the model's generator's randperm (ddflow's data order)."""
    net = copy.deepcopy(template)
    params = {n: v.clone().requires_grad_(True) for n, v in init.items()}
    g = torch.Generator()
    g.set_state(gen_state)
    opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=0.9, weight_decay=5e-4)
    lrs = []
    for ep in range(epochs + 1):
        lrs.append(lr)
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            loss = F.cross_entropy(functional_call(net, params, (x[idx],)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if ep == epochs // 2 + 1:
            lr *= 0.1
            opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=0.9, weight_decay=5e-4)
    return {n: v.detach() for n, v in params.items()}, lrs


def _check_against_reference(seen, x, y, lr):
    stack = seen["stack"]
    ref, lrs = _reference_evaluate_synset(stack.template, seen["init"], x, y, seen["gen"], lr, EPOCHS,
                                          SETTINGS["batch"])
    assert lrs == [lr, lr, lr, lr, lr * 0.1]  # the oracle itself: 5 epochs, the last one at lr / 10
    for n, v in ref.items():  # bitwise: the same operations on the CPU
        assert torch.equal(stack.params[n][0].detach(), v), (n, (stack.params[n][0] - v).abs().max())


def test_dc_protocol_follows_evaluate_synset_epochs_decay_and_fresh_optimiser(monkeypatch):
    """Pins utils.py evaluate_synset lines 343-355: Epoch+1 epochs, lr x0.1 after epoch Epoch//2+1, a new SGD
    (momentum reset) at the decay; train_stack with K = 1 reproduces the plain torch.optim.SGD loop on the CPU."""
    data, x, y = _data()
    seen = _capture(monkeypatch)
    dc_protocol.evaluate_dc(_record(x, y, data.info), data, SETTINGS, [torch.Generator().manual_seed(7)], CPU)
    _check_against_reference(seen, x, y, SETTINGS["lr"])


def test_mtt_protocol_trains_with_the_learned_lr(monkeypatch):
    """Pins mtt-distillation distill.py line 210 (`args.lr_net = syn_lr.item()`) with utils.py evaluate_synset
    (lines 352-379): the same schedule, starting from the distillation's learned lr, not the protocol's lr."""
    data, x, y = _data(seed=1)
    seen = _capture(monkeypatch)
    learned = 0.0371
    dc_protocol.evaluate_mtt(_record(x, y, data.info, lr=learned), data, SETTINGS,
                             [torch.Generator().manual_seed(3)], CPU)
    _check_against_reference(seen, x, y, learned)
