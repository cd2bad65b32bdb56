"""Evaluation protocols: K fresh networks trained from scratch on a distilled set, test accuracy per model.

Protocol settings = workflow/hparams/protocols.yaml[protocol] (the protocol's fixed optimiser settings) updated by
the method's `eval: {protocol: {...}}` hyperparameters (epochs, augmentation, number of models), as in the official
code, where the evaluation length and augmentation follow the method and the dataset.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from . import hparams as hparams_mod
from .augment import make_augment
from .data import RealData, get_info
from .errors import DdflowError
from .methods import get_method
from .nets import build_net
from .prep import for_distilled
from .runtime import peak_memory_mb, reset_peak
from .seeding import generator
from .train import NetStack, TrainSettings, accuracy, hard_ce, train_stack

log = logging.getLogger(__name__)
PROTOCOLS: dict[str, Callable[..., list[float]]] = {}


def protocol(name: str):
    def deco(fn):
        PROTOCOLS[name] = fn
        return fn
    return deco


def protocol_settings(method: str, dataset: str, ipc: int, preset: str, name: str,
                      hp_dir: str | Path | None = None) -> dict[str, Any]:
    if name not in PROTOCOLS:
        raise DdflowError(f"unknown evaluation protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    hp_dir = Path(hp_dir or hparams_mod.HPARAMS_DIR)
    base = (yaml.safe_load((hp_dir / "protocols.yaml").read_text()) or {}).get(name, {})
    hp = hparams_mod.resolve(method, dataset, ipc, preset, hp_dir)
    specific = (hp.get("eval") or {}).get(name)
    if specific is None:
        raise DdflowError(f"method {method!r} has no settings for protocol {name!r} in its hparams (eval.{name})")
    settings = hparams_mod.deep_merge(base, specific)
    if settings.get("augment") == "dsa" and settings.get("strategy", "auto") == "auto":
        settings["strategy"] = get_info(dataset).dsa_strategy
    return settings


def train_and_test_dc(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                      device: torch.device, desc: str = "eval", lr: float | None = None,
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = hard_ce) -> list[float]:
    """DC's evaluate_synset: SGD (lr 0.01, momentum 0.9, wd 5e-4), batch 256, epochs+1 epochs, lr x0.1 (and a
    fresh optimiser) after epoch epochs//2 + 1; test accuracy after the last epoch. `loss_fn` per model, on
    `labels` as given (hard for `dc`, soft for `soft`)."""
    info = data.info
    template = build_net(settings["net"], info.channels, info.classes, info.size)
    stack = NetStack(template, generators, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    ts = TrainSettings(epochs=epochs + 1, lr=lr if lr is not None else settings["lr"],
                       momentum=settings["momentum"], weight_decay=settings["weight_decay"],
                       batch=settings["batch"], decay_epochs=(epochs // 2 + 1,), decay_factor=0.1,
                       reset_momentum_on_decay=True)
    augment = make_augment(settings.get("augment", "none"), settings.get("strategy", "none"))
    train_stack(stack.train(True), images.to(device), labels.to(device), generators, ts, augment, loss_fn=loss_fn,
                desc=desc)
    return accuracy(stack.train(False), data.x_test.to(device), data.y_test.to(device))


@protocol("dc")
def evaluate_dc(images: torch.Tensor, labels: torch.Tensor, data: RealData, settings: dict, generators,
                device: torch.device, desc: str = "eval", lr: float | None = None, **_) -> list[float]:
    """DC's evaluate_synset on hard labels (train_and_test_dc)."""
    if labels.dim() != 1:
        raise DdflowError("protocol 'dc' trains on hard labels; this distilled set has soft labels")
    return train_and_test_dc(images, labels, data, settings, generators, device, desc=desc, lr=lr)


# A protocol is fn(images, labels, data, settings, generators, device, desc=..., lr=..., distilled=...) -> list
# of K test accuracies (percent); `data` is already in the distilled set's space (ddflow.prep.for_distilled) and
# `distilled` is the whole record (extras such as a learned lr, a decoding factor or learned labels).
def evaluate_cell(distilled: dict[str, Any], protocol_name: str, settings: dict, data: RealData,
                  device: torch.device) -> dict[str, Any]:
    fn = PROTOCOLS[protocol_name]
    k = int(settings["models"])
    cell = (distilled["method"], distilled["dataset"], distilled["ipc"], distilled["seed"])
    seed_id = get_method(cell[0]).seed_id()  # a -dream variant is evaluated by the same K model draws as its base
    gens = [generator("eval", protocol_name, seed_id, *cell[1:], i) for i in range(k)]
    reset_peak(device)
    t0 = time.time()
    data = for_distilled(data, distilled)  # e.g. the test split whitened by the distillation's ZCA
    accs = fn(distilled["images"], distilled["labels"], data, settings, gens, device,
              desc=f"eval {protocol_name} {'/'.join(map(str, cell))}", lr=distilled.get("lr"), distilled=distilled)
    t = torch.tensor(accs, dtype=torch.float64)
    out = {
        "protocol": protocol_name, "method": cell[0], "dataset": cell[1], "ipc": cell[2], "seed": cell[3],
        "preset": distilled.get("preset"), "iterations": distilled.get("iterations"), "accuracies": accs,
        "mean": float(t.mean()),
        "std": float(t.std(unbiased=False)) if k > 1 else 0.0, "n_models": k, "settings": settings,
        "seconds": time.time() - t0, **peak_memory_mb(device),
    }
    log.info("%s: %.2f +- %.2f over %d models (%.1f s)", "/".join(map(str, cell)), out["mean"], out["std"], k,
             out["seconds"])
    return out


# protocol modules of the method families: importing registers them
from . import idc_protocol, kernel_eval, protocols_trajectory  # noqa: E402,F401
