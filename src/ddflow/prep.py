"""Data preprocessing a method distils in, and that its evaluation must repeat on the test split.

prep 'raw' = the dataset's mean/std normalisation (what load_real gives); 'kornia' / 'frepo' = ZCA whitening of
the [0, 1] pixels fitted on the train split (ddflow.zca). A method that distils in a ZCA space returns
`space: "zca"` and `zca: ZCA.state_dict()` in its result; `for_distilled` then whitens the real data the same
way before an evaluation, so the test split is seen through the transform the synthetic set was made in.
"""
from __future__ import annotations

from typing import Any

import torch

from .data import RealData, denormalize
from .errors import DdflowError
from .zca import ZCA, fit_zca

PREPS = ("raw", "kornia", "frepo")


def _whiten(data: RealData, zca: ZCA) -> RealData:
    info = data.info
    z = zca.to(data.x_train.device)
    return RealData(z.apply(denormalize(data.x_train, info)), data.y_train,
                    z.apply(denormalize(data.x_test, info)), data.y_test, info)


def preprocess(data: RealData, prep: str, eps: float | None = None,
               block: int | None = None) -> tuple[RealData, ZCA | None]:
    """(data in `prep` space, the fitted ZCA or None for 'raw'). ZCA is fitted on the train split only; `block`
    (frepo only) = FRePo's block-wise ZCA (ImageNette/ImageWoof: 64)."""
    if prep not in PREPS:
        raise DdflowError(f"unknown preprocessing {prep!r}; known: {', '.join(PREPS)}")
    if prep == "raw":
        return data, None
    zca = fit_zca(denormalize(data.x_train, data.info).cpu(), prep, eps, block)
    return _whiten(data, zca), zca


def for_distilled(data: RealData, distilled: dict[str, Any]) -> RealData:
    """The real data in the space of a distilled set (normalised data as loaded, or its ZCA; for [0, 1] pixel
    images the normalised data, which the protocol (e.g. idc) matches by normalising the images)."""
    space = distilled.get("space", "normalized")
    if space in ("normalized", "pixels"):  # 'pixels' (IDC): the protocol normalises the images itself
        return data
    if space == "zca":
        if "zca" not in distilled:
            raise DdflowError("distilled set in space 'zca' carries no 'zca' state")
        return _whiten(data, ZCA.from_state_dict(distilled["zca"]))
    raise DdflowError(f"distilled set in unknown space {space!r}")


def to_pixels(distilled: dict[str, Any]) -> torch.Tensor:
    """A distilled set's images back to [0, 1] pixels (clamped), for figures."""
    x = distilled["images"].float()
    space = distilled.get("space", "normalized")
    if space == "zca":
        x = ZCA.from_state_dict(distilled["zca"]).inverse(x)
    elif space == "normalized":
        mean = torch.tensor(distilled["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(distilled["std"]).view(1, -1, 1, 1)
        x = x * std + mean
    elif space != "pixels":
        raise DdflowError(f"distilled set in unknown space {space!r}")
    return x.clamp(0, 1)
