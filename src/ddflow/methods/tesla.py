"""TESLA: trajectory matching with soft label assignment (Cui et al., ICML 2023, "Scaling up dataset distillation to
ImageNet-1K with constant memory"; official justincui03/tesla distill.py).

MTT's objective, windows, student batches, DSA and optimisers (ddflow.methods.mtt), with two changes:
- the meta-gradient is computed in constant memory with respect to syn_steps (ddflow.ops.unrolled_student.
  constant_memory_grads): a forward pass keeps only the student parameters of each step, a backward sweep rebuilds
  one step's graph at a time and accumulates the image and lr gradients. Each step's DSA draw is sampled once and
  re-applied in the sweep (the official code keeps every augmented batch with its graph instead, lines 384-390).
  `meta_gradient` picks the image gradient (the lr gradient is the same for `official` and `first_order`):
  - `official`: what the official code computes (lines 404-429): every step's image gradient taken with the final
    residual, no Hessian-vector products through the later steps, and WITHOUT the factor 2 that line 418 writes:
    `2 * torch.autograd.grad(...)` multiplies the returned tuple (it repeats it), and line 420 adds its first
    element, the plain gradient. So the image gradient is half the gradient of the first-order surrogate; this is
    what produced the paper's numbers (the images' SGD is linear in the gradient: the same as halving lr_img).
  - `first_order`: the same surrogate with the factor 2 applied (the gradient line 418 writes down).
  - `exact`: the residual propagated back through every step (Hessian-vector products); equals MTT's gradient of
    the unrolled graph to float rounding.
- `teacher_label` (official --teacher_label, lines 342-362): every iteration, the synthetic labels are the softmax of
  the window's target expert theta* on the current synthetic images (not augmented, no gradient); the student trains
  on them with cross-entropy on probabilities, and the last iteration's labels are the result's soft labels
  (evaluated by the `mtt` protocol with its soft-target cross-entropy, as the official evaluate_synset does).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import DdflowError
from ..ops.unrolled_student import constant_memory_grads
from .mtt import MTT
from .registry import register

GRADIENTS = ("official", "first_order", "exact")
#: image-gradient factor per meta_gradient: the official code drops the 2 of distill.py line 418 (see above)
IMAGE_FACTOR = {"official": 0.5, "first_order": 1.0, "exact": 1.0}


@register("tesla")
class TESLA(MTT):
    learned_labels = True   # the experts' soft labels (teacher_label)
    state = MTT.state + ("labels",)

    @classmethod
    def check_hparams(cls, hp: dict[str, Any], where: str, snapshots: bool = True) -> None:
        super().check_hparams(hp, where, snapshots)
        if hp["meta_gradient"] not in GRADIENTS:
            raise DdflowError(f"{where}: tesla meta_gradient {hp['meta_gradient']!r} not in {GRADIENTS}")

    def init(self) -> None:
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
        self.images.grad = IMAGE_FACTOR[self.hp["meta_gradient"]] * image_grad
        self.syn_lr.grad = lr_grad.reshape(self.syn_lr.shape)
        return loss

    def result(self) -> dict:
        out = super().result()
        if self.hp["teacher_label"]:
            out["labels"] = self.labels.detach().cpu()
        return out
