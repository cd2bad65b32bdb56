"""The experts stage (rules/experts.smk): expert trajectories for the trajectory methods (MTT, EAD).

One file per expert (format and loader: ddflow.records.experts), the parameters after every epoch (epoch 0 = the
initialisation) and the lr of each epoch. Expert i draws
everything (initialisation, data order, DSA) from generator("expert", dataset, prep, net, i), so it is the same
file whatever block it is trained in; a block of K experts is one ddflow.train.NetStack (vmap on CUDA, a loop over
models on the CPU). MTT's buffer.py settings: SGD lr 0.01, no momentum, no weight decay, batch 256, DSA per image
(one family per batch, parameters per image), epoch 0 = init. A block resumes from its last finished epoch.

A prep with the suffix `-batchstd` (e.g. `kornia-batchstd`) is the prep's data with every batch standardised by its
own scalar mean and std before DSA, train and test (test batches of 128), as HaBa's buffer.py trains its experts
through HaBa's utils.py epoch() (line 409): distinct files, requested by a method whose `expert_standardize` is
`batch` (ddflow.records.experts.experts_prep).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..augment import make_augment
from ..data import get_info, load_real, normalized_as
from ..data.spaces import preprocess
from ..errors import DdflowError
from ..io import save_pt, write_json
from ..nets import build_net
from ..ops.standardize import standardize_chunks, standardize_groups
from ..progress import Progress
from ..records.experts import EXPERT_FORMAT, RECEIPT_FORMAT, split_prep
from ..runtime import peak_memory_mb, provenance
from ..seeding import generator
from ..train import NetStack, TrainSettings, accuracy, train_stack
from .resume import ResumeFile

log = logging.getLogger(__name__)
TEST_BATCH = 128                # HaBa utils.py get_dataset line 221: testloader batch_size 128, no shuffle


def run(dataset: str, prep: str, net: str, indices: list[int], settings: dict[str, Any], data_path: str | Path,
        outs: list[str | Path], device: torch.device, resume: str | Path | None = None,
        stop_after_epoch: int | None = None, receipt: str | Path | None = None) -> None:
    """Train experts `indices` together (one NetStack) and write one file per expert to `outs`.
    settings: epochs, lr, momentum, weight_decay, batch, augment ('dsa'/'none'), strategy, zca_eps.
    `stop_after_epoch` leaves only the resume file (tests simulate a killed job with it). `receipt` (JSON: the
    block's expert files and test accuracies) is written last, so it exists only when every expert file does."""
    if len(indices) != len(outs):
        raise DdflowError("experts: one output per expert index")
    info = normalized_as(get_info(dataset), settings.get("normalize_as"))
    raw = load_real(data_path, info, device)
    base_prep, batch_std = split_prep(prep)
    data, _ = preprocess(raw, base_prep, settings.get("zca_eps"))  # 'kornia' = MTT's ZCA (eps 0.1 absolute)
    prepare = (lambda xb, k, _gens: standardize_groups(xb, k)) if batch_std else None
    gens = [generator("expert", dataset, prep, net, i) for i in indices]
    template = build_net(net, info.channels, info.classes, info.size)
    stack = NetStack(template, gens, device, settings.get("batching", "auto"))
    epochs = int(settings["epochs"])
    lrs = [float(settings["lr"])] * epochs  # constant lr (MTT's --decay is off by default)
    augment = make_augment(settings.get("augment", "dsa"), info.strategy(settings.get("strategy", "auto")))
    identity = {"dataset": dataset, "prep": prep, "net": net, "indices": list(indices), "settings": settings}
    names = list(stack.params)
    traj = {n: [v.detach().cpu().clone()] for n, v in stack.params.items()}  # per name: list over epochs of (K,...)
    start, seconds = 0, 0.0
    resume_file = ResumeFile(resume, identity, "expert resume file")
    state = resume_file.load()
    if state is not None:
        start, seconds = state["epoch"], state["seconds"]
        traj = {n: list(state["traj"][n].unbind(0)) for n in names}
        with torch.no_grad():
            for n in names:
                stack.params[n].copy_(traj[n][-1].to(device))
        for g, s in zip(gens, state["generators"]):
            g.set_state(s)
        log.info("experts %s: resuming from epoch %d (%s)", indices, start, resume)
    t0 = time.time() - seconds
    progress = Progress(epochs, f"experts {dataset}/{prep}/{net} {indices[0]}..{indices[-1]}", start=start)
    for ep in range(start, epochs):
        ts = TrainSettings(epochs=1, lr=lrs[ep], momentum=float(settings.get("momentum", 0.0)),
                           weight_decay=float(settings.get("weight_decay", 0.0)), batch=int(settings["batch"]))
        loss = train_stack(stack.train(True), data.x_train, data.y_train, gens, ts, augment, desc="expert epoch",
                           prepare=prepare)
        for n in names:
            traj[n].append(stack.params[n].detach().cpu().clone())
        progress.update(ep + 1, loss=sum(loss) / len(loss))
        if ep + 1 < epochs:
            resume_file.save(epoch=ep + 1, seconds=time.time() - t0, generators=[g.get_state() for g in gens],
                             traj={n: torch.stack(traj[n]) for n in names})
        if stop_after_epoch is not None and ep + 1 >= stop_after_epoch:
            progress.close()
            return
    progress.close()
    x_test = standardize_chunks(data.x_test, TEST_BATCH) if batch_std else data.x_test
    accs = accuracy(stack.train(False), x_test, data.y_test)
    seconds = time.time() - t0
    for k, (i, out) in enumerate(zip(indices, outs)):
        save_pt({"format": EXPERT_FORMAT, "dataset": dataset, "prep": prep, "net": net, "index": i,
                 "epochs": epochs, "lr": lrs, "settings": settings, "mean": list(info.mean), "std": list(info.std),
                 "params": {n: torch.stack([t[k] for t in traj[n]]) for n in names},
                 "test_accuracy": accs[k], "seconds": seconds, **peak_memory_mb(device),
                 "provenance": provenance(device)}, out)
    if receipt is not None:
        write_json({"format": RECEIPT_FORMAT, "dataset": dataset, "prep": prep, "net": net, "indices": list(indices),
                    "experts": [str(o) for o in outs], "test_accuracy": accs, "seconds": seconds,
                    "provenance": provenance(device)}, receipt)
    log.info("experts %s: test accuracy %s (%.1f s)", indices, [round(a, 2) for a in accs], seconds)
    resume_file.remove()

