"""What every ddflow network shares: the FeatureClassifier interface (features, then one Linear classifier), the
seeded re-initialisation with PyTorch's default distributions, and the chunked feature pass that methods and
analyses run over many real images."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DdflowError


class FeatureClassifier(nn.Module):
    """A network made of `self.features` (conv blocks) then one Linear `self.classifier` on the flattened maps;
    the interface every method uses: embed() for features, forward() for logits."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (what DM matches and herding selects on)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor, embed: bool = False) -> torch.Tensor:
        """Logits, or with embed=True the features (lets torch.func.functional_call reach embed())."""
        feats = self.embed(x)
        return feats if embed else self.classifier(feats)


@torch.no_grad()
def init_params_(net: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter from `generator` with PyTorch's default distributions: conv (also transposed) and
    linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (= kaiming_uniform_(a=sqrt(5)); fan_in = the
    size of weight[0], which is PyTorch's fan_in for ConvTranspose2d too), norm weights 1, biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)):
            if m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def embed_chunked(net: nn.Module, images: torch.Tensor, index: torch.Tensor | None = None, chunk: int = 500,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """`net.embed` of `images` (or of `images[index]`), `chunk` images at a time, each chunk moved to `device`
    (default: where it is) before the pass; the features of all chunks concatenated in order. The caller sets the
    grad mode and the net's train/eval mode."""
    n = len(images) if index is None else len(index)
    if chunk < 1:
        raise DdflowError(f"embed_chunked: chunk must be >= 1, got {chunk}")
    parts = []
    for s in range(0, n, chunk):
        x = images[s:s + chunk] if index is None else images[index[s:s + chunk]]
        parts.append(net.embed(x if device is None else x.to(device)))
    return torch.cat(parts)
