"""ZCA whitening fitted on the train split only, in the two flavours the literature uses.

kind 'kornia' (MTT and methods built on its buffers; kornia.enhance.ZCAWhitening(eps=0.1)):
    raw [0,1] pixels, flattened to d = C*H*W features; mean-centred per feature; UNBIASED covariance
    (divide by N-1); transform T = U diag(1/sqrt(S + eps)) U^T with eps ABSOLUTE; whitened = (x - mean) @ T.

kind 'frepo' (FRePo lib/dataset/ops.py; RFAD close to it; KIP differs: kind 'kip' below):
    per-channel standardisation with the train split's channel mean and (population) std, then flatten;
    centred by the per-feature mean of the standardised train data; covariance = Xc^T Xc / N;
    regulariser reg = zca_reg * trace(cov) / d (RELATIVE); T = U diag(1/sqrt(S + reg)) U^T.
    As in FRePo, when N < d the scales of the trailing d - N eigen-directions (which carry no train
    variance) are set to 1 instead of 1/sqrt(reg) ("rank control"); with N >= d this changes nothing.

kind 'rfad' (yolky/RFAD data.py get_zca_matrix, lines 134-143, after the datasets' per-channel standardisation with
    torch.std, i.e. the unbiased std): as 'frepo' without the per-feature centring (covariance = X^T X / N of the
    standardised data) and without rank control.
kind 'kip' (google-research kip/nn_training.ipynb `_get_whitening_transform` / `_get_preprocess_op`, cell
eUwrmFWxfuAf, preprocess_type 'zca_normalize'): the per-channel standardisation of kind 'frepo', then every image
flattened, centred by its own mean and scaled to unit L2 norm ("layer norm"); covariance X^T X / N of those images
WITHOUT per-feature centring; reg = zca_reg * trace(cov) / d (relative); FRePo's rank control; whitened = x @ T.
Its `inverse` cannot undo the per-image centring and norm: it returns the image rescaled to unit variance per pixel
(times sqrt(d)) before the channel de-standardisation, for figures only.

Everything is computed in float64 and stored in float32. The same `apply` is used for train and test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import DdflowError

KINDS = ("kornia", "frepo", "rfad", "kip")
DEFAULT_EPS = {"kornia": 0.1, "frepo": 0.1, "rfad": 0.1, "kip": 0.1}
STANDARDISED = ("frepo", "rfad", "kip")   # kinds that standardise each channel before the transform
_CHUNK = 4096  # rows per block when accumulating statistics, to bound float64 memory for large sets


@dataclass
class ZCA:
    kind: str
    mean: Tensor                      # (d,) per-feature mean subtracted before the transform
    transform: Tensor                 # (d, d) symmetric whitening matrix, acts on the right
    shape: tuple[int, int, int]       # (C, H, W) the transform was fitted for
    eps: float                        # the parameter as given: absolute eps (kornia) or relative zca_reg (frepo)
    reg: float                        # the absolute amount added to the eigenvalues
    channel_mean: Tensor | None = None  # (C,) frepo and kip only
    channel_std: Tensor | None = None   # (C,) frepo only
    block: int = 0                    # frepo only: > 0 = one (C*block*block)^2 transform shared by the checkerboard
                                      # blocks (FRePo's ImageNette/ImageWoof: block 64, use_mean_block, checkboard)
    _inverse: Tensor | None = field(default=None, repr=False, compare=False)

    # ---- helpers -------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.shape):
            raise DdflowError(
                f"ZCA ({self.kind}) was fitted for images of shape (N, {', '.join(map(str, self.shape))}), "
                f"got a tensor of shape {tuple(x.shape)}"
            )

    def _channel_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = self.shape[0]
        m = self.channel_mean.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        s = self.channel_std.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        return m, s

    def inverse_transform(self) -> Tensor:
        """(d, d) inverse of `transform` (computed once in float64, cached in float32)."""
        if self._inverse is None:
            self._inverse = torch.linalg.inv(self.transform.double()).float()
        return self._inverse

    def to(self, device: torch.device | str) -> "ZCA":
        """A copy whose tensors live on `device` (avoids moving the matrix on every call)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ZCA(self.kind, mv(self.mean), mv(self.transform), self.shape, self.eps, self.reg,
                   mv(self.channel_mean), mv(self.channel_std), self.block, mv(self._inverse))

    # ---- the two maps --------------------------------------------------------------------------
    def apply(self, x: Tensor) -> Tensor:
        """(N, C, H, W) float pixels in [0, 1] -> whitened (N, C, H, W) float32."""
        self._check(x)
        x = x.float()
        if self.kind in STANDARDISED:
            m, s = self._channel_stats(x)
            x = (x - m) / s
        flat = x.reshape(x.shape[0], -1)
        if self.kind == "kip":
            flat = layer_norm(flat)
        mean = self.mean.to(device=x.device, dtype=torch.float32)
        t = self.transform.to(device=x.device, dtype=torch.float32)
        if self.block:
            return from_blocks(to_blocks((flat - mean).reshape(x.shape), self.block) @ t, x.shape, self.block)
        return ((flat - mean) @ t).reshape(x.shape)

    def inverse(self, x: Tensor) -> Tensor:
        """Whitened (N, C, H, W) -> pixel space [0, 1] (not clipped), for figures."""
        self._check(x)
        x = x.float()
        flat = x.reshape(x.shape[0], -1)
        inv = self.inverse_transform().to(device=x.device, dtype=torch.float32)
        mean = self.mean.to(device=x.device, dtype=torch.float32)
        if self.block:
            flat = from_blocks(to_blocks(x, self.block) @ inv, x.shape, self.block).reshape(x.shape[0], -1)
            out = (flat + mean).reshape(x.shape)
        else:
            out = (flat @ inv + mean).reshape(x.shape)
        if self.kind == "kip":
            out = out * math.sqrt(flat.shape[1])
        if self.kind in STANDARDISED:
            m, s = self._channel_stats(out)
            out = out * s + m
        return out

    # ---- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor | str | float]:
        d: dict[str, Tensor | str | float] = {
            "kind": self.kind,
            "mean": self.mean.detach().cpu(),
            "transform": self.transform.detach().cpu(),
            "shape": torch.tensor(self.shape, dtype=torch.int64),
            "eps": float(self.eps),
            "reg": float(self.reg),
        }
        if self.block:
            d["block"] = int(self.block)
        if self.channel_mean is not None:
            d["channel_mean"] = self.channel_mean.detach().cpu()
            d["channel_std"] = self.channel_std.detach().cpu()
        return d

    @classmethod
    def from_state_dict(cls, d: dict) -> "ZCA":
        try:
            kind = str(d["kind"])
            if kind not in KINDS:
                raise DdflowError(f"ZCA state: unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
            shape = tuple(int(v) for v in torch.as_tensor(d["shape"]).tolist())
            mean = torch.as_tensor(d["mean"]).float()
            transform = torch.as_tensor(d["transform"]).float()
            cm = d.get("channel_mean")
            cs = d.get("channel_std")
            z = cls(kind, mean, transform, shape, float(d["eps"]), float(d["reg"]),
                    None if cm is None else torch.as_tensor(cm).float(),
                    None if cs is None else torch.as_tensor(cs).float(), int(d.get("block", 0)))
        except KeyError as e:
            raise DdflowError(f"ZCA state: missing key {e}") from None
        dim = shape[0] * shape[1] * shape[2]
        tdim = shape[0] * z.block * z.block if z.block else dim
        if mean.shape != (dim,) or transform.shape != (tdim, tdim):
            raise DdflowError(f"ZCA state: mean {tuple(mean.shape)} / transform {tuple(transform.shape)} "
                              f"do not match image shape {shape}")
        if kind in STANDARDISED and (z.channel_mean is None or z.channel_std is None):
            raise DdflowError(f"ZCA state: kind {kind!r} needs channel_mean and channel_std")
        return z


def layer_norm(flat: Tensor) -> Tensor:
    """KIP's per-image preprocessing: (N, d) rows centred by their own mean and scaled to unit L2 norm."""
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True)


