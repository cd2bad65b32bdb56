"""LD's ridge-regression variant (ondrejbohdal/label-distillation label_distillation_rr.py, `variant: rr`): the
blocks the distillation, its validation and protocol `ld` share.

The network is a feature extractor (LeNet / AlexCifarNet without their last Linear: 84 / 192 features, the official
model_architectures.py LeNet lines 381-411 and AlexCifarNet lines 414-442) followed by a global linear classifier
`w` of (features + 1) x classes, its last row the bias (`x @ w[:-1] + w[-1]`, lines 407-410). `w` is not trained by
gradients: every step it moves towards the ridge-regression solution of the current base minibatch,
w <- (1 - alpha) w + alpha w_local (the pseudo-gradient, alpha 0.01; lines 586-591), solved in closed form in its
kernel (dual) form on the features with a ones column appended, the bias regularised too (get_local_weights, lines
1020-1049, lambda 1.0). A learned scalar calibration (AdjustLayer, model_architectures.py lines 368-375, init 1,
Adam lr 0.01; label_distillation_rr.py lines 310-317) multiplies `w` whenever the network trains through it; the
plain `w` scores validation and test images (lines 768, 862).
"""
from __future__ import annotations

import torch
from torch import nn

from .bilevel import accuracy, base_steps, train_on_base
from .losses import soft_ce

VARIANTS = ("or2", "rr")


def with_bias(features: torch.Tensor) -> torch.Tensor:
    """The features with a column of ones appended (lines 586-587)."""
    return torch.cat([features, torch.ones(len(features), 1, dtype=features.dtype, device=features.device)], 1)


def ridge_weights(features: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """The ridge-regression weights of one minibatch (get_local_weights, lines 1020-1049): with Phi the features with
    a ones column, W = Phi^T (Phi Phi^T + lam I)^-1 Y, i.e. argmin_W ||Phi W - Y||^2 + lam ||W||^2, bias included.
    Differentiable in the features and the labels. The official code inverts the kernel matrix (torch.inverse); this
    solves the same linear system (torch.linalg.solve), the same result to rounding."""
    phi = with_bias(features)
    kernel = phi @ phi.T + lam * torch.eye(len(phi), dtype=phi.dtype, device=phi.device)
    return phi.T @ torch.linalg.solve(kernel, labels)


def rr_logits(features: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The global classifier on the features (model_architectures.py lines 407-410): x @ w[:-1] + w[-1]."""
    return features @ w[:-1] + w[-1]


def ema_weights(w: torch.Tensor, w_local: torch.Tensor, alpha: float) -> torch.Tensor:
    """w <- (1 - alpha) w.detach() + alpha w_local (lines 590-591): the graph runs only through this step's solve."""
    return (1 - alpha) * w.detach() + alpha * w_local


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature extractor's output (the bilevel nets' penultimate ReLU features: 84 for LeNet, 192 for
    AlexCifarNet)."""
    return net(x, embed=True)


def feature_params(net: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the RR variant trains: the feature extractor's (the official RR networks have no last Linear)."""
    return list(net.features.parameters())


class RRLearner:
    """One network trained the RR way (the model update of train, lines 607-618, and the whole of validate / test /
    find_best_num_steps, lines 709-970): a feature extractor with Adam (`lr`), the calibration scale with Adam
    (`lr_scale`), and the global classifier `w` (zeros at the start, lines 319-321) moved by the pseudo-gradient."""

    def __init__(self, net: nn.Module, classes: int, lr: float, lr_scale: float, alpha: float, lam: float):
        self.net, self.alpha, self.lam = net, float(alpha), float(lam)
        p = next(net.parameters())
        self.opt = torch.optim.Adam(feature_params(net), lr=lr)
        self.scale = torch.ones(1, dtype=p.dtype, device=p.device, requires_grad=True)
        self.opt_scale = torch.optim.Adam([self.scale], lr=lr_scale)
        self.w = torch.zeros(net.feature_dim + 1, classes, dtype=p.dtype, device=p.device)

    def solve(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """This step's moved classifier, with its graph to the features and the labels (lines 585-591)."""
        return ema_weights(self.w, ridge_weights(embed(self.net, x), labels, self.lam), self.alpha)

    def fit(self, x: torch.Tensor, targets: torch.Tensor, w: torch.Tensor) -> float:
        """The feature extractor's and the calibration's Adam step on soft CE(f(x) @ (scale * w), targets), the
        gradient running through w's solve as well (lines 607-618); keeps w (detached) as the new classifier."""
        loss = soft_ce(rr_logits(embed(self.net, x), self.scale * w), targets.detach())
        params = feature_params(self.net)
        grads = torch.autograd.grad(loss, params + [self.scale])
        for p, g in zip(params + [self.scale], grads):
            p.grad = g
        self.opt.step()
        self.opt_scale.step()
        self.w = w.detach()
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "scale": self.scale.detach().clone(),
                "opt_scale": self.opt_scale.state_dict(), "w": self.w.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        with torch.no_grad():
            self.scale.copy_(state["scale"].to(self.scale.device))
        self.opt_scale.load_state_dict(state["opt_scale"])
        self.w = state["w"].to(self.w.device).clone()

    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """One step of training a fresh model on base examples with fixed labels (validate / test, lines 736-759)."""
        return self.fit(x, labels, self.solve(x, labels))

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, device: torch.device, chunk: int = 1024) -> float:
        """Accuracy (percent) with the plain (uncalibrated) global classifier (lines 762-774)."""
        correct = 0
        for start in range(0, len(y), chunk):
            logits = rr_logits(embed(self.net, x[start:start + chunk].to(device)), self.w)
            correct += int((logits.argmax(1) == y[start:start + chunk].to(device)).sum())
        return 100.0 * correct / max(1, len(y))

    def train(self, x: torch.Tensor, labels: torch.Tensor, steps: int, batch: int, generator: torch.Generator,
              on_step=None) -> None:
        """`steps` RR steps over ddflow.ops.bilevel.base_steps' batches (lines 736-759, 831-853, 909-931)."""
        self.net.train()
        base_steps(x, labels, steps, batch, generator, self.train_step, on_step)


class AdamLearner:
    """The second-order variant's fresh model (label_distillation_or2.py validate / test / find_best_num_steps): the
    whole network trained by Adam on the base examples (ddflow.ops.bilevel.train_on_base), scored by its own head."""

    def __init__(self, net: nn.Module, lr: float):
        self.net, self.lr = net, float(lr)

    def train(self, x: torch.Tensor, labels: torch.Tensor, steps: int, batch: int, generator: torch.Generator,
              on_step=None) -> None:
        train_on_base(self.net, x, labels, steps, batch, generator, self.lr, on_step)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
        acc = accuracy(self.net.eval(), None, x, y, device)
        self.net.train()
        return acc


def base_learner(variant: str, net: nn.Module, classes: int, lr: float, rr: dict | None = None):
    """The learner that trains a fresh `net` on base examples with LD labels, by variant: 'or2' (the network with its
    own head, Adam) or 'rr' (features, calibration and the pseudo-gradient ridge-regression head; `rr` holds
    lr_calibration, rr_alpha and ridge_lambda)."""
    if variant == "rr":
        rr = rr or {}
        return RRLearner(net, classes, lr, float(rr["lr_calibration"]), float(rr["rr_alpha"]),
                         float(rr["ridge_lambda"]))
    return AdamLearner(net, lr)
