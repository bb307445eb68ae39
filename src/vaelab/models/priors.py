"""Priors p(z) over the top stochastic layer: modules whose ``forward()`` returns a distribution with
event shape ``[latent_dim]``.

- ``standard-normal``: N(0, I), fixed.
- ``mixture``: a learnable mixture of C diagonal Gaussians, sum_c pi_c N(mu_c, diag sigma_c^2).
- ``vamp``: the VampPrior (Tomczak & Welling 2018), (1/K) sum_k q_phi(z | u_k) with K learnable
  pseudo-inputs u_k; it shares the recognition network.
- ``bernoulli``: prod_d Bernoulli(sigmoid(a_d)) with learnable logits, for binary latents.

As in :mod:`vaelab.models.layers`, the distributions skip ``torch.distributions``' argument
checks: their parameters are valid by construction, and a non-finite one is caught by the
training loop's checks (each check is a host read).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
)
from torch.nn import functional as F


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I); no parameters (buffers only, so it follows the model across devices)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Independent:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)


class BernoulliPrior(nn.Module):
    """p(z) = prod_d Bernoulli(sigmoid(a_d)), with the logits a ``[D]`` as parameters (zero: p = 1/2)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self) -> Independent:
        return Independent(Bernoulli(logits=self.logits, validate_args=False), 1, validate_args=False)


class MixturePrior(nn.Module):
    """p(z) = sum_c softmax(w)_c N(z; mu_c, diag softplus(s_c)^2): C learnable diagonal Gaussians.

    The means start at N(0, I) draws and the scales at 1, so the initial prior is a spread-out
    version of the standard normal.
    """

    def __init__(self, latent_dim: int, components: int):
        super().__init__()
        self.mixture_logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((components, latent_dim), _inverse_softplus(1.0)))

    def forward(self) -> MixtureSameFamily:
        components = Independent(Normal(self.loc, F.softplus(self.raw_scale), validate_args=False), 1, validate_args=False)
        return MixtureSameFamily(Categorical(logits=self.mixture_logits, validate_args=False), components, validate_args=False)


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q_phi(z | u_k) for K learnable pseudo-inputs u_k ``[K, data_dim]``.

    The recognition network is the model's own: it is held as a plain reference, not registered
    as a submodule, so its parameters stay in phi and are saved once.
    """

    def __init__(self, data_dim: int, components: int, recognition: nn.Module):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.rand(components, data_dim))
        self.__dict__["recognition"] = recognition  # unregistered on purpose: see the docstring

    def init_pseudo_inputs(self, images: torch.Tensor) -> None:
        """Start the pseudo-inputs at ``images`` ``[K, data_dim]`` (e.g. random training images)."""
        with torch.no_grad():
            self.pseudo_inputs.copy_(images)

    def forward(self) -> MixtureSameFamily:
        components = self.recognition(self.pseudo_inputs)  # batch [K], event [latent_dim]
        uniform = torch.zeros_like(self.pseudo_inputs[:, 0])
        return MixtureSameFamily(Categorical(logits=uniform, validate_args=False), components, validate_args=False)


def _inverse_softplus(value: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(value))))


def build_prior(name: str, latent_dim: int, components: int, data_dim: int, recognition: nn.Module) -> nn.Module:
    """The prior called ``name`` over ``latent_dim`` latents (``components``: mixture or VampPrior size)."""
    if name == "standard-normal":
        return StandardNormalPrior(latent_dim)
    if name == "bernoulli":
        return BernoulliPrior(torch.zeros(latent_dim))
    if name == "mixture":
        return MixturePrior(latent_dim, components)
    if name == "vamp":
        return VampPrior(data_dim, components, recognition)
    raise ValueError(f"unknown prior {name!r}")