def _feature_mean(flat_fn, n: int, d: int, device) -> Tensor:
    total = torch.zeros(d, dtype=torch.float64, device=device)
    for i in range(0, n, _CHUNK):
        total += flat_fn(i, min(n, i + _CHUNK)).sum(0)
    return total / n


def _centred_gram(flat_fn, n: int, d: int, mean: Tensor) -> Tensor:
    g = torch.zeros(d, d, dtype=torch.float64, device=mean.device)
    for i in range(0, n, _CHUNK):
        xc = flat_fn(i, min(n, i + _CHUNK)) - mean
        g.addmm_(xc.T, xc)
    return g


def to_blocks(x: Tensor, block: int) -> Tensor:
    """(N, C, H, W) -> (N, (H/b)*(W/b), C*b*b): FRePo's checkerboard blocks, block (i, j) = x[..., i::H/b, j::W/b]."""
    n, c, h, w = x.shape
    sh, sw = h // block, w // block
    return x.reshape(n, c, block, sh, block, sw).permute(0, 3, 5, 1, 2, 4).reshape(n, sh * sw, c * block * block)


def from_blocks(b: Tensor, shape, block: int) -> Tensor:
    n, c, h, w = shape
    sh, sw = h // block, w // block
    return b.reshape(n, sh, sw, c, block, block).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h, w)


