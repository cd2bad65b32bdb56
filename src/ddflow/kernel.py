"""The kernel family's building blocks (FRePo, ISA): FRePo's Conv, kernel ridge regression on network features,
FRePo's and ISA's losses, the label-margin regulariser, LAMB, and the learned-label helpers.

FRePo = yongchao97/FRePo (JAX), ISA = fiona-lxd/ISA (a FRePo fork); facts in reference/methods.md sections 3 and 6.

FRePo's Conv (lib/models/networks.py `Conv`): `depth` blocks of [norm (every block but the first), Conv 3x3 with
bias and width * 2**i channels, ReLU, avg-pool 2x2]; flatten; Dense. A 1-channel input gets padding 3 on the first
conv (kernel//2 + 2), so 28 px behaves like 32 px. Depth by resolution: the smallest depth that pools the (padded)
input to 4x4, i.e. 3 at 28/32 px, 4 at 64 px, 5 at 128 px. Source: FRePo's README runs depth 3 on 32 px data; the
FRePo paper (NeurIPS 2022, appendix "Implementation details") uses Conv-4 for 64 px and Conv-5 for 128 px inputs
[from memory of the paper: verify]; the 4x4 rule reproduces both. BatchNorm here uses PyTorch momentum 0.9, which is
flax's momentum=0.1 (flax keeps `momentum * old + (1 - momentum) * batch`), eps 1e-5. Initialisation: flax defaults,
LeCun normal (truncated at 2 std) weights, zero biases.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DdflowError
from .nets import FeatureClassifier

FREPO_NORMS = ("batch", "none")


def frepo_depth(size: int, channels: int = 3) -> int:
    """Depth that pools the input (1-channel inputs padded by 2 px on each side) to 4x4 feature maps."""
    eff = size + 4 if channels == 1 else size
    depth = 0
    while eff > 4:
        eff //= 2
        depth += 1
    if depth < 1:
        raise DdflowError(f"FRePoConv: {size} px is too small")
    return depth


class FRePoConv(FeatureClassifier):
    def __init__(self, channels: int, classes: int, size: int, width: int = 128, depth: int | None = None,
                 norm: str = "batch"):
        super().__init__()
        if norm not in FREPO_NORMS:
            raise DdflowError(f"FRePoConv norm {norm!r} not in {FREPO_NORMS}")
        depth = frepo_depth(size, channels) if depth in (None, "auto") else int(depth)
        self.depth, self.width, self.norm = depth, width, norm
        layers: list[nn.Module] = []
        c, h = channels, size
        for i in range(depth):
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(c, eps=1e-5, momentum=0.9))
            pad = 3 if (i == 0 and channels == 1) else 1
            out = width * 2 ** i
            layers += [nn.Conv2d(c, out, 3, padding=pad), nn.ReLU(), nn.AvgPool2d(2, 2)]
            c, h = out, (h + 2 * pad - 2) // 2
        if h < 1:
            raise DdflowError(f"FRePoConv depth {depth} pools a {size} px input to nothing")
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * h
        self.classifier = nn.Linear(self.feature_dim, classes)


@torch.no_grad()
def frepo_init_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """flax defaults: weights LeCun normal (variance 1/fan_in, truncated at +-2 std, rescaled as in
    jax.nn.initializers.variance_scaling), biases 0; norm weight 1, bias 0. Draws from `generator`, in module order."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            w = torch.empty(m.weight.shape)
            nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0, generator=generator)
            m.weight.copy_(w * std)
            m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.reset_running_stats()
    return net


