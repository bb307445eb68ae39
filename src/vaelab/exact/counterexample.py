"""The homework's section 1.5 in code: proposals q for which p(x, z) / q(z|x) is unbounded.

The model is linear-Gaussian with orthogonal columns in W, so its posterior is an exact diagonal
Gaussian N(m(x), diag(s^2)) (see :mod:`vaelab.exact.linear_gaussian`) and each q below is defined from it:

- ``matched``: N(m, diag((c s)^2)) with c > 1. The weight p(x) N(z; m, s^2) / q(z) is at most
  c^D p(x): bounded, and L_k -> log p(x) fast (Burda et al.'s theorem).
- ``light-tailed``: the same with c < 1. In q's standard coordinates t, w / p(x) =
  c^D exp((1 - c^2) |t|^2 / 2) is unbounded, and E[w^2] is infinite for c <= 1/sqrt(2). L_k still
  converges to log p(x), but in 2-D, with |t|^2 / 2 ~ Exp(1) and the largest of k draws near log k,
  the mean of k weights is about the truncated mean E[w; |t|^2 / 2 < log k] = p(x) (1 - k^(-c^2)):
  L_k ~ log p(x) + log(1 - k^(-c^2)): at c = 0.2 a gap of 0.1 nats needs k ~ 10^25. (The
  weights are Pareto-tailed with index 1 / (1 - c^2); the constant in front of k^(-c^2) is fitted
  to the measured curve rather than trusted.)
- ``truncated``: m + |N(0, diag((c s)^2))|, supported on the quadrant z >= m only. Where q = 0 the
  weight is infinite but never drawn: L_k converges (weights are bounded on q's support), but to
  log p(x) + log P(z >= m | x) = log p(x) - D log 2, the log of the posterior mass q covers. This
  is the homework's counterexample (q zero where p(x, z) is not), up to the mass q does cover.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import (
    AffineTransform,
    HalfNormal,
    Independent,
    TransformedDistribution,
)

from vaelab.exact.linear_gaussian import (
    AffineGaussian,
    linear_gaussian_model,
    linear_gaussian_posterior,
)
from vaelab.models import HelmholtzMachine

# Posterior standard deviations per proposal standard deviation (c above).
SCALE_FACTORS = {"matched": 1.5, "light-tailed": 0.2, "truncated": 1.5}
FIT_SMALLEST_K = 10  # the light-tailed rate is asymptotic: fit it where k is not tiny


class HalfGaussian(AffineGaussian):
    """u -> A u + c + |N(0, diag(s^2))|: a Gaussian folded onto the quadrant above its mean."""

    def forward(self, inputs: torch.Tensor) -> Independent:
        loc = inputs @ self.weight.T + self.bias
        folded = HalfNormal(self.scale.expand_as(loc), validate_args=False)
        return Independent(TransformedDistribution(folded, AffineTransform(loc, 1.0), validate_args=False), 1)


def proposal_models(weight: torch.Tensor, bias: torch.Tensor, noise_scale: float) -> dict[str, HelmholtzMachine]:
    """The linear-Gaussian model of (W, b, noise) with each proposal of the module docstring as q.

    Raises:
        ValueError: W's columns are not orthogonal (the posterior would not be diagonal).
    """
    gram = weight.T @ weight
    if not torch.allclose(gram, torch.diag(gram.diagonal())):
        raise ValueError("W needs orthogonal columns, so that the exact posterior is diagonal")
    models = {name: linear_gaussian_model(weight, bias, noise_scale, SCALE_FACTORS[name]) for name in ("matched", "light-tailed")}
    mean_map, offset, covariance = linear_gaussian_posterior(weight, bias, noise_scale)
    truncated = HalfGaussian(mean_map, offset, covariance.diagonal().sqrt() * SCALE_FACTORS["truncated"])
    exact = linear_gaussian_model(weight, bias, noise_scale)
    models["truncated"] = HelmholtzMachine(exact.prior, exact.generative, truncated, exact.latent_dim)
    return models


def limit_gap(name: str, latent_dim: int) -> float:
    """lim_k (log p(x) - L_k) in nats: D log 2 for the truncated q (the posterior mass it misses), else 0."""
    return latent_dim * math.log(2) if name == "truncated" else 0.0


def light_tailed_gap(k: torch.Tensor, constant: float) -> torch.Tensor:
    """log p(x) - L_k ~ -log(1 - C k^(-c^2)) for the 2-D light-tailed q (module docstring, where C = 1)."""
    return -torch.log1p(-constant * k.double() ** -(SCALE_FACTORS["light-tailed"] ** 2))


def fit_light_tailed_constant(ks: torch.Tensor, gaps: torch.Tensor) -> float:
    """C of :func:`light_tailed_gap` fitted to measured gaps: exp of the mean of log(1 - e^-gap) + c^2 log k over k >= FIT_SMALLEST_K."""
    keep = ks >= FIT_SMALLEST_K
    log_constants = torch.log(-torch.expm1(-gaps[keep].double())) + SCALE_FACTORS["light-tailed"] ** 2 * torch.log(ks[keep].double())
    return log_constants.mean().exp().item()


def samples_for_gap(gap: float, constant: float) -> float:
    """The k at which :func:`light_tailed_gap` falls to ``gap`` nats: (C / (1 - e^-gap))^(1 / c^2)."""
    return (constant / -math.expm1(-gap)) ** (1 / SCALE_FACTORS["light-tailed"] ** 2)
