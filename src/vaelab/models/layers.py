"""Stochastic layers: each maps its input to a ``torch.distributions`` object.

A layer is a deterministic MLP trunk followed by a head that parameterises a distribution whose
event is the last dimension (``Independent(..., 1)``), so ``log_prob`` returns one number per
example: input ``[..., in]`` gives a distribution with batch shape ``[...]``. The latents' layers
are Gaussian or Bernoulli; p(x | z) is :class:`LikelihoodLayer` around any family of
:mod:`vaelab.likelihoods`, or :class:`BernoulliLayer` for Bernoulli pixels (its fused
log-probability, the folded evaluation of :mod:`vaelab.estimators.folding` and the seeds trained
together of :mod:`vaelab.batched` read its ``logits``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal
from torch.nn import functional as F

from vaelab.likelihoods.family import LikelihoodFamily
from vaelab.likelihoods.gaussian import MIN_SCALE
from vaelab.models.backend import MLP, linear


class StochasticLayer(nn.Module):
    """Maps inputs ``[..., in]`` to a distribution over values ``[..., out]`` (``forward``), and scores
    values under it (``log_prob``); subclasses override ``log_prob`` where a fused form is faster."""

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(value | inputs) ``[...]``, summed over the event dimension."""
        return self(inputs).log_prob(value)

    @property
    def output_numbers(self) -> int:
        """Numbers the layer computes per input row (its distribution's parameters), or 0 where a
        layer does not say: what sizes an evaluation's chunks (:func:`vaelab.estimators.bounds.decoder_rows`)."""
        return 0


class DiagonalGaussianLayer(StochasticLayer):
    """x -> N(mu(x), diag(sigma(x)^2)), sigma = softplus(raw) + MIN_SCALE."""

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.trunk = MLP(in_features, hidden, activation)
        self.loc = nn.Linear(self.trunk.out_features, out_features)
        self.raw_scale = nn.Linear(self.trunk.out_features, out_features)

    @property
    def output_numbers(self) -> int:
        return 2 * self.loc.out_features

    def forward(self, inputs: torch.Tensor) -> Independent:
        return self.distribution_and_features(inputs)[0]

    def distribution_and_features(self, inputs: torch.Tensor) -> tuple[Independent, torch.Tensor]:
        """The distribution and the trunk's last hidden layer ``[..., hidden[-1]]`` (a flow posterior's context)."""
        features = self.trunk(inputs)
        scale = F.softplus(linear(features, self.raw_scale)) + MIN_SCALE
        return Independent(Normal(linear(features, self.loc), scale, validate_args=False), 1, validate_args=False), features


class BernoulliLayer(StochasticLayer):
    """x -> prod_d Bernoulli(sigmoid(l_d(x))), parameterised by logits so log-probabilities are exact.

    Bernoulli targets may be grey values in [0, 1] (binarization 'none'); the distribution then
    skips support validation and ``log_prob`` is the (unnormalised) cross-entropy the homework used.
    """

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.trunk = MLP(in_features, hidden, activation)
        self.logits = nn.Linear(self.trunk.out_features, out_features)

    @property
    def output_numbers(self) -> int:
        return self.logits.out_features

    def forward(self, inputs: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=linear(self.trunk(inputs), self.logits), validate_args=False), 1, validate_args=False)

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(value | inputs) = sum_d [v_d l_d - softplus(l_d)], l = W h + b, without building a distribution.

        inputs ``[..., in]`` and value ``[..., D]`` (broadcastable) give ``[...]``; exact for grey values too.
        """
        logits = linear(self.trunk(inputs), self.logits)
        return (logits * value).sum(-1) - F.softplus(logits).sum(-1)

    def init_output_bias(self, data_mean: torch.Tensor) -> None:
        """Start the logits at the data's mean (Burda et al.'s initialisation): faster early training."""
        with torch.no_grad():
            self.logits.bias.copy_(torch.logit(data_mean.clamp(1e-3, 1 - 1e-3)))



class LikelihoodLayer(StochasticLayer):
    """z -> p(x | params), params = W trunk(z) + b ``[..., heads, D]``: an MLP trunk and one linear
    layer to the ``family``'s heads for each of its D sub-pixels (head-major: row h * D + d)."""

    def __init__(self, in_features: int, family: LikelihoodFamily, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.family = family
        self.data_dim = math.prod(family.data_shape)
        self.trunk = MLP(in_features, hidden, activation)
        self.head = nn.Linear(self.trunk.out_features, family.heads * self.data_dim)

    @property
    def output_numbers(self) -> int:
        return self.head.out_features

    def parameters_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """The family's parameters ``[..., heads, D]`` for inputs ``[..., in]``."""
        return linear(self.trunk(inputs), self.head).unflatten(-1, (self.family.heads, self.data_dim))

    def forward(self, inputs: torch.Tensor) -> Distribution:
        return self.family.distribution(self.parameters_of(inputs))

    def log_prob(self, inputs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """log p(value | inputs) ``[...]`` from the family, without building a distribution."""
        return self.family.log_prob(self.parameters_of(inputs), value)

    def init_output_bias(self, data_mean: torch.Tensor) -> None:
        """Start the output at the family's :meth:`~vaelab.likelihoods.family.LikelihoodFamily.initial_bias` for the data's mean, if it has one."""
        bias = self.family.initial_bias(data_mean)
        if bias is not None:
            with torch.no_grad():
                self.head.bias.copy_(bias.reshape(-1))
