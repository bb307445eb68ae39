"""Pareto k-hat of importance weights (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed
importance sampling", JMLR 2024): how heavy the upper tail of an image's weights w = p(x, z) / q(z|x) is.

The largest M = ceil(min(k / 5, 3 sqrt(k))) of k weights, minus the (M+1)-th largest (the threshold
u), are fitted by a generalized Pareto distribution

    GPD(y; sigma, xi):  P(Y > y) = (1 + xi y / sigma)^(-1 / xi),

whose shape xi is k-hat. The weights have finite moments of order < 1 / xi, so k-hat < 0.5: finite
variance, L_k converges fast; 0.5 < k-hat < 0.7: usable but slow; k-hat > 0.7: the estimate of
p(x) is unreliable at any practical k (the paper's section 3.2 threshold, min(1 - 1/log10(k), 0.7)).

The fit is Zhang & Stephens (2009, Technometrics), a posterior-weighted average over a grid of
m = 30 + floor(sqrt(M)) values of theta = -xi / sigma, followed by PSIS's weak prior that shrinks
xi towards 0.5 as if by 10 extra observations: xi <- (M xi + 5) / (M + 10). Both as in the
reference implementations (loo, arviz ``_gpdfit``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["MIN_SAMPLES", "RELIABLE_BELOW", "generalized_pareto_shape", "k_hat_of_largest", "pareto_k_hat", "tail_length"]

RELIABLE_BELOW = 0.7  # Vehtari et al.'s threshold on k-hat
MIN_SAMPLES = 25  # below this the tail has at most 4 points; k-hat is reported as nan
PRIOR_STRENGTH = 10.0  # PSIS's weak prior: 10 pseudo-observations ...
PRIOR_SHAPE = 0.5  # ... at xi = 0.5


def tail_length(num_samples: int) -> int:
    """M = ceil(min(k / 5, 3 sqrt(k))): how many of k weights form the fitted tail."""
    return math.ceil(min(0.2 * num_samples, 3 * math.sqrt(num_samples)))


def generalized_pareto_shape(exceedances: torch.Tensor) -> torch.Tensor:
    """Zhang & Stephens' estimate of xi, with PSIS's weak prior, per column of ``exceedances`` ``[M, B]``
    (positive values sorted ascending along dim 0); returns ``[B]`` (float64). A column whose largest
    value is 0 (all weights tied) gets -inf: no tail at all."""
    y = exceedances.double()
    count = y.shape[0]
    grid_size = 30 + math.isqrt(count)
    j = torch.arange(1, grid_size + 1, dtype=torch.float64, device=y.device)
    quartile = y[int(count / 4 + 0.5) - 1]  # [B]
    largest = y[-1]
    safe_largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    safe_quartile = torch.where(quartile > 0, quartile, safe_largest)
    # theta grid [m, B] (Zhang & Stephens' eq. 4, with b = -theta): theta_j = 1/y_(M) + (1 - sqrt(m / (j - 1/2))) / (3 y_(M/4))
    theta = 1 / safe_largest + (1 - torch.sqrt(grid_size / (j - 0.5)))[:, None] / (3 * safe_quartile)
    xi_grid = torch.log1p(-theta[:, None, :] * y[None]).mean(1)  # [m, B]: the profile MLE of xi given theta
    profile = count * (torch.log(-theta / xi_grid) - xi_grid - 1)  # [m, B]: profile log-likelihood
    weights = torch.softmax(profile, 0)
    theta_hat = (weights * theta).sum(0)
    xi = torch.log1p(-theta_hat * y).mean(0)
    xi = (count * xi + PRIOR_STRENGTH * PRIOR_SHAPE) / (count + PRIOR_STRENGTH)
    return torch.where(largest > 0, xi, torch.full_like(xi, -math.inf))


def pareto_k_hat(log_weights: torch.Tensor) -> torch.Tensor:
    """Per-image k-hat ``[B]`` (float64) of importance log-weights ``[k, B]`` (module docstring).

    Works on log-weights shifted by each image's maximum, so any scale of p(x) is safe. nan where
    k < MIN_SAMPLES.
    """
    num_samples, batch = log_weights.shape
    if num_samples < MIN_SAMPLES:
        return torch.full((batch,), math.nan, dtype=torch.float64, device=log_weights.device)
    return k_hat_of_largest(torch.topk(log_weights.double(), tail_length(num_samples) + 1, dim=0).values, num_samples)


def k_hat_of_largest(largest: torch.Tensor, num_samples: int) -> torch.Tensor:
    """k-hat ``[B]`` from the ``tail_length(num_samples) + 1`` largest of ``num_samples`` log-weights per image
    ``[M + 1, B]`` (any order): what a caller that streams the weights in chunks keeps (a running top-k),
    to the same numbers as :func:`pareto_k_hat` on all of them. nan where num_samples < MIN_SAMPLES."""
    if num_samples < MIN_SAMPLES:
        return torch.full(largest.shape[1:], math.nan, dtype=torch.float64, device=largest.device)
    top = largest.double().sort(0).values  # [M + 1, B], ascending; top[0] = threshold
    shifted = top - top[-1]
    exceedances = torch.exp(shifted[1:]) - torch.exp(shifted[:1])  # [M, B]: w - u, in units of the largest weight
    return generalized_pareto_shape(exceedances)
