"""The Helmholtz machine: a prior p(z), a generative network p_theta(x|z), a recognition network q_phi(z|x).

theta (prior and generative network) and phi (recognition network) are kept apart so that each
learning algorithm can say which group each of its terms moves.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.models.layers import BernoulliLayer, DiagonalGaussianLayer
from vaelab.models.priors import PRIORS

LIKELIHOOD_LAYERS = {"bernoulli": BernoulliLayer, "gaussian": DiagonalGaussianLayer}


class HelmholtzMachine(nn.Module):
    """p_theta(x, z) = p(z) p_theta(x | z) with recognition model q_phi(z | x).

    Args:
        prior: module whose ``forward()`` gives p(z), event shape ``[latent_dim]``.
        generative: module mapping z ``[..., latent_dim]`` to p_theta(x | z), event shape ``[data_dim]``.
        recognition: module mapping x ``[..., data_dim]`` to q_phi(z | x), event shape ``[latent_dim]``.
    """

    def __init__(self, prior: nn.Module, generative: nn.Module, recognition: nn.Module, latent_dim: int):
        super().__init__()
        self.prior = prior
        self.generative = generative
        self.recognition = recognition
        self.latent_dim = latent_dim

    def prior_distribution(self) -> Distribution:
        return self.prior()

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p_theta(x | z) for z ``[..., latent_dim]``; batch shape ``[...]``."""
        return self.generative(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p_theta(x | z) ``[...]`` for z ``[..., latent_dim]`` and x broadcastable to ``[..., data_dim]``."""
        return self.generative.log_prob(z, x)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q_phi(z | x) for x ``[..., data_dim]``; batch shape ``[...]``."""
        return self.recognition(x)

    def generative_parameters(self) -> list[nn.Parameter]:
        """theta: the prior's and the generative network's parameters."""
        return [*self.prior.parameters(), *self.generative.parameters()]

    def recognition_parameters(self) -> list[nn.Parameter]:
        """phi: the recognition network's parameters."""
        return list(self.recognition.parameters())


def build_model(config: ModelConfig, data_dim: int, likelihood: str) -> HelmholtzMachine:
    """The MLP Helmholtz machine of ``config`` for data of ``data_dim`` pixels.

    ``likelihood`` is the dataset's ('bernoulli' or 'gaussian'); ``config.likelihood`` overrides it
    unless it is 'auto'.
    """
    if config.likelihood != "auto":
        likelihood = config.likelihood
    prior = PRIORS[config.prior](config.latent_dim)
    generative = LIKELIHOOD_LAYERS[likelihood](config.latent_dim, data_dim, config.hidden, config.activation)
    recognition = DiagonalGaussianLayer(data_dim, config.latent_dim, config.hidden, config.activation)
    return HelmholtzMachine(prior, generative, recognition, config.latent_dim)
