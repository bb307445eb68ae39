"""A softmax over each sub-pixel's levels: P(v_d = j | z) = softmax(l_d)_j, j = 0 .. levels - 1.

Heads = levels per sub-pixel (the logits, ``params[..., j, d]``). The value x = v / (levels - 1)
is scored at v = round(x (levels - 1)). The most flexible per-pixel model, and the largest
decoder output (levels x D numbers: 256 x 3072 for 8-bit CIFAR-10); van den Oord et al. (2016)
used it in PixelRNN.
"""

from __future__ import annotations

import torch

from vaelab.errors import ConfigError
from vaelab.likelihoods.family import LikelihoodFamily, inverse_cdf_draw, level_index


def require_levels(name: str, levels: int | None) -> int:
    """``levels`` of a discrete family; ConfigError (one line) for continuous data or fewer than two levels."""
    if levels is None or levels < 2:
        raise ConfigError(f"{name} needs images with integer levels (8-bit or binary); the data are continuous")
    return levels


class Categorical(LikelihoodFamily):
    """Heads = levels: one logit per level of each sub-pixel."""

    def __init__(self, data_shape: tuple[int, ...], levels: int | None, components: int = 10, squash_mean: bool = True):
        super().__init__(data_shape, require_levels("categorical", levels), components, squash_mean)

    @property
    def heads(self) -> int:
        return self.levels

    def log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """log P(v_d = j) ``[..., levels, D]``."""
        return params.log_softmax(-2)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(params.shape[:-2], x.shape[:-1])
        index = level_index(x, self.levels).expand(*batch, params.shape[-1]).unsqueeze(-2)
        return self.log_probs(params).expand(*batch, *params.shape[-2:]).gather(-2, index).squeeze(-2).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """sum_j j / (levels - 1) P(v_d = j) ``[..., D]``."""
        values = torch.linspace(0, 1, self.levels, dtype=params.dtype, device=params.device)
        return (params.softmax(-2) * values.unsqueeze(-1)).sum(-2)

    def draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return inverse_cdf_draw(params.softmax(-2), -2, generator).to(params.dtype) / (self.levels - 1)
