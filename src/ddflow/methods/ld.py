"""LD: label distillation (Bohdal, Yang & Hospedales, 2020; official ondrejbohdal/label-distillation
label_distillation_or2.py, the second-order variant, `variant: or2`; label_distillation_rr.py, the ridge-regression
variant, `variant: rr`, below).

What is learned: the soft labels of a fixed, class-balanced set of real base examples (IPC per class from the
training split minus the validation split; lines 246-273), starting uniform 1/C (lines 284-288), updated by Adam
(PyTorch defaults, lr 1e-3; line 290) and after every step clamped to [0, 1] and renormalised per row (lines 593-595).

Per target minibatch (train, lines 556-660; `batch` real images of the shuffled fit split, the last batch of an
epoch short): `inner_batch_size` base examples drawn by a random permutation; the inner soft cross-entropy under the
current model, one SGD step of `inner_lr` with fast weights (graph kept), the outer cross-entropy of the target
batch under the fast weights back-propagated to the labels (the second-order meta-gradient), the label step; then
the model itself takes an Adam step (PyTorch defaults) on the inner loss. The model is reset (a new network and Adam)
by LD's moving-average rule (ddflow.ops.bilevel.ResetRule), which records each model's best step count.

Every 5th epoch (lines 388-404) a fresh model trains on the base examples with the current labels for the step count
of the reset statistics (the mean of the last three, ResetRule.num_steps) and is scored on the validation split; the
labels and step count of the lowest validation error so far (ties: the later) are the result, evaluated by
protocol `ld` (ddflow.protocols.bilevel). The validation split is ddflow's (workflow/hparams/stages/validation.yaml).

`variant: rr` is the ridge-regression variant (label_distillation_rr.py; ddflow.ops.ldrr): the same labels, base
examples, Adam label step with its projection (lines 599-605), reset rule (lines 632-680), validation every 5th epoch
(lines 396-410) and choice of the best labels; the model is a feature extractor with the global ridge-regression
classifier `w` and a calibration scale. Per target batch (lines 578-618): `w` moves towards the closed-form ridge
solution of the base minibatch (w <- 0.99 w + 0.01 w_local, the graph kept to the labels), the target batch's CE
under scale * w is back-propagated to the labels only (first order: no unrolled model step), the label step; then the
feature extractor and the scale take their Adam steps on the base minibatch's soft CE under scale * w against the
updated labels, through the solve as well. A reset draws a new network, scale (1) and both Adams and zeroes `w`
(lines 666-680). The validation and protocol models train the same way and score with the plain `w`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DdflowError
from ..nets.bilevel import build
from ..ops.bilevel import ResetRule, epoch_batch, ld_label_meta_loss, stats_gap
from ..ops.ldrr import VARIANTS, RRLearner, base_learner, embed, rr_logits
from .base import Method
from .dd import dd_net
from .registry import register

RR_KEYS = ("lr_calibration", "rr_alpha", "ridge_lambda")


@register("ld")
class LD(Method):
    protocols = ("ld",)
    learned_labels = True
    requires = ("validation",)
    inits = ("real",)
    state = ("labels", "opt_labels", "model", "opt_model", "learner", "perm", "rule", "best")

    @property
    def iterations(self) -> int:
        return int(self.hp["epochs"]) * math.ceil(len(self.data.y_train) / int(self.hp["batch"]))

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.variant = str(hp.get("variant", "or2"))
        if self.variant not in VARIANTS:
            raise DdflowError(f"ld: variant {self.variant!r}; allowed: {', '.join(VARIANTS)} (workflow/hparams/"
                              "methods/ld.yaml)")
        missing = [k for k in RR_KEYS if k not in hp] if self.variant == "rr" else []
        if missing:
            raise DdflowError(f"ld: variant rr needs {', '.join(missing)} (workflow/hparams/methods/ld.yaml)")
        if self.data.x_val is None:
            raise DdflowError("ld chooses its labels and step count on the validation split; none was given")
        if int(hp["epochs"]) < 5:
            raise DdflowError(f"ld: epochs {hp['epochs']} < 5: the first validation is after epoch 5 (lines 388-389)")
        self.net_name = dd_net(hp, info.channels)
        self.batch, self.inner_batch = int(hp["batch"]), int(hp["inner_batch_size"])
        self.per_epoch = math.ceil(len(self.data.y_train) / self.batch)
        idx = self.paired_real_indices(self.ipc)
        self.x_base = self.data.x_train[idx].detach().clone().to(self.device)
        self.base_classes = self.class_labels()
        self.labels = torch.full((len(idx), self.classes), 1.0 / self.classes, device=self.device,
                                 requires_grad=True)
        self.opt_labels = torch.optim.Adam([self.labels], lr=float(hp["lr_labels"]))
        self.model = self.opt_model = self.learner = None
        self.new_model()
        self.perm = torch.randperm(len(self.data.y_train), generator=self.generator)
        self.rule = ResetRule(stats_gap(self.classes, len(idx)))
        self.best = {"err": 100.0, "labels": None, "num_steps": None, "epoch": None}

    def fresh_net(self) -> torch.nn.Module:
        info = self.data.info
        return build(self.net_name, info.channels, self.classes, info.size, self.generator, "default",
                     device=self.device)

    def rr(self) -> dict[str, float]:
        return {k: float(self.hp[k]) for k in RR_KEYS} if self.variant == "rr" else {}

    def new_model(self) -> None:
        """A new network and its optimisers (or2: the network and Adam; rr: RRLearner, with `w` zeroed)."""
        net = self.fresh_net()
        if self.variant == "rr":
            self.learner = base_learner("rr", net, self.classes, float(self.hp["lr_model"]), self.rr())
        else:
            self.model, self.opt_model = net, torch.optim.Adam(net.parameters(), lr=float(self.hp["lr_model"]))

    def real_batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.perm, idx = epoch_batch(self.perm, it, self.per_epoch, self.batch, self.generator)
        return self.data.x_train[idx].to(self.device), self.data.y_train[idx].to(self.device)

    def label_step(self, outer: torch.Tensor) -> None:
        """Adam on the labels with only their gradient of the outer loss, then clamp to [0, 1] and renormalise each
        row (or2 lines 587-595; rr lines 599-605)."""
        self.opt_labels.zero_grad()
        (g_labels,) = torch.autograd.grad(outer, [self.labels], retain_graph=True)
        self.labels.grad = g_labels
        self.opt_labels.step()
        with torch.no_grad():
            self.labels.clamp_(0, 1)
            self.labels.div_(self.labels.sum(1, keepdim=True))

    def step_or2(self, pick: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = dict(self.model.named_parameters())
        outer, inner, logits = ld_label_meta_loss(self.model, params, self.x_base[pick], self.labels[pick], x_t, y_t,
                                                  float(self.hp["inner_lr"]))
        self.label_step(outer)
        # the model's own step on the inner loss (lines 597-600)
        self.opt_model.zero_grad()
        grads = torch.autograd.grad(inner, list(params.values()))
        for p, g in zip(params.values(), grads):
            p.grad = g
        self.opt_model.step()
        return outer, logits

    def step_rr(self, pick: torch.Tensor, x_t: torch.Tensor, y_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """label_distillation_rr.py train, lines 578-618."""
        learner: RRLearner = self.learner
        w = learner.solve(self.x_base[pick], self.labels[pick])
        logits = rr_logits(embed(learner.net, x_t), learner.scale * w)
        outer = F.cross_entropy(logits, y_t)
        self.label_step(outer)
        # the features' and the calibration's step; the targets are the labels after this step's update (line 611)
        learner.fit(self.x_base[pick], self.labels[pick], w)
        return outer, logits

    def step(self, it: int) -> dict[str, float]:
        x_t, y_t = self.real_batch(it)
        pick = torch.randperm(len(self.x_base), generator=self.generator)[:self.inner_batch].to(self.device)
        outer, logits = (self.step_rr if self.variant == "rr" else self.step_or2)(pick, x_t, y_t)
        err = 100.0 - 100.0 * float((logits.detach().argmax(1) == y_t).float().mean())
        if self.rule.update(err):
            self.new_model()
        out = {"loss": float(outer.detach()), "train_err": err, "resets": len(self.rule.reset_steps)}
        if (it + 1) % self.per_epoch == 0 and (it + 1) // self.per_epoch % 5 == 0:
            out.update(self.validate(epoch=(it + 1) // self.per_epoch - 1))
        return out

    def validate(self, epoch: int) -> dict[str, float]:
        """Every 5th epoch (line 389: epoch % 5 == 4): a fresh model trained on the base examples with the current
        labels for the reset rule's step count, its validation error; keep the best labels (val_err <= best)."""
        steps = self.rule.num_steps()
        fresh = base_learner(self.variant, self.fresh_net(), self.classes, float(self.hp["lr_model"]), self.rr())
        fresh.train(self.x_base, self.labels.detach(), steps, self.inner_batch, self.generator)
        err = 100.0 - fresh.accuracy(self.data.x_val, self.data.y_val, self.device)
        if err <= self.best["err"]:
            self.best = {"err": err, "labels": self.labels.detach().cpu().clone(), "num_steps": int(steps),
                         "epoch": epoch}
        return {"val_err": err, "val_steps": steps}

    def result(self) -> dict[str, Any]:
        if self.best["labels"] is None:
            raise DdflowError("ld: no validation has run yet (the first is after epoch 5), so there are no best labels")
        return {"images": self.x_base.cpu(), "labels": self.best["labels"],
                "ld": {"num_steps": self.best["num_steps"], "val_err": self.best["err"], "epoch": self.best["epoch"],
                       "inner_batch_size": self.inner_batch, "net": self.net_name, "variant": self.variant,
                       **({"rr": self.rr()} if self.variant == "rr" else {}),
                       "reset_steps": list(self.rule.reset_steps), "base_classes": self.base_classes.tolist()}}
