"""Multi-formation (IDC, DREAM; official decode_zoom and the 'mix' initialisation): `decode` turns each stored
image into factor x factor crops upsampled to full size, `tile` packs factor^2 images into the patches of one."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DdflowError


def decode(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform multi-formation (official decode_zoom): images (N, C, H, W) in [0, 1] -> (N * factor^2, C, H, W).
    Crop (i, j) of every image (size ceil(H / factor); a size not divisible by factor is padded with 0.5 at the
    bottom/right) is upsampled bilinearly (align_corners=False) back to H x W. Output order is crop-major: all
    images' crop (0, 0), then all images' crop (0, 1), ...; labels repeated in the same order."""
    if factor < 1:
        raise DdflowError(f"multi-formation factor must be >= 1, got {factor}")
    if factor == 1:
        return images, labels
    h, w = images.shape[-2:]
    if h != w:
        raise DdflowError(f"multi-formation needs square images, got {h}x{w}")
    rem = h % factor
    if rem:
        images = F.pad(images, (0, factor - rem, 0, factor - rem), value=0.5)
    s = math.ceil(h / factor)
    crops = [images[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s] for i in range(factor) for j in range(factor)]
    out = F.interpolate(torch.cat(crops), size=(h, w), mode="bilinear", align_corners=False)
    return out, labels.repeat(factor * factor)


def tile(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The official 'mix' initialisation: (n * factor^2, C, H, W) -> (n, C, H, W). Images [k*n, (k+1)*n) are
    resized (nearest) into patch k = (i, j) of the n stored images, row-major; with H % factor = r the first r
    patch rows/columns are one pixel larger."""
    n_all, c, h, w = images.shape
    if n_all % (factor * factor):
        raise DdflowError(f"tile: {n_all} images are not a multiple of factor^2 = {factor * factor}")
    n = n_all // (factor * factor)
    out = images.new_empty((n, c, h, w))
    s, rem = h // factor, h % factor
    k, top = 0, 0
    for i in range(factor):
        hr = s + 1 if i < rem else s
        left = 0
        for j in range(factor):
            wr = s + 1 if j < rem else s
            out[:, :, top:top + hr, left:left + wr] = F.interpolate(images[k * n:(k + 1) * n], size=(hr, wr))
            left += wr
            k += 1
        top += hr
    return out
