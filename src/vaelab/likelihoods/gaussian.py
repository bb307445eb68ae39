"""A diagonal Gaussian density per sub-pixel: p(x | z) = prod_d N(x_d; mu_d, sigma_d^2).

Heads 2 per sub-pixel: the raw mean m and the raw scale r, sigma = softplus(r) + MIN_SCALE. The
mean is mu = sigmoid(m) (``squash_mean``, ``--gaussian-mean sigmoid``, the default), inside the
data's range [0, 1] as Kingma & Welling (2014) squashed their Frey Face means, or mu = m
(``linear``): unconstrained means put about a quarter of sampled Frey Face means outside [0, 1].
On discrete data it is a density over dequantized values (v + u) / levels.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal
from torch.nn import functional as F

from vaelab.likelihoods.family import LikelihoodFamily

# Smallest standard deviation a Gaussian can have: keeps log-densities finite when a Gaussian
# likelihood (Frey Face) tries to collapse onto a pixel value. The Gaussian latents use it too.
MIN_SCALE = 1e-3


class Gaussian(LikelihoodFamily):
    """Heads 2: (raw mean, raw scale) of each sub-pixel."""

    @property
    def heads(self) -> int:
        return 2

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(params).log_prob(x)

    def distribution(self, params: torch.Tensor) -> Independent:
        raw_mean, raw_scale = params[..., 0, :], params[..., 1, :]
        mean = torch.sigmoid(raw_mean) if self.squash_mean else raw_mean
        scale = F.softplus(raw_scale) + MIN_SCALE
        return Independent(Normal(mean, scale, validate_args=False), 1, validate_args=False)
