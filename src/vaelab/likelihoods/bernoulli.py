"""Independent binary pixels: p(x | l) = prod_d sigmoid(l_d)^x_d (1 - sigmoid(l_d))^(1 - x_d), one logit per sub-pixel.

log p(x | l) = sum_d [x_d l_d - softplus(l_d)], computed from the logits (never log(p + eps)); for
grey x (``--binarization none``) it is the cross-entropy, not a normalised log-likelihood.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Independent
from torch.nn import functional as F

from vaelab.likelihoods.family import LikelihoodFamily

# Data means are clamped into [EDGE, 1 - EDGE] before their logit starts the output bias.
EDGE = 1e-3


class Bernoulli(LikelihoodFamily):
    """Heads 1: the logit of each sub-pixel."""

    @property
    def heads(self) -> int:
        return 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_d [x_d l_d - softplus(l_d)] ``[...]``, l = params[..., 0, :]; exact for grey x too."""
        logits = params[..., 0, :]
        return (logits * x).sum(-1) - F.softplus(logits).sum(-1)

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(TorchBernoulli(logits=params[..., 0, :], validate_args=False), 1, validate_args=False)

    def initial_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        """logit(data mean) ``[1, D]``: Burda et al.'s initialisation, faster early training."""
        return torch.logit(data_mean.clamp(EDGE, 1 - EDGE)).unsqueeze(0)
