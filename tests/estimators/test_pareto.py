"""Pareto k-hat: the shape of known generalized-Pareto samples, and the seed's section 1.5 proposals."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.estimators.bounds import log_weights_in_chunks
from vaelab.estimators.pareto import (
    MIN_SAMPLES,
    RELIABLE_BELOW,
    pareto_k_hat,
    tail_length,
)
from vaelab.exact.counterexample import proposal_models
from vaelab.models.sampling import ancestral_sample


def generalized_pareto_log_samples(shape: float, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """log Y for Y ~ GPD(sigma = 1, xi = shape), by inversion: Y = ((1 - U)^(-xi) - 1) / xi."""
    uniform = torch.rand(size, generator=generator, dtype=torch.float64)
    return torch.log(torch.expm1(-shape * torch.log1p(-uniform)) / shape)


@pytest.mark.algebra
def test_tail_length_is_the_papers():
    assert tail_length(100) == 20 and tail_length(5000) == 213 and tail_length(25) == 5


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9, 1.3])
@pytest.mark.statistics
def test_k_hat_recovers_the_shape_of_generalized_pareto_samples(shape):
    # 200 "images" of k = 5000 weights each; the tail beyond any threshold is again GPD with the same xi.
    log_weights = generalized_pareto_log_samples(shape, (5000, 200), torch.Generator().manual_seed(0)) + 123.0  # any scale of p(x)
    k_hat = pareto_k_hat(log_weights)
    assert k_hat.shape == (200,)
    # M = 213 tail points: the per-image sd is ~(1 + xi) / sqrt(M) ~ 0.1; the prior pulls xi towards 0.5 by ~4% of the difference.
    assert abs(k_hat.mean().item() - shape) < 0.05, k_hat.mean()
    assert k_hat.std().item() < 0.2


@pytest.mark.statistics
def test_k_hat_flags_the_heavy_tailed_counterexample_and_not_the_matched_proposal():
    weight = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    models = proposal_models(weight, torch.zeros(3, dtype=torch.float64), noise_scale=0.5)
    _, x = ancestral_sample(models["matched"], (20,), torch.Generator().manual_seed(0))
    k_hats = {name: pareto_k_hat(log_weights_in_chunks(models[name], x, 5000, torch.Generator().manual_seed(1))) for name in models}
    # light-tailed q (c = 0.2): weights Pareto with xi = 1 - c^2 = 0.96, infinite variance. With M = 213 tail points
    # the per-image sd of k-hat is ~0.13, so a few of 20 images may fall under 0.7; the fraction flagged is what is reported.
    light = k_hats["light-tailed"]
    assert light.mean() > 0.8 and (light > RELIABLE_BELOW).double().mean() >= 0.8, light
    # matched q (c = 1.5): weights bounded by c^D p(x), a negative xi
    assert (k_hats["matched"] < 0.5).all() and k_hats["matched"].mean() < 0, k_hats["matched"]
    # The truncated q misses 3/4 of the posterior, but its weights are bounded where it draws: k-hat cannot see
    # mass that q never visits (the limit of any diagnostic built from q's own draws).
    assert (k_hats["truncated"] < 0.5).all(), k_hats["truncated"]


@pytest.mark.algebra
def test_tied_and_too_few_weights():
    assert pareto_k_hat(torch.zeros(100, 3)).eq(-math.inf).all()  # equal weights: no tail at all
    assert pareto_k_hat(torch.randn(MIN_SAMPLES - 1, 3)).isnan().all()
    assert pareto_k_hat(torch.randn(MIN_SAMPLES, 3)).isfinite().all()
