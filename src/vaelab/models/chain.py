"""A distribution over several stochastic layers, drawn ancestrally, as one flat latent vector.

A model with stochastic layers z_1 (next to x), ..., z_L keeps its latent as the concatenation
z = [z_1, ..., z_L] ``[..., sum D_l]`` so that every objective sees one tensor, as with one layer:

    q(z | x) = q(z_1 | x) prod_{l>1} q(z_l | z_{l-1})          (drawn bottom-up)
    p(z)     = p(z_L) prod_{l<L} p(z_l | z_{l+1})              (drawn top-down)
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from vaelab.models.layers import StochasticLayer


class Chain(Distribution):
    """``first`` (a distribution over the first block drawn) then one block per conditional layer.

    Args:
        first: distribution of the first block drawn, batch shape ``[...]``.
        conditionals: layers mapping each drawn block to the next block's distribution.
        sizes: widths of the blocks in the order they are drawn.
        top_down: True when blocks are drawn from z_L down to z_1 (a prior); the flat vector is
            always ordered z_1, ..., z_L.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector  # not checked (validate_args=False); Bernoulli chains hold 0/1 values

    def __init__(self, first: Distribution, conditionals: list[StochasticLayer], sizes: tuple[int, ...], top_down: bool = False):
        self.first = first
        self.conditionals = conditionals
        self.sizes = sizes
        self.top_down = top_down
        super().__init__(first.batch_shape, torch.Size([sum(sizes)]), validate_args=False)

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The blocks of z ``[..., sum D]`` in drawing order."""
        blocks = list(z.split(self.sizes[::-1] if self.top_down else self.sizes, dim=-1))
        return blocks[::-1] if self.top_down else blocks

    def join(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        """The flat z from blocks in drawing order."""
        return torch.cat(blocks[::-1] if self.top_down else blocks, dim=-1)

    def _block_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log density ``[...]`` of each block of z ``[..., sum D]`` given the one drawn before it, in drawing order."""
        blocks = self.split(z)
        return [self.first.log_prob(blocks[0])] + [layer.log_prob(given, value) for layer, given, value in zip(self.conditionals, blocks, blocks[1:])]

    def layer_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log q(z_l | z_{l-1}) (or log p(z_l | z_{l+1})) ``[...]`` of each layer, ordered z_1, ..., z_L; they sum to ``log_prob``."""
        drawn = self._block_log_probs(z)
        return drawn[::-1] if self.top_down else drawn

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density ``[...]`` of the flat z: the first block's plus each conditional's."""
        return sum(self._block_log_probs(z))  # in drawing order, as it has always been summed

    @property
    def mean(self) -> torch.Tensor:
        """Blocks of conditional means, each given the previous block's mean (not E[z] of the chain)."""
        blocks = [self.first.mean]
        for layer in self.conditionals:
            blocks.append(layer(blocks[-1]).mean)
        return self.join(blocks)


def layer_log_probs(distribution: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
    """log density ``[...]`` of each stochastic layer of z ``[..., sum D]``, ordered z_1, ..., z_L:
    the per-layer terms of a distribution over several layers (a :class:`Chain`, a ladder's
    prior or posterior: whatever has ``layer_log_probs``), or ``[log_prob(z)]`` for one layer."""
    per_layer = getattr(distribution, "layer_log_probs", None)
    return per_layer(z) if per_layer is not None else [distribution.log_prob(z)]
