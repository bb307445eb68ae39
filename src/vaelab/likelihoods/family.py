"""What a likelihood family computes: p_theta(x | z) from a decoder's output.

Images of ``data_shape`` (C, H, W) are held flat, x ``[..., D]`` with D = C * H * W, values in
[0, 1]: a discrete family's levels are v / (levels - 1), v = 0 .. levels - 1; a dequantizing
family's values are (v + u) / levels. The decoder gives ``heads`` numbers per sub-pixel,
``params [..., heads, D]`` (a network's ``[B, heads, C, H, W]`` flattened), from which the
family scores x and draws samples.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints


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
        return FamilyDistribution(self, params)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | params] ``[..., D]`` in [0, 1] (for :class:`FamilyDistribution`)."""
        raise NotImplementedError

    def draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One x ~ p(x | params) ``[..., D]`` per row of params, drawn from ``generator``; no gradient."""
        raise NotImplementedError

    def initial_bias(self, data_mean: torch.Tensor) -> torch.Tensor | None:
        """The decoder's output bias ``[heads, D]`` to start from, given the training data's mean
        ``[D]`` (None: leave the network's initialisation)."""
        return None


class FamilyDistribution(Distribution):
    """p(x | params) of a family whose distribution torch lacks: batch ``params.shape[:-2]``, event ``[D]``.

    Sampled by :func:`vaelab.models.sampling.sample` through :meth:`draw` (an explicit generator).
    """

    arg_constraints: dict = {}
    support = constraints.unit_interval  # x = v / (levels - 1); not checked (validate_args=False)

    def __init__(self, family: LikelihoodFamily, params: torch.Tensor):
        self.family, self.params = family, params
        super().__init__(params.shape[:-2], params.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.family.log_prob(self.params, value)

    @property
    def mean(self) -> torch.Tensor:
        return self.family.mean(self.params)

    def draw(self, sample_shape: torch.Size | tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        """x ``sample_shape + batch + [D]``, drawn from ``generator``."""
        params = self.params.expand(*sample_shape, *self.params.shape)
        with torch.no_grad():
            return self.family.draw(params, generator)


def level_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    """The level v = round(x (levels - 1)) ``int64`` of values x = v / (levels - 1) in [0, 1]."""
    return torch.round(x * (levels - 1)).clamp_(0, levels - 1).long()


def inverse_cdf_draw(probs: torch.Tensor, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """An index along ``dim`` drawn with probabilities ``probs`` (which sum to 1 along it): the number
    of cumulative probabilities below one uniform; ``probs`` with ``dim`` removed, int64."""
    uniforms = torch.rand(probs.select(dim, 0).shape, generator=generator, dtype=probs.dtype, device=probs.device)
    below = probs.cumsum(dim) < uniforms.unsqueeze(dim)
    return below.sum(dim).clamp_(max=probs.shape[dim] - 1)
