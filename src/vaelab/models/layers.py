"""Stochastic layers: each maps its input to a ``torch.distributions`` object.

A layer is a deterministic MLP trunk followed by a head that parameterises a distribution whose
event is the last dimension (``Independent(..., 1)``), so ``log_prob`` returns one number per
example: input ``[..., in]`` gives a distribution with batch shape ``[...]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal
from torch.nn import functional as F

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus, "sigmoid": nn.Sigmoid}

# Smallest standard deviation a Gaussian layer can produce: keeps log-densities finite when a
# Gaussian likelihood (Frey Face) tries to collapse onto a pixel value.
MIN_SCALE = 1e-3


def mlp(in_features: int, hidden: tuple[int, ...], activation: str) -> tuple[nn.Sequential, int]:
    """``Linear -> activation`` for each width in ``hidden``; returns the trunk and its output width."""
    layers: list[nn.Module] = []
    width = in_features
    for out_features in hidden:
        layers += [nn.Linear(width, out_features), _ACTIVATIONS[activation]()]
        width = out_features
    return nn.Sequential(*layers), width


class DiagonalGaussianLayer(nn.Module):
    """x -> N(mu(x), diag(sigma(x)^2)), sigma = softplus(raw) + MIN_SCALE."""

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.trunk, width = mlp(in_features, hidden, activation)
        self.loc = nn.Linear(width, out_features)
        self.raw_scale = nn.Linear(width, out_features)

    def forward(self, inputs: torch.Tensor) -> Independent:
        features = self.trunk(inputs)
        scale = F.softplus(self.raw_scale(features)) + MIN_SCALE
        return Independent(Normal(self.loc(features), scale), 1)


class BernoulliLayer(nn.Module):
    """x -> prod_d Bernoulli(sigmoid(l_d(x))), parameterised by logits so log-probabilities are exact.

    Bernoulli targets may be grey values in [0, 1] (binarization 'none'); the distribution then
    skips support validation and ``log_prob`` is the (unnormalised) cross-entropy the seed used.
    """

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.trunk, width = mlp(in_features, hidden, activation)
        self.logits = nn.Linear(width, out_features)

    def forward(self, inputs: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.logits(self.trunk(inputs)), validate_args=False), 1)

    def init_output_bias(self, data_mean: torch.Tensor) -> None:
        """Start the logits at the data's mean (Burda et al.'s initialisation): faster early training."""
        with torch.no_grad():
            self.logits.bias.copy_(torch.logit(data_mean.clamp(1e-3, 1 - 1e-3)))

