"""What a likelihood family computes: p_theta(x | z) from a decoder's output.

Images of ``data_shape`` (C, H, W) are held flat, x ``[..., D]`` with D = C * H * W, values in
[0, 1]: a discrete family's levels are v / (levels - 1), v = 0 .. levels - 1; a dequantizing
family's values are (v + u) / levels. The decoder gives ``heads`` numbers per sub-pixel,
``params [..., heads, D]`` (a network's ``[B, heads, C, H, W]`` flattened), from which the
family scores x and draws samples.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution


class LikelihoodFamily:
    """p(x | params) for one kind of pixel model; subclasses implement the three methods.

    Args:
        data_shape: (C, H, W), or ``(D,)`` for vector data.
        levels: values a sub-pixel takes (2^bits for 8-bit data reduced to ``bits``), or None for
            continuous data.
        components: mixture components (the mixture family only).
        squash_mean: the Gaussian's mean goes through a sigmoid into the data's range [0, 1].
    """

    def __init__(self, data_shape: tuple[int, ...], levels: int | None, components: int = 10, squash_mean: bool = True):
        self.data_shape = tuple(data_shape)
        self.levels = levels
        self.components = components
        self.squash_mean = squash_mean

    @property
    def heads(self) -> int:
        """Numbers the decoder gives per sub-pixel."""
        raise NotImplementedError

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) ``[...]`` for params ``[..., heads, D]`` and x broadcastable to ``[..., D]``."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Distribution:
        """p(x | params) as a distribution with batch shape ``[...]`` and event ``[D]``: its ``mean``
        is E[x | z] in the data's range, and :func:`vaelab.models.sampling.sample` draws from it."""
        raise NotImplementedError
