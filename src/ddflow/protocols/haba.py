"""HaBa's evaluation protocol `haba` (Huage001/DatasetFactorization, commit 60c9128): distill_fac.py lines 194-204
call utils.py evaluate_synset(mode='style_translator', lr = the learned syn_lr) on the bases and the hallucinators.

- The training set is utils.py StyleTranslatorSharedDataset (lines 238-254): one item per basis (classes x bases
  per class, its class the label), and every access draws one hallucinator uniformly at random (line 248) and
  returns the basis through it. A shuffled loader (line 456, batch_train 256) makes an epoch one pass over the
  bases: classes x IPC images, each through a fresh random hallucinator.
- utils.py epoch() standardises every batch, train and test, by its own scalar mean and std (line 409) before DSA
  (lines 410-412); the test loader has batch 128 in order (get_dataset line 221).
- Otherwise DC's evaluate_synset: SGD(momentum 0.9, weight decay 5e-4) at the learned lr, Epoch + 1 epochs, lr x0.1
  with a fresh optimiser after epoch Epoch // 2 + 1 (lines 443-475), DSA on every training batch.

Model k draws its data order, then per batch its hallucinator per basis, then its DSA parameters from
generators[k]. `standardize: none` turns the standardisation off; protocol `mtt` trains on the fixed generated set
(every basis through every hallucinator) instead.
"""
from __future__ import annotations

import torch

from ..augment import make_augment
from ..data import RealData
from ..errors import DdflowError
from ..nets import build_net
from ..ops.hallucinator import factors_from_record, hallucinate
from ..ops.standardize import standardize_chunks, standardize_groups
from ..records import DistilledSet
from ..train import NetStack, TrainSettings, accuracy, train_stack
from .registry import desc, protocol, scored

STANDARDIZE = ("batch", "none")


def hallucinated_batches(hallucinators: torch.nn.ModuleList, standardize: bool):
    """train_stack's `prepare`: each model's gathered bases through one random hallucinator each (drawn from the
    model's generator), then, with `standardize`, each model's batch standardised on its own."""
    n = len(hallucinators)

    def prepare(xb: torch.Tensor, k: int, generators: list[torch.Generator]) -> torch.Tensor:
        b = len(xb) // k
        picks = torch.cat([torch.randint(0, n, (b,), generator=g) for g in generators]).to(xb.device)
        out = hallucinate(xb, hallucinators, picks)
        return standardize_groups(out, k) if standardize else out

    return prepare


@protocol("haba", variants=("aug", "noaug"))
def evaluate_haba(record: DistilledSet, data: RealData, settings: dict, generators,
                  device: torch.device) -> list[float]:
    if record.lr is None:
        raise DdflowError("protocol 'haba' trains with the distillation's learned lr; this distilled set has none")
    mode = settings.get("standardize", "batch")
    if mode not in STANDARDIZE:
        raise DdflowError(f"protocol 'haba': standardize {mode!r}; allowed: {', '.join(STANDARDIZE)}")
    bases, hals = factors_from_record(record.extra)
    bases, hals = bases.to(device), hals.to(device)
    n_bases = len(bases)
    labels = record.hard_labels()[:n_bases]  # the generated set is hallucinator after hallucinator, bases in order
    info = data.info
    stack = NetStack(build_net(settings["net"], info.channels, info.classes, info.size), generators, device,
                     settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs + 1, lr=float(record.lr), momentum=settings["momentum"],
                       weight_decay=settings["weight_decay"], batch=settings["batch"],
                       decay_epochs=(epochs // 2 + 1,), decay_factor=0.1, reset_momentum_on_decay=True)
    augment = make_augment(settings.get("augment", "dsa"), settings.get("strategy", "none"))
    train_stack(stack.train(True), bases, labels.to(device), generators, ts, augment, desc=desc("haba", record),
                prepare=hallucinated_batches(hals, mode == "batch"))
    stack.train(False)

    def acc(x, y):
        x = x.to(device)
        if mode == "batch":
            x = standardize_chunks(x, int(settings["test_batch"]))
        return accuracy(stack, x, y.to(device))

    return scored(acc, data)
