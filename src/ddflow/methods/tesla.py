"""TESLA: trajectory matching with soft label assignment (Cui et al., ICML 2023, "Scaling up dataset distillation to
ImageNet-1K with constant memory"; official justincui03/tesla distill.py).

MTT's objective, windows, student batches, DSA and optimisers (ddflow.methods.mtt), with two changes:
- the meta-gradient is computed in constant memory with respect to syn_steps (ddflow.ops.trajectory.
  constant_memory_grads): a forward pass keeps only the student parameters of each step, a backward sweep rebuilds
  one step's graph at a time and accumulates the image and lr gradients. Each step's DSA draw is sampled once and
  re-applied in the sweep (the official code keeps every augmented batch with its graph instead, lines 384-390).
  `meta_gradient: official` is the official computation (lines 404-429: every step's image gradient taken with the
  final residual, no Hessian-vector products through the later steps); `exact` propagates the residual back through
  every step (Hessian-vector products) and equals MTT's gradient of the unrolled graph to float rounding.
- `teacher_label` (official --teacher_label, lines 342-362): every iteration, the synthetic labels are the softmax of
  the window's target expert theta* on the current synthetic images (not augmented, no gradient); the student trains
  on them with cross-entropy on probabilities, and the last iteration's labels are the result's soft labels
  (evaluated by the `mtt` protocol with its soft-target cross-entropy, as the official evaluate_synset does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import DdflowError
from ..ops.trajectory import constant_memory_grads
from .mtt import MTT
from .registry import register

GRADIENTS = ("official", "exact")


@register("tesla")
class TESLA(MTT):
    state = MTT.state + ("labels",)

    def init(self) -> None:
        if self.hp["meta_gradient"] not in GRADIENTS:
            raise DdflowError(f"tesla: meta_gradient {self.hp['meta_gradient']!r} not in {GRADIENTS}")
        super().init()
        if self.hp["teacher_label"]:
            self.labels = F.one_hot(self.labels, self.classes).float()  # replaced by the experts' at every step

    def meta_gradient(self, start: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                      batches: list[torch.Tensor]) -> torch.Tensor:
        if self.hp["teacher_label"]:
            with torch.no_grad():  # official lines 348-359: the target parameters label the current images
                logits = functional_call(self.net, target, (self.images.detach(),))
                self.labels = torch.softmax(logits, -1)
        augment = None
        if self.dsa is not None:  # one draw per step, sampled in MTT's order, applied again in the backward sweep
            draws = [self.dsa.sample(len(b), self.generator) for b in batches]

            def augment(x: torch.Tensor, i: int) -> torch.Tensor:
                return self.dsa.apply(x, draws[i])
        loss, image_grad, lr_grad = constant_memory_grads(
            self.net, start, target, self.images, self.labels, self.syn_lr, batches, augment, self.step_loss,
            exact=self.hp["meta_gradient"] == "exact")
        self.images.grad = image_grad
        self.syn_lr.grad = lr_grad.reshape(self.syn_lr.shape)
        return loss

    def result(self) -> dict:
        out = super().result()
        if self.hp["teacher_label"]:
            out["labels"] = self.labels.detach().cpu()
        return out
