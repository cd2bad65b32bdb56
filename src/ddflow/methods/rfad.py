"""RFAD (Loo, Hasani, Amini & Rus, NeurIPS 2022; yolky/RFAD distillation.py distill_dataset, run_distillation.py).

Parameters (distillation.py lines 32-47): the support images X (initialised from IPC random real images per class,
coresets.make_coreset 'random'), a "transform matrix" T (d x d, initialised to the identity) through which the
images pass (X @ T on the flattened images, data.transform_data), the labels Y = one_hot - 1/C (learned with
`learn_labels`), and, with the Platt loss, the log-temperature k = 0. AdaBelief (eps 1e-16, ops.adabelief): X (and Y)
at `lr`, T at `transform_lr`, k at `temp_lr` (lines 59-72).

Per step (lines 161-238):
1. `n_models` fresh random ConvNet_wide networks (Gaussian init, ddflow.nets.rfad), new every iteration
   (run_distillation.py line 141: schedule [(0, n_models, 1)]);
2. random features of the support X @ T (with gradient) and, without gradient, of `n_batches` real batches of
   `batch_real` images (each drawn without replacement) with targets one_hot - 1/C;
3. KRR with RFAD's kernel 2 phi phi^T + 0.01 and regulariser jit * trace / n, solved in float64 (ddflow.ops.rfad);
4. loss: Platt cross-entropy CE(exp(k) preds, class) (`platt`) or 0.5 * mean squared error; one AdaBelief step.

Early stopping (lines 77-147): every `valid_every` iterations, before that iteration's step, the current set is
scored by KRR on the features of `valid_models` random networks drawn once (fixed seeds) on the validation split
(requires 'validation'; the official code samples 500 per class from the training split, ddflow carves its
validation split out and distils from the rest); the loss (Platt with the current k, or MSE) chooses the best set;
once `patience` iterations pass without a better one, the run stops (the runner ends the loop: `stopped`) and the
result is the best set: its images X_best @ T_best, labels and k (best.npz). A run that reaches `iterations` first
(the official code then saves no best.npz) validates its final set too and returns the best.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import DatasetInfo
from ..data.spaces import Prep
from ..errors import DdflowError
from ..nets.rfad import build_rfad_net
from ..ops.adabelief import AdaBelief
from ..ops.krr import centred_onehot
from ..ops.rfad import platt_loss, random_features, rfad_mse, rfad_predict
from ..runtime import to_device
from .base import Method
from .registry import register


@register("rfad")
class RFAD(Method):
    protocols = ("rfad-nn",)
    learned_labels = True
    requires = ("validation",)
    state = ("images", "transform", "labels", "log_temp", "opt", "best", "best_iter", "best_loss", "stopped",
             "last_valid")

    @classmethod
    def preprocessing(cls, hp: dict[str, Any], info: DatasetInfo) -> Prep:
        """RFAD's ZCA (ZCA kind 'rfad', reg_coef 0.1 relative) on colour data when hp['zca'] (run_distillation.py
        lines 55-84); MNIST-like data stay normalised (lines 45-54)."""
        if hp.get("zca") and info.channels == 3:
            return Prep("rfad", float(hp["zca_reg"]))
        return Prep("raw")

    # -- setup ------------------------------------------------------------------------------------------------
    def init(self) -> None:
        hp, info = self.hp, self.data.info
        if self.data.x_val is None:
            raise DdflowError("rfad: the validation split is missing (requires 'validation')")
        x0 = self.initial_images()
        self.images = x0.detach().clone().requires_grad_(True)
        d = info.channels * info.size * info.size
        self.transform = torch.eye(d, device=self.device).requires_grad_(True)
        self.labels = centred_onehot(self.class_labels(), self.classes).to(self.device)
        self.labels.requires_grad_(bool(hp["learn_labels"]))
        self.log_temp = torch.zeros((), dtype=torch.float64, device=self.device).requires_grad_(bool(hp["platt"]))
        groups = [{"params": [self.images] + ([self.labels] if hp["learn_labels"] else [])},
                  {"params": [self.transform], "lr": float(hp["transform_lr"])}]
        if hp["platt"]:
            groups.append({"params": [self.log_temp], "lr": float(hp["temp_lr"])})
        self.opt = AdaBelief(groups, lr=float(hp["lr"]), eps=float(hp["adabelief_eps"]))
        # the validation networks: drawn once from a seed of their own (official: fixed seeds, line 77)
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        g = torch.Generator().manual_seed(seed)
        self.valid_nets = [self._net(g) for _ in range(int(hp["valid_models"]))]
        self.valid_phi = self._features_no_grad(self.valid_nets, self.data.x_val)
        self.y_val = to_device(self.data.y_val, self.device).long()
        self.best: dict[str, torch.Tensor] = {}
        self.best_iter, self.best_loss, self.stopped, self.last_valid = -1, float("inf"), False, {}

    def _net(self, generator: torch.Generator) -> torch.nn.Module:
        info = self.data.info
        return build_rfad_net(info.channels, None, info.size, int(self.hp["width"]), int(self.hp["depth"]),
                              generator, self.device).eval()

    @torch.no_grad()
    def _features_no_grad(self, nets, x, chunk: int = 500) -> torch.Tensor:
        out = [random_features(nets, x[i:i + chunk].to(self.device)) for i in range(0, len(x), chunk)]
        return torch.cat(out)

    def support(self) -> torch.Tensor:
        """X @ T on the flattened images (data.transform_data)."""
        return (self.images.flatten(1) @ self.transform).view_as(self.images)

    def kernel_loss(self, phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor) -> torch.Tensor:
        pred = rfad_predict(phi_t, phi_s, self.labels, float(self.hp["jit"]))
        if self.hp["platt"]:
            return platt_loss(pred, y_t.argmax(1), self.log_temp)
        return rfad_mse(pred, y_t.double())

    # -- early stopping ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, it: int) -> None:
        phi_s = self._features_no_grad(self.valid_nets, self.support())
        pred = rfad_predict(self.valid_phi, phi_s, self.labels, float(self.hp["jit"]))
        if self.hp["platt"]:
            loss = float(platt_loss(pred, self.y_val, self.log_temp))
        else:
            loss = float(rfad_mse(pred, centred_onehot(self.y_val, self.classes).double()))
        acc = float((pred.argmax(1) == self.y_val).double().mean())
        self.record_validation(it, loss, acc)

    def record_validation(self, it: int, loss: float, acc: float) -> None:
        """Keep the set if its validation loss is the best so far; stop once `patience` iterations pass without a
        better one (distillation.py lines 130-147)."""
        self.last_valid = {"valid_loss": loss, "valid_acc": acc}
        if loss < self.best_loss:
            self.best = {"images": self.images.detach().clone(), "transform": self.transform.detach().clone(),
                         "labels": self.labels.detach().clone(), "log_temp": self.log_temp.detach().clone()}
            self.best_iter, self.best_loss = it, loss
        patience = int(self.hp["patience"])
        if it > self.best_iter + patience and it > patience:   # distillation.py line 139 (schedule[-1][0] = 0)
            self.stopped = True

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        if self.stopped:
            return {}
        if it % int(hp["valid_every"]) == 0:
            self.validate(it)
            if self.stopped:
                return dict(self.last_valid)
        nets = [self._net(self.generator) for _ in range(int(hp["n_models"]))]
        phi_s = random_features(nets, self.support())
        n_train, bs = len(self.data.y_train), int(hp["batch_real"])
        idx = torch.cat([torch.randperm(n_train, generator=self.generator)[:bs] for _ in range(int(hp["n_batches"]))])
        idx = to_device(idx, self.data.x_train.device)
        with torch.no_grad():
            phi_t = self._features_no_grad(nets, self.data.x_train[idx], chunk=bs)
        y_t = centred_onehot(to_device(self.data.y_train[idx], self.device).long(), self.classes)
        loss = self.kernel_loss(phi_t, y_t, phi_s)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if it == self.iterations - 1:   # the run ends by its iteration cap: the final set is a candidate too
            self.validate(it + 1)
        return {"loss": loss.detach(), **self.last_valid}

    # -- result -----------------------------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        best = self.best or {"images": self.images.detach(), "transform": self.transform.detach(),
                             "labels": self.labels.detach(), "log_temp": self.log_temp.detach()}
        images = (best["images"].flatten(1) @ best["transform"]).view_as(best["images"]).cpu()
        labels = best["labels"].cpu() if self.hp["learn_labels"] else self.class_labels()
        return {"images": images, "labels": labels, "rfad_log_temp": float(best["log_temp"]),
                "rfad_jit": float(self.hp["jit"]), "best_iter": int(self.best_iter),
                "valid_loss": float(self.best_loss), "stopped": bool(self.stopped)}
