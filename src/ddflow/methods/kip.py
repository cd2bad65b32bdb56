"""KIP, Kernel Inducing Points (Nguyen, Chen & Lee, ICLR 2021; Nguyen, Novak, Xiao & Lee, NeurIPS 2021); official
google-research kip/KIP.ipynb (cell XHfPTAAmrBIR, "Run KIP"), JAX + neural-tangents.

Per step (KIP.ipynb `train` / `make_loss_acc_fn`):
1. a class-balanced target batch of `target_batch` real images drawn afresh (`class_balanced_sample`: the same
   number per class, without replacement within a class; the size must be a multiple of the class count);
2. the infinite-width kernel (ddflow.ops.infinite_kernels; `kernel`: 'fc' = FullyConnectedNetwork, 'conv' =
   nn_training.ipynb's ConvNet; NTK by default, `get='ntk'`) between support and support and between target and
   support, in float64 (KIP enables jax_enable_x64);
3. KRR: pred = K_ts (K_ss + |reg| trace(K_ss) / n I)^-1 y_s, loss 0.5 * mean((pred - y_t)^2) over batch and classes,
   with y = one_hot - 1/C (KIP.ipynb `one_hot(center=True)`); the support labels start there and are learned when
   `learn_labels` (lax.cond with stop_gradient otherwise);
4. one Adam step (jax example_libraries optimizers.adam: b1 0.9, b2 0.999, eps 1e-8) on the images (and labels).

The support starts as a class-balanced sample of real images (`class_balanced_sample(SUPPORT_SIZE)`). The space is the
dataset's normalisation (KIP.ipynb standardises each channel), or KIP's ZCA (prep 'kip', nn_training.ipynb
`zca_normalize`) when `zca`.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import DatasetInfo
from ..data.spaces import Prep
from ..errors import DdflowError
from ..ops.infinite_kernels import KernelNet, kernels
from ..ops.krr import centred_onehot, krr_lambda
from ..runtime import to_device
from .base import Method
from .registry import register


def kip_loss(k_ss: torch.Tensor, k_ts: torch.Tensor, y_s: torch.Tensor, y_t: torch.Tensor,
             reg: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """KIP.ipynb loss_acc_fn: (0.5 * mean((K_ts (K_ss + |reg| tr(K_ss)/n I)^-1 y_s - y_t)^2), accuracy)."""
    n = k_ss.shape[0]
    a = k_ss + krr_lambda(k_ss, reg) * torch.eye(n, dtype=k_ss.dtype, device=k_ss.device)
    pred = k_ts @ torch.linalg.solve(a, y_s.to(k_ss.dtype))   # assume_a='pos' in the notebook: same solution
    loss = 0.5 * (pred - y_t.to(pred.dtype)).square().mean()
    acc = (pred.argmax(1) == y_t.argmax(1)).float().mean()
    return loss, acc


def class_balanced_indices(per_class: list[torch.Tensor], size: int, generator: torch.Generator) -> torch.Tensor:
    """KIP.ipynb class_balanced_sample: size / C distinct indices of every class (an error unless C divides size)."""
    c = len(per_class)
    n, rem = divmod(int(size), c)
    if rem:
        raise DdflowError(f"KIP: the class count {c} must divide the target batch size {size}")
    small = [i for i, idx in enumerate(per_class) if len(idx) < n]
    if small:
        raise DdflowError(f"KIP: target batch {size} needs {n} images per class; class {small[0]} has "
                          f"{len(per_class[small[0]])}")
    return torch.cat([idx[torch.randperm(len(idx), generator=generator)[:n]] for idx in per_class])


@register("kip")
class KIP(Method):
    protocols = ("kip-nn", "krr-inf")
    learned_labels = True
    state = ("images", "labels", "opt")

    @classmethod
    def preprocessing(cls, hp: dict[str, Any], info: DatasetInfo) -> Prep:
        if hp.get("zca"):
            return Prep("kip", float(hp["zca_reg"]))
        return Prep("raw")

    def net(self) -> KernelNet:
        hp = self.hp
        return KernelNet(str(hp["kernel"]), int(hp["depth"]), float(hp["w_std"]), float(hp["b_std"]),
                         str(hp["parameterization"]), bool(hp.get("prepend_conv", True)), int(hp.get("width", 1024)))

    def init(self) -> None:
        hp = self.hp
        if hp.get("get", "ntk") not in ("ntk", "nngp"):
            raise DdflowError(f"kip: get = {hp.get('get')!r}; allowed: ntk, nngp")
        self.kernel_net = self.net()
        self.dtype = torch.float64 if hp.get("float64", True) else torch.float32
        idx = self.paired_real_indices(self.ipc)
        self.images = self.data.x_train[idx].detach().clone().to(self.device, self.dtype).requires_grad_(True)
        self.labels = centred_onehot(self.class_labels(), self.classes).to(self.device, self.dtype)
        self.labels.requires_grad_(bool(hp["learn_labels"]))
        params = [self.images] + ([self.labels] if self.labels.requires_grad else [])
        self.opt = torch.optim.Adam(params, lr=float(hp["lr"]), betas=(0.9, 0.999), eps=1e-8)
        class_balanced_indices(self.data.indices_per_class(), int(hp["target_batch"]), torch.Generator())

    def kernel(self, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return kernels(a, b, self.kernel_net, str(self.hp.get("get", "ntk")), int(self.hp.get("max_block", 2 ** 24)))

    def step(self, it: int) -> dict[str, float]:
        hp = self.hp
        idx = class_balanced_indices(self.data.indices_per_class(), int(hp["target_batch"]), self.generator)
        idx = to_device(idx, self.data.x_train.device)
        x_t = self.data.x_train[idx].to(self.device, self.dtype)
        y_t = centred_onehot(self.data.y_train[idx].to(self.device), self.classes).to(self.dtype)
        k_ss = self.kernel(self.images, None)
        k_ts = self.kernel(x_t, self.images)
        loss, acc = kip_loss(k_ss, k_ts, self.labels, y_t, float(hp["krr_reg"]))
        if not torch.isfinite(loss):
            raise DdflowError(f"kip: the loss became {float(loss)} at iteration {it} (lr {hp['lr']})")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "acc": acc.detach()}

    def result(self) -> dict[str, Any]:
        labels = self.labels.detach().float().cpu()
        return {"images": self.images.detach().float().cpu(),
                "labels": labels if self.hp["learn_labels"] else self.class_labels()}