def fit_zca(x_train: Tensor | Any, kind: str = "kornia", eps: float | None = None, block: int | None = None) -> ZCA:
    """Fit ZCA on the train split `x_train` ((N, C, H, W) float pixels in [0, 1]).

    eps: absolute eigenvalue offset for kind 'kornia' (default 0.1); relative zca_reg for kind 'frepo'
    (default 0.1; the offset is zca_reg * trace(cov) / d).
    """
    if kind not in KINDS:
        raise DdflowError(f"unknown ZCA kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if not hasattr(x_train, "shape") or not hasattr(x_train, "dim") or x_train.dim() != 4:
        raise DdflowError(f"fit_zca expects (N, C, H, W) images (a tensor or data.images.Images), got "
                          f"{tuple(x_train.shape) if hasattr(x_train, 'shape') else type(x_train).__name__}")
    eps = DEFAULT_EPS[kind] if eps is None else float(eps)
    if eps < 0:
        raise DdflowError(f"ZCA eps must be >= 0, got {eps}")
    n, c, h, w = x_train.shape
    d = c * h * w
    if n < 2:
        raise DdflowError(f"fit_zca needs at least 2 training images, got {n}")
    dev = x_train.device

    channel_mean = channel_std = None
    if kind in STANDARDISED:
        # population per-channel statistics over all pixels of the train split (FRePo: 1/(count*H*W))
        s1 = torch.zeros(c, dtype=torch.float64, device=dev)
        for i in range(0, n, _CHUNK):
            s1 += x_train[i:i + _CHUNK].double().sum(dim=(0, 2, 3))
        cm64 = s1 / (n * h * w)
        s2 = torch.zeros(c, dtype=torch.float64, device=dev)
        for i in range(0, n, _CHUNK):
            s2 += (x_train[i:i + _CHUNK].double() - cm64.view(1, c, 1, 1)).square().sum(dim=(0, 2, 3))
        cs64 = (s2 / (n * h * w - (kind == "rfad"))).sqrt()   # RFAD: torch.std, unbiased
        if bool((cs64 <= 0).any()):
            raise DdflowError(f"fit_zca ({kind}): a channel of the train split is constant (std 0)")
        # store float32 statistics and standardise with exactly those, so apply() matches the fit
        channel_mean, channel_std = cm64.float(), cs64.float()
        cmv, csv = channel_mean.double().view(1, c, 1, 1), channel_std.double().view(1, c, 1, 1)

        def flat(i: int, j: int) -> Tensor:
            z = ((x_train[i:j].double() - cmv) / csv).reshape(j - i, d)
            return layer_norm(z) if kind == "kip" else z
    else:
        def flat(i: int, j: int) -> Tensor:
            return x_train[i:j].double().reshape(j - i, d)

    # rfad and kip: no per-feature centring (X^T X / N of the standardised, for kip layer-normed, images)
    uncentred = kind in ("rfad", "kip")
    mean = torch.zeros(d, dtype=torch.float64, device=dev) if uncentred else _feature_mean(flat, n, d, dev)
    if block:
        if kind != "frepo" or h % block or w % block:
            raise DdflowError(f"block-wise ZCA needs kind 'frepo' and a block ({block}) dividing {h}x{w}")
        bd = c * block * block

        def flat_blocks(i: int, j: int) -> Tensor:   # every block of every image is one sample of the block cov
            xb = (flat(i, j) - mean).reshape(j - i, c, h, w)
            return to_blocks(xb, block).reshape(-1, bd)

        cov = _centred_gram(flat_blocks, n, bd, torch.zeros(bd, dtype=torch.float64, device=dev))
        cov /= n * (d // bd)                        # use_mean_block: the mean of the blocks' covariances
        d = bd                                      # the transform's dimension (reg and rank control below)
    else:
        cov = _centred_gram(flat, n, d, mean)
        cov /= (n - 1) if kind == "kornia" else n

    reg = eps if kind == "kornia" else eps * float(torch.trace(cov)) / d
    evals, evecs = torch.linalg.eigh(cov)                   # ascending; reads the lower triangle only
    del cov
    evals = evals.clamp_min(0.0)                            # round-off can make null directions slightly negative
    denom = evals + reg
    if bool((denom <= 0).any()):
        raise DdflowError(f"ZCA ({kind}): covariance is singular and eps={eps} adds nothing; use eps > 0")
    scale = denom.rsqrt()
    if kind in ("frepo", "kip") and n < d:   # not rfad (its get_zca_matrix has no rank control)
        # FRePo's (and KIP's) rank control: directions beyond the first N (by decreasing eigenvalue) are left unscaled
        scale[: d - n] = 1.0
    transform = ((evecs * scale) @ evecs.T).float()
    del evecs
    return ZCA(kind, mean.float(), transform, (c, h, w), eps, float(reg), channel_mean, channel_std, int(block or 0))
