"""FRePo (Zhou et al., NeurIPS 2022; yongchao97/FRePo) and ISA ("crucial samples" + infinite semantic
augmentation; fiona-lxd/ISA), one class with options.

Per step (frepo.py proto_train_and_evaluate / proto_train_step):
1. the current pool model (BatchNorm Conv, eval mode = running statistics) gives features of a real batch (no
   gradient) and of the support = the synthetic images (plus their horizontal flips where FRePo uses them);
2. KRR of the real batch from the support with the learned labels, lambda = 1e-6 trace(K_ss)/n; the loss is FRePo's
   0.5 * squared error summed over classes (or ISA's loss, below), plus the label-margin regulariser;
3. LAMB (lr 3e-4, cosine to 0.1 of it over the run) updates images and labels;
4. the current model trains one step on a random batch of at most `online_batch` prototypes (Adam 3e-4, MSE on the
   learned labels, no augmentation), or, once its step count exceeds `max_online_updates`, is re-initialised
   (steps 0, a fresh Adam); model i of the pool starts at step (max_online_updates // pool) * i;
5. the next current model is drawn uniformly from the pool.

ISA (isa.py) replaces the kernel loss: keep the `keep` fraction (topk = 1 - p) of the real batch with the largest
per-sample KRR error, and for each kept sample i and its most cosine-similar other kept sample j the closed-form
mean of the squared residual along phi_i + l (phi_i - phi_j), l in [0, eps] (ddflow.ops.krr.isa_loss), averaged over
classes (`reduce: mean`; FRePo's is `half_sum`). keep 1, eps 0, reduce half_sum is FRePo exactly.

The Fig. 5 variants of the ISA paper (declared in hparams methods/frepo.yaml `variants`) are method ids here with
fixed options: frepo-drop-hard{10,20,30} discard the hardest 10/20/30 % of every real batch (keep the easiest),
frepo-drop-easy{10,20,30} the easiest; no ISA loss.

Colour datasets are distilled in FRePo's ZCA space (prep 'frepo', regulariser 0.1 relative to the trace, after
per-channel standardisation); MNIST-like data in the normalised space (FRePo uses no ZCA there).
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import DatasetInfo
from ..data.spaces import Prep
from ..errors import DdflowError
from ..hparams import PACKAGED, hparams_file, variants
from ..nets import build_net
from ..ops.krr import centred_onehot, flip_support, frepo_kernel_loss, init_learned_labels, isa_loss
from ..ops.losses import margin_loss, mse_half_sum
from ..ops.optim import LAMB, cosine_lr
from ..runtime import to_device
from .base import Method
from .registry import register


def frepo_prep(hp: dict[str, Any], info: DatasetInfo) -> Prep:
    """FRePo's ZCA (prep 'frepo') on colour data when hp['zca']; MNIST-like data stay normalised (FRePo's and RCIG's
    get_dataset)."""
    if hp.get("zca") and info.channels == 3:
        return Prep("frepo", float(hp["zca_reg"]), hp.get("zca_block"))
    return Prep("raw")


def flip_on(hp: dict[str, Any], info: DatasetInfo) -> bool:
    """Whether the support adds horizontal flips: hp['use_flip'], or 'auto' = on colour data."""
    return bool(hp["use_flip"]) if hp.get("use_flip") not in (None, "auto") else info.channels == 3


class FRePoFamily(Method):
    protocols = ("frepo", "krr")
    learned_labels = True
    state = ("images", "labels", "opt", "current", "net_steps", "nets", "net_opts")
    #: fixed options of the method id (ISA's keep/eps/reduce); the hparams may not change them for a variant
    fixed: dict[str, Any] = {}

    def option(self, key: str) -> Any:
        return self.fixed.get(key, self.hp.get(key))

    # -- setup ------------------------------------------------------------------------------------------------
    @classmethod
    def preprocessing(cls, hp: dict[str, Any], info: DatasetInfo) -> Prep:
        return frepo_prep(hp, info)

    def init(self) -> None:
        hp, info = self.hp, self.data.info
        self.use_flip = flip_on(hp, info)
        idx = self.paired_real_indices(self.ipc)
        self.images = self.data.x_train[idx].detach().clone().to(self.device).requires_grad_(True)
        self.labels = init_learned_labels(self.class_labels(), self.classes).to(self.device)
        self.labels.requires_grad_(bool(hp.get("learn_label", True)))
        params = [self.images] + ([self.labels] if self.labels.requires_grad else [])
        self.opt = LAMB(params, lr=float(hp["lr"]))
        self.pool_size = int(hp["pool"])
        self.nets, self.net_opts, self.net_steps = [], [], []
        for i in range(self.pool_size):
            self._new_model(i, start_step=(int(hp["max_online_updates"]) // self.pool_size) * i)
        self.current = int(torch.randint(self.pool_size, (1,), generator=self.generator))

    def _build(self) -> torch.nn.Module:
        info, hp = self.data.info, self.hp
        return build_net("FRePoConv", info.channels, self.classes, info.size, self.generator, self.device,
                         width=int(hp["width"]), depth=hp.get("depth"), norm=hp["norm"])

    def _new_model(self, i: int, start_step: int = 0) -> None:
        net = self._build()
        opt = torch.optim.Adam(net.parameters(), lr=float(self.hp["online_lr"]))
        if i < len(self.nets):
            self.nets[i], self.net_opts[i], self.net_steps[i] = net, opt, start_step
        else:
            self.nets.append(net), self.net_opts.append(opt), self.net_steps.append(start_step)

    # -- one step ---------------------------------------------------------------------------------------------
    def kernel_loss(self, phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor,
                    y_s: torch.Tensor) -> torch.Tensor:
        """ISA's loss with this method id's options (FRePo overrides it with its own kernel loss)."""
        keep, eps, reduce = float(self.option("keep")), float(self.option("eps")), self.option("reduce")
        return isa_loss(phi_t, y_t, phi_s, y_s, keep, eps, reduce, float(self.hp["krr_reg"]))

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        for g in self.opt.param_groups:
            g["lr"] = cosine_lr(float(hp["lr"]), it, self.iterations, float(hp["lr_alpha"]))
        net = self.nets[self.current]
        net.eval()  # features with the running statistics (FRePo nn_feat_fn: train=False)
        n_train = len(self.data.y_train)
        real = torch.randperm(n_train, generator=self.generator)[:int(hp["batch_real"])]
        real = to_device(real, self.data.x_train.device)
        with torch.no_grad():
            phi_t = net.embed(self.data.x_train[real].to(self.device))
        y_t = centred_onehot(self.data.y_train[real].to(self.device), self.classes)
        x_s, y_s = flip_support(self.images, self.labels, self.use_flip)
        phi_s = net.embed(x_s)
        kloss = self.kernel_loss(phi_t, y_t, phi_s, y_s)
        mloss = margin_loss(self.labels)
        loss = kloss + mloss
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self._update_pool()
        return {"loss": loss.detach(), "kernel": kloss.detach()}

    def _update_pool(self) -> None:
        i = self.current
        if self.net_steps[i] > int(self.hp["max_online_updates"]):
            self._new_model(i)
        else:
            net, opt = self.nets[i], self.net_opts[i]
            n, bs = len(self.images), int(self.hp["online_batch"])
            pick = torch.randperm(n, generator=self.generator)[:bs] if n > bs else torch.arange(n)
            x, y = self.images.detach()[pick.to(self.device)], self.labels.detach()[pick.to(self.device)]
            net.train()
            loss = mse_half_sum(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.net_steps[i] += 1
        self.current = int(torch.randint(self.pool_size, (1,), generator=self.generator))

    # -- state and result -------------------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        return {"images": self.images.detach().cpu(), "labels": self.labels.detach().cpu(), "use_flip": self.use_flip}


@register("frepo")
class FRePo(FRePoFamily):
    fixed = {"keep": 1.0, "eps": 0.0, "reduce": "half_sum"}

    def kernel_loss(self, phi_t, y_t, phi_s, y_s):
        return frepo_kernel_loss(phi_t, y_t, phi_s, y_s, float(self.hp["krr_reg"]))


@register("isa")
class ISA(FRePoFamily):
    """keep / eps / reduce from the hparams (isa.yaml)."""
    paired_with = "frepo"


def _drop_variant(method_id: str, which: str, percent: int) -> type[FRePoFamily]:
    if which not in ("hard", "easy") or not isinstance(percent, int) or not 0 < percent < 100:
        raise DdflowError(f"{hparams_file('frepo', PACKAGED)}: variants.{method_id} = {{drop: {which!r}, percent: "
                          f"{percent!r}}}; drop is hard or easy, percent a whole number in [1, 99]")
    keep = (1 - percent / 100) * (-1 if which == "hard" else 1)  # negative = keep the easiest (drop the hardest)

    class Drop(FRePoFamily):
        __doc__ = f"FRePo discarding the {which}est {percent} % of every real batch (ISA Fig. 5)."
        paired_with = "frepo"
        fixed = {"keep": keep, "eps": 0.0, "reduce": "half_sum"}

    Drop.__name__ = Drop.__qualname__ = f"FRePoDrop{which.title()}{percent}"
    return register(method_id)(Drop)


# ISA Fig. 5's variants, declared once beside their family: workflow/hparams/methods/frepo.yaml `variants`
for _vid, _v in variants("frepo", PACKAGED).items():
    _drop_variant(_vid, _v.get("drop"), _v.get("percent"))
