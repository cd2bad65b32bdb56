"""The preprocessing a method distils in, which its evaluation repeats on the test split.

prep 'raw' = the dataset's mean/std normalisation (what load_real gives); 'kornia' / 'frepo' / 'rfad' = ZCA whitening of
the [0, 1] pixels fitted on the train split (ddflow.data.zca). A method declares its prep (Method.preprocessing);
the runner applies it before the method starts and writes `space: "zca"` and the ZCA state into the distilled
record (ddflow.records), whose `real_in_space` whitens the real data the same way before an evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DdflowError
from .images import Images
from .real import RealData, denormalize
from .zca import ZCA, fit_zca

PREPS = ("raw", "kornia", "frepo", "rfad", "kip")


@dataclass(frozen=True)
class Prep:
    """A preprocessing: kind in PREPS, the ZCA regulariser (None = the kind's default) and FRePo's block size."""

    kind: str = "raw"
    eps: float | None = None
    block: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PREPS:
            raise DdflowError(f"unknown preprocessing {self.kind!r}; known: {', '.join(PREPS)}")


def whiten(data: RealData, zca: ZCA) -> RealData:
    """Both splits of normalised real data through `zca` (fitted on [0, 1] pixels)."""
    info = data.info

    def one(x):
        if x is None:
            return None
        if isinstance(x, Images):
            return x.whitened(zca)
        return zca.to(x.device).apply(denormalize(x, info))

    return RealData(one(data.x_train), data.y_train, one(data.x_test), data.y_test, info, x_val=one(data.x_val),
                    y_val=data.y_val, train_rows=data.train_rows)


def preprocess(data: RealData, prep: str | Prep, eps: float | None = None,
               block: int | None = None) -> tuple[RealData, ZCA | None]:
    """(data in `prep` space, the fitted ZCA or None for 'raw'). ZCA is fitted on the train split only; `block`
    (frepo only) = FRePo's block-wise ZCA (ImageNette/ImageWoof: 64)."""
    p = prep if isinstance(prep, Prep) else Prep(prep, eps, block)
    if p.kind == "raw":
        return data, None
    x = data.x_train
    pixels = x.pixels().to("cpu") if isinstance(x, Images) else denormalize(x, data.info).cpu()
    zca = fit_zca(pixels, p.kind, p.eps, p.block)
    return whiten(data, zca), zca