def build_frepo_conv(channels: int, classes: int, size: int, width: int = 128, depth: int | None = None,
                     norm: str = "batch", generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu") -> FRePoConv:
    net = FRePoConv(channels, classes, size, width, depth, norm)
    if generator is not None:
        frepo_init_(net, generator)
    return net.to(device)


# ---- kernel ridge regression ---------------------------------------------------------------------------------
def krr_lambda(k_ss: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """FRePo's regulariser: |reg| * trace(K_ss) / n (nfr, compute_feat_kpp)."""
    return abs(reg) * torch.diagonal(k_ss, dim1=-2, dim2=-1).sum(-1) / k_ss.shape[-1]


def krr_weights(phi_s: torch.Tensor, y_s: torch.Tensor, reg: float = 1e-6) -> torch.Tensor:
    """W = (K_ss + lambda I)^-1 Y_s with K_ss = phi_s phi_s^T; the prediction at phi_t is phi_t phi_s^T W."""
    k_ss = phi_s @ phi_s.T
    lam = krr_lambda(k_ss, reg)
    a = k_ss + lam * torch.eye(len(k_ss), dtype=k_ss.dtype, device=k_ss.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(y_s, chol)
    return torch.linalg.solve(a, y_s)  # not positive definite in float32: the general solver


def krr_predict(phi_t: torch.Tensor, phi_s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """K_ts W = phi_t (phi_s^T W): the (d, C) projection first, so a large test set costs one matrix product."""
    return phi_t @ (phi_s.T @ w)


def centred_onehot(y: torch.Tensor, classes: int) -> torch.Tensor:
    """FRePo's real-batch targets: one_hot - 1/C."""
    return F.one_hot(y, classes).float() - 1.0 / classes


def init_learned_labels(y: torch.Tensor, classes: int) -> torch.Tensor:
    """FRePo's init_proto(scale_y=True): (one_hot - 1/C) / sqrt(C / 10)."""
    return centred_onehot(y, classes) / math.sqrt(classes / 10)


def margin_loss(y_proto: torch.Tensor) -> torch.Tensor:
    """FRePo's lb_margin_th, averaged over prototypes: mean of -min(top1 - top2, 1/C)."""
    top = y_proto.topk(2, dim=-1).values
    return -torch.clamp(top[:, 0] - top[:, 1], max=1.0 / y_proto.shape[-1]).mean()


def mse_half_sum(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FRePo's mean_squared_loss: mean over the batch of 0.5 * sum over classes of (pred - y)^2. Works on (..., B, C)
    and returns the leading dims."""
    return 0.5 * (pred - y).square().sum(-1).mean(-1)


def frepo_kernel_loss(phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor,
                      reg: float = 1e-6) -> torch.Tensor:
    """FRePo: KRR of the real batch from the support, mean over the batch of 0.5 * sum over classes of the error^2."""
    pred = krr_predict(phi_t, phi_s, krr_weights(phi_s, y_s, reg))
    return mse_half_sum(pred, y_t)


# ---- ISA -----------------------------------------------------------------------------------------------------
def select_by_error(err: torch.Tensor, keep: float) -> torch.Tensor:
    """Indices of the samples ISA keeps: keep > 0 = the floor(keep * B) largest errors (hardest first, ISA's topk);
    keep < 0 = the floor(|keep| * B) smallest (easiest first, the public code's negative topk)."""
    b = len(err)
    n = int(math.floor(abs(keep) * b + 1e-9))
    if n < 1:
        raise DdflowError(f"ISA keeps {keep} of a batch of {b}: no sample left")
    order = torch.argsort(err, descending=keep > 0, stable=True)
    return order[:n]


def isa_closed_form(a: torch.Tensor, b: torch.Tensor, eps: float, reduce: str = "mean") -> torch.Tensor:
    """Per-sample loss of the segment r(l) = A + l B, l uniform on [0, eps]: A^2 + eps A B + eps^2 B^2 / 3, then
    reduced over classes ('mean' = ISA's code, 'half_sum' = FRePo's 0.5 * sum). eps = 0 gives A^2."""
    sq = a.square() if eps == 0 else a.square() + eps * a * b + (eps * eps / 3.0) * b.square()
    if reduce == "mean":
        return sq.mean(-1)
    if reduce == "half_sum":
        return 0.5 * sq.sum(-1)
    raise DdflowError(f"ISA reduce {reduce!r} not in ('mean', 'half_sum')")


def nearest_other(phi: torch.Tensor) -> torch.Tensor:
    """For each row, the index of the most cosine-similar OTHER row (ISA: the second of the top-2 similarities)."""
    z = F.normalize(phi, dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(1)


def isa_loss(phi_t: torch.Tensor, y_t: torch.Tensor, phi_s: torch.Tensor, y_s: torch.Tensor, keep: float = 0.8,
             eps: float = 0.5, reduce: str = "mean", reg: float = 1e-6) -> torch.Tensor:
    """ISA's loss (fiona-lxd/ISA isa.py proto_train_step): KRR of the real batch, keep the hardest `keep` fraction
    by per-sample MSE, pair each kept sample i with its most cosine-similar other kept sample j, and integrate the
    squared residual along phi_i + l (phi_i - phi_j), l in [0, eps], in closed form. keep = 1 and eps = 0 with
    reduce 'half_sum' is FRePo's kernel loss, computed by the same operations."""
    w = krr_weights(phi_s, y_s, reg)                      # first, as in frepo_kernel_loss (same autograd order)
    proj = phi_s.T @ w                                    # (d, C): phi -> prediction
    pred = phi_t @ proj
    if abs(keep) < 1:
        kept = select_by_error((pred - y_t).detach().square().mean(-1), keep)
        pred, phi_t, y_t = pred[kept], phi_t[kept], y_t[kept]
    if eps == 0 and reduce == "half_sum":
        return mse_half_sum(pred, y_t)                    # FRePo's kernel loss, the same operations
    a = pred - y_t                                        # residuals (B, C)
    if eps == 0:
        return isa_closed_form(a, a, 0.0, reduce).mean()
    j = nearest_other(phi_t.detach())
    b = (phi_t - phi_t[j]) @ proj - (y_t - y_t[j])
    return isa_closed_form(a, b, eps, reduce).mean()


# ---- LAMB ----------------------------------------------------------------------------------------------------
class LAMB(torch.optim.Optimizer):
    """LAMB as optax.lamb (FRePo's synthetic-data optimiser): Adam moments (b1 0.9, b2 0.999, eps 1e-6, bias
    corrected), plus weight decay (0 in FRePo), then the update is scaled per parameter tensor by the trust ratio
    ||p|| / ||u|| (1 when either norm is 0), then by -lr. Own implementation: no maintained PyTorch LAMB matches
    optax's variant exactly (torch-optimizer's Lamb clamps the weight norm at 10 and is unmaintained)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** t)
                v_hat = st["v"] / (1 - b2 ** t)
                u = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    u = u + group["weight_decay"] * p
                p_norm, u_norm = p.norm(), u.norm()
                ratio = torch.where((p_norm > 0) & (u_norm > 0), p_norm / u_norm, torch.ones_like(p_norm))
                p.sub_(group["lr"] * ratio * u)
        return None


def cosine_lr(lr: float, step: int, total: int, alpha: float) -> float:
    """optax.cosine_decay_schedule(lr, total, alpha) at `step`."""
    frac = min(step, total) / max(total, 1)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


def warmup_cosine_lr(lr: float, step: int, total: int, warmup: int, alpha: float) -> float:
    """FRePo's evaluation schedule (script/eval.py): linear 0 -> lr over `warmup` steps, then cosine decay to
    alpha * lr over max(total - warmup, 1) steps (optax.join_schedules)."""
    if step < warmup:
        return lr * step / warmup
    return cosine_lr(lr, step - warmup, max(total - warmup, 1), alpha)


def flip_support(x: torch.Tensor, y: torch.Tensor, use_flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """FRePo's use_flip: the prototypes and their horizontal flips, with the same labels."""
    if not use_flip:
        return x, y
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y])

