"""Latent-variable models whose log p(x) is known exactly, for checking estimators against the truth.

Linear-Gaussian (probabilistic PCA) model:

    p(z) = N(0, I_Dz),   p(x | z) = N(W z + b, sigma^2 I_Dx)
    => p(x) = N(b, W W^T + sigma^2 I),   p(z | x) = N(S W^T (x - b) / sigma^2, S),  S = (I + W^T W / sigma^2)^-1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from vaelab.models import HelmholtzMachine, StandardNormalPrior, StochasticLayer


class AffineGaussian(StochasticLayer):
    """u -> N(A u + c, diag(s^2)) with A ``[out, in]``, c ``[out]``, s ``[out]`` as parameters."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.scale = nn.Parameter(scale.clone())

    def forward(self, inputs: torch.Tensor) -> Independent:
        loc = inputs @ self.weight.T + self.bias
        return Independent(Normal(loc, self.scale.expand_as(loc)), 1)


def linear_gaussian_posterior(weight: torch.Tensor, bias: torch.Tensor, noise_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact posterior's affine mean map (A, c) and covariance S: p(z|x) = N(A x + c, S)."""
    latent_dim = weight.shape[1]
    precision = torch.eye(latent_dim, dtype=weight.dtype) + weight.T @ weight / noise_scale**2
    covariance = torch.linalg.inv(precision)
    mean_map = covariance @ weight.T / noise_scale**2
    return mean_map, -mean_map @ bias, covariance


def linear_gaussian_model(
    weight: torch.Tensor, bias: torch.Tensor, noise_scale: float, posterior_scale_factor: float = 1.0
) -> HelmholtzMachine:
    """A Helmholtz machine for the linear-Gaussian model with a mean-field recognition model.

    q(z|x) has the exact posterior mean and the square root of its covariance's diagonal times
    ``posterior_scale_factor``: exact when W has orthogonal columns and the factor is 1, otherwise
    a mean-field approximation whose bound L_k sits strictly below log p(x).
    """
    mean_map, offset, covariance = linear_gaussian_posterior(weight, bias, noise_scale)
    generative = AffineGaussian(weight, bias, torch.full((weight.shape[0],), float(noise_scale), dtype=weight.dtype))
    recognition = AffineGaussian(mean_map, offset, covariance.diagonal().sqrt() * posterior_scale_factor)
    prior = StandardNormalPrior(weight.shape[1]).to(weight.dtype)
    return HelmholtzMachine(prior, generative, recognition, weight.shape[1])


def linear_gaussian_log_marginal(model: HelmholtzMachine, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) ``[B]`` of a model built by :func:`linear_gaussian_model` (its current parameters)."""
    weight, bias, scale = model.generative.weight, model.generative.bias, model.generative.scale
    covariance = weight @ weight.T + torch.diag(scale**2)
    return MultivariateNormal(bias, covariance_matrix=covariance).log_prob(x)
