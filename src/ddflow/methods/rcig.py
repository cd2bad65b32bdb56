"""RCIG: dataset distillation with convexified implicit gradients (Loo, Hasani, Lechner & Rus, ICML 2023; official
yolky/RCIG, JAX/Flax/optax, commit a9fb1fa: distill_dataset.py, algorithms.py run_rcig / do_meta_train_step,
configs_final/*.txt). Math in ddflow.ops.rcig; facts and deviations in docs/methods.md and docs/deviations.md.

Before training (distill_dataset.py lines 215-248; here at the first step, so a resumed run does not redo it): the
inner learning rate starts at 1e-5 and grows x1.2 while one inner solve on pool model 0 decreases its loss at every
step, then x0.7; the Hessian-inverse learning rate (from 5e-5) the same way on one solve's residuals.

Per step (run_rcig lines 118-257):
1. a pool model m is drawn uniformly; its base parameters theta and its Adam moments are copied;
2. inner problem: the tangent delta (from 0) takes `inner_steps` Adam(inner_lr) steps on ops.rcig.inner_loss of the
   support (the coreset, plus its horizontal flips with use_flip). Official quirks kept (settings): the Adam bias
   correction counts from the pool model's step count (the optimiser state is the pool model's); theta keeps moving
   with the pool Adam's momentum on a zero gradient (`inner_base_drift`); the final-layer kernel tangent is outside
   both masked Adams and receives its raw gradient added (`final_kernel_tangent: passthrough`);
3. outer: the real batch's KRR prediction from the support at (theta, delta*), Platt cross-entropy with the learned
   temperature minus the label margin; g_t = its gradient in delta, the direct gradient in images, labels, log_temp;
4. h = H^-1 g_t by `hinv_steps` Adam(hvp_lr) steps; implicit gradient = -d/d(coreset) [h . grad_delta inner_loss];
   clipped per array to the direct gradient's norm; images, labels (AdaBelief, proto_lr) and log_temp (AdaBelief,
   0.03) step on direct + implicit; EMA 0.99 of images and labels (bias-corrected; the result is the EMA);
5. every `lr_monitor_interval` steps the inner lr x0.9 if >= 29 % of the inner solves diverged, else x1.05 if >= 70 %
   were monotone;
6. pool model m (the copy from before the inner solve) trains U{1..n_max_steps_pool-1} Adam(pool_lr) steps on MSE
   of its softplus network on the updated support, and is re-initialised once its step count reaches
   max_online_steps.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import DatasetInfo
from ..data.spaces import Prep
from ..errors import DdflowError
from ..nets import build_net
from ..ops import rcig as R
from ..ops.krr import centred_onehot, flip_support
from ..runtime import to_device
from .base import Method
from .frepo import flip_on, frepo_prep
from .registry import register

KERNEL_TANGENT = ("passthrough", "frozen")


@register("rcig")
class RCIG(Method):
    protocols = ("rcig",)
    learned_labels = True
    state = ("images", "labels", "log_temp", "opt", "ema_images", "ema_labels", "pool", "inner_lr", "hvp_lr",
             "inner_stats", "tuned", "done")

    @classmethod
    def preprocessing(cls, hp: dict[str, Any], info: DatasetInfo) -> Prep:
        """dataloader.py get_dataset: standardisation for MNIST-like data, FRePo's ZCA (reg 0.1) for colour data."""
        return frepo_prep(hp, info)

    # -- setup ------------------------------------------------------------------------------------------------
    def init(self) -> None:
        hp, info = self.hp, self.data.info
        if not hp.get("linearize", True):
            raise DdflowError("rcig: linearize false (the non-linearised inner problem) is not ported; allowed: true")
        if hp["final_kernel_tangent"] not in KERNEL_TANGENT:
            raise DdflowError(f"rcig: final_kernel_tangent {hp['final_kernel_tangent']!r} not in {KERNEL_TANGENT}")
        self.use_flip = flip_on(hp, info)
        self.beta = float(hp["softplus_temp"])
        idx = self.paired_real_indices(self.ipc)
        self.images = self.data.x_train[idx].detach().clone().to(self.device).requires_grad_(True)
        self.labels = centred_onehot(self.class_labels(), self.classes).to(self.device)  # init_proto, no scale_y
        self.labels.requires_grad_(True)  # not learned: a stop_gradient in support(), a zero gradient
        self.log_temp = R.log_temp_init().to(self.device).requires_grad_(True)
        self.opt = R.AdaBelief([{"params": [self.images, self.labels], "lr": float(hp["proto_lr"])},
                                {"params": [self.log_temp], "lr": float(hp["temp_lr"])}])
        self.ema_images, self.ema_labels = torch.zeros_like(self.images), torch.zeros_like(self.labels)
        self.done = 0
        # l2 = l2_rate * number of prototypes (distill_dataset.py line 187; flips not counted)
        self.l2 = float(hp["l2_rate"]) * len(self.images)
        self.pads = R.conv_params(self._net())[1]
        self.pool = [self._new_model() for _ in range(int(hp["pool"]))]
        self.inner_lr, self.hvp_lr = float(hp["inner_lr_init"]), float(hp["hvp_lr_init"])
        self.inner_stats: list[int] = []
        self.tuned = not hp.get("tune", True)

    def _net(self) -> torch.nn.Module:
        info, hp = self.data.info, self.hp
        return build_net("FRePoConv", info.channels, self.classes, info.size, self.generator, self.device,
                         width=int(hp["width"]), depth=hp.get("depth"), norm="none")

    def _new_model(self) -> dict[str, Any]:
        params = R.conv_params(self._net())[0]
        return {"params": params, "m": [torch.zeros_like(p) for p in params],
                "v": [torch.zeros_like(p) for p in params], "count": 0}

    # -- the pieces of one step -------------------------------------------------------------------------------
    def support(self, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The coreset and, with use_flip, its horizontal flips (ProtoHolder lines 887-895: labels not learned are a
        stop_gradient)."""
        learn = bool(self.hp["learn_labels"])
        x = self.images.detach() if detach else self.images
        y = self.labels if learn and not detach else self.labels.detach()
        return flip_support(x, y, self.use_flip)

    def inner_solve(self, model: dict[str, Any], lr: float) -> tuple[list, list, list[float]]:
        """Steps 2 of the module docstring; returns theta after the drift, delta*, the losses before each step."""
        hp = self.hp
        theta = [p.clone() for p in model["params"]]
        m_b, v_b = [t.clone() for t in model["m"]], [t.clone() for t in model["v"]]
        delta = [torch.zeros_like(p) for p in theta]
        m_d, v_d = [torch.zeros_like(p) for p in theta], [torch.zeros_like(p) for p in theta]
        x_s, y_s = self.support(detach=True)
        losses = []
        for k in range(int(hp["inner_steps"])):
            count = model["count"] + k + 1
            d = [t.requires_grad_(True) for t in delta]
            loss = R.inner_loss(d, theta, x_s, y_s, self.l2, self.pads, self.beta)
            grads = list(torch.autograd.grad(loss, d))
            losses.append(float(loss.detach()))
            delta = [t.detach() for t in d]
            body = slice(0, len(delta) - 2)
            new, m_new, v_new = R.adam_step(delta[body], grads[body], m_d[body], v_d[body], count, lr)
            dense_b, m_bias, v_bias = R.adam_step(delta[-1:], grads[-1:], m_d[-1:], v_d[-1:], count, lr)
            kernel = delta[-2] + grads[-2] if hp["final_kernel_tangent"] == "passthrough" else delta[-2]
            delta = new + [kernel] + dense_b
            m_d, v_d = m_new + [m_d[-2]] + m_bias, v_new + [v_d[-2]] + v_bias
            if hp["inner_base_drift"]:
                theta, m_b, v_b = R.adam_step(theta, [torch.zeros_like(p) for p in theta], m_b, v_b, count,
                                              float(hp["pool_lr"]))
        return theta, delta, losses

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.data.y_train)
        idx = torch.randperm(n, generator=self.generator)[:int(self.hp["batch_real"])]
        idx = to_device(idx, self.data.x_train.device)
        return self.data.x_train[idx].to(self.device), centred_onehot(self.data.y_train[idx].to(self.device),
                                                                       self.classes)

    def outer_loss(self, preds: torch.Tensor, y_t: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        """RCIG's outer loss on the real batch's KRR prediction (rcig-isa replaces it)."""
        return R.platt_loss(preds, y_t, self.log_temp)

    def meta_gradient(self, theta, delta, x_t, y_t,
                      residuals_only: bool = False) -> tuple[dict[str, torch.Tensor], list[float], float]:
        """Steps 3-4: direct + clipped implicit gradient of images, labels, log_temp; the residuals; the loss.
        `residuals_only` (the lr search) stops after the Hessian-inverse solve."""
        d = [t.detach().requires_grad_(True) for t in delta]
        x_s, y_s = self.support()
        preds, feat_t = R.krr_predict(d, theta, x_s, y_s, x_t, self.l2, self.pads, self.beta)
        loss = self.outer_loss(preds, y_t, feat_t) - R.label_margin(y_s)
        R.finite_or_raise(loss, "the outer loss")
        coreset = [self.images, self.labels, self.log_temp]
        grads = torch.autograd.grad(loss, d + coreset, allow_unused=True)
        g_t = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads[:len(d)], d)]
        direct = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads[len(d):], coreset)]
        hp = self.hp
        h, residuals = R.h_inv_vp(d, theta, x_s.detach(), y_s.detach(), self.l2, self.pads, self.beta, g_t,
                                  int(hp["hinv_steps"]), self.hvp_lr)
        if residuals_only:
            return {}, residuals, float(loss.detach())
        d2 = [t.detach().requires_grad_(True) for t in delta]
        x_s, y_s = self.support()
        g_s = torch.autograd.grad(R.inner_loss(d2, theta, x_s, y_s, self.l2, self.pads, self.beta), d2,
                                  create_graph=True)
        implicit = torch.autograd.grad(-R.dot(g_s, h), coreset[:2], allow_unused=True)
        implicit = [g if g is not None else torch.zeros_like(t) for g, t in zip(implicit, coreset[:2])]
        implicit.append(torch.zeros_like(self.log_temp))
        out = {}
        for name, dg, ig in zip(("images", "labels", "log_temp"), direct, implicit):
            out[name] = dg + (R.clip_to(ig, dg) if hp["clip"] else ig)
        return out, residuals, float(loss.detach())

    def train_pool_model(self, model: dict[str, Any], steps: int) -> None:
        """Step 6: Adam(pool_lr) on sum 0.5 (f(x) - y)^2 / (N C) of the (softplus) network on the support."""
        x_s, y_s = self.support(detach=True)
        for _ in range(steps):
            p = [t.detach().requires_grad_(True) for t in model["params"]]
            out, _ = R.forward(p, x_s, self.pads, self.beta)
            loss = 0.5 * ((out - y_s) ** 2).sum() / y_s.numel()
            grads = torch.autograd.grad(loss, p)
            model["count"] += 1
            model["params"], model["m"], model["v"] = R.adam_step([t.detach() for t in p], list(grads), model["m"],
                                                                  model["v"], model["count"],
                                                                  float(self.hp["pool_lr"]))

    # -- learning-rate search ---------------------------------------------------------------------------------
    def tune(self) -> None:
        """distill_dataset.py lines 225-240 on pool model 0 (the official tuning pool is one model from the same
        key as the training pool's first)."""
        hp = self.hp
        grow, back, cap = float(hp["tune_grow"]), float(hp["tune_back"]), int(hp["tune_max_tries"])
        model = self.pool[0]
        for tries in range(cap + 1):
            if tries == cap:
                raise DdflowError(f"rcig: the inner lr search did not stop after {cap} tries (tune_max_tries)")
            if R.lr_stat(self.inner_solve(model, self.inner_lr)[2]) != 1:
                break
            self.inner_lr *= grow
        self.inner_lr *= grow * back   # the official loop grows once more after the failing try, then x0.7
        for tries in range(cap + 1):
            if tries == cap:
                raise DdflowError(f"rcig: the Hessian-inverse lr search did not stop after {cap} tries")
            theta, delta, _ = self.inner_solve(model, self.inner_lr)
            x_t, y_t = self.real_batch()
            if R.lr_stat(self.meta_gradient(theta, delta, x_t, y_t, residuals_only=True)[1]) != 1:
                break
            self.hvp_lr *= grow
        self.hvp_lr *= grow * back
        self.tuned = True

    # -- one step ---------------------------------------------------------------------------------------------
    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        if not self.tuned:
            self.tune()
        m = int(torch.randint(len(self.pool), (1,), generator=self.generator))
        model = self.pool[m]
        theta, delta, losses = self.inner_solve(model, self.inner_lr)
        self.inner_stats.append(R.lr_stat(losses))
        x_t, y_t = self.real_batch()
        grads, residuals, loss = self.meta_gradient(theta, delta, x_t, y_t)
        for name in ("images", "labels", "log_temp"):
            t = getattr(self, name)
            t.grad = grads[name]
        self.opt.step()
        self.done += 1
        with torch.no_grad():
            decay = float(hp["ema_decay"])
            self.ema_images, avg_x = R.ema_update(self.ema_images, self.images.detach(), self.done, decay)
            self.ema_labels, avg_y = R.ema_update(self.ema_labels, self.labels.detach(), self.done, decay)
        self._adapt_inner_lr(it)
        self.train_pool_model(model, R.pool_count(self.generator, int(hp["n_max_steps_pool"])))
        if model["count"] >= int(hp["max_online_steps"]):
            self.pool[m] = self._new_model()
        return {"loss": loss, "inner_lr": self.inner_lr, "hvp_lr": self.hvp_lr}

    def _adapt_inner_lr(self, it: int) -> None:
        """run_rcig lines 175-186: at it % interval == 0 (it > 0), x0.9 if >= 29 % failed, else x1.05 if >= 70 %
        monotone; the statistics restart."""
        every = int(self.hp["lr_monitor_interval"])
        if it % every or it == 0:
            return
        n = len(self.inner_stats)
        if sum(s == -1 for s in self.inner_stats) / n >= float(self.hp["lr_fail_frac"]):
            self.inner_lr *= float(self.hp["lr_down"])
        elif sum(s == 1 for s in self.inner_stats) / n >= float(self.hp["lr_mono_frac"]):
            self.inner_lr *= float(self.hp["lr_up"])
        self.inner_stats = []

    def result(self) -> dict[str, Any]:
        """The EMA of the coreset (distill_dataset.py line 268; eval.py line 155 evaluates ema_average)."""
        decay = float(self.hp["ema_decay"])
        if self.done == 0:
            images, labels = self.images.detach(), self.labels.detach()
        else:
            images = self.ema_images / (1 - decay ** self.done)
            labels = self.ema_labels / (1 - decay ** self.done)
        return {"images": images.cpu(), "labels": labels.cpu(), "use_flip": self.use_flip,
                "inner_lr": self.inner_lr, "hvp_lr": self.hvp_lr, "temperature": float(self.log_temp.detach().exp())}
