"""Quadrature for 2-D latents: against closed forms, a brute-force grid and a bimodal posterior."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.exact.linear_gaussian import (
    linear_gaussian_log_marginal,
    linear_gaussian_model,
)
from vaelab.exact.quadrature import (
    QuadratureSettings,
    log_joint_at,
    log_marginal_2d,
    quadrature_log_marginal,
    square_grid,
)
from vaelab.models import HelmholtzMachine, StandardNormalPrior, StochasticLayer
from vaelab.models.sampling import ancestral_sample

pytestmark = pytest.mark.algebra


def brute_force_log_marginal(model, x, points=1000, half_width=8.0):
    """The midpoint rule on one fine grid over [-a, a]^2: slow, but with no adaptivity to get wrong."""
    u, spacing = square_grid(points, half_width)
    log_joint = log_joint_at(model, x, u.to(x.dtype).unsqueeze(1), max_rows=1 << 20)
    return torch.logsumexp(log_joint.double(), 0) + 2 * math.log(spacing)


def test_square_grid_tiles_the_square():
    u, spacing = square_grid(4, 1.0)
    assert spacing == 0.5 and u.shape == (16, 2)
    torch.testing.assert_close(u[:4, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=torch.float64))
    assert u.sum() == 0  # symmetric midpoints


@pytest.mark.parametrize("noise_scale,gain", [(0.5, 1.0), (0.01, 30.0)])  # a broad posterior, and one ~1000x narrower than the prior
def test_quadrature_matches_the_closed_form(linear_gaussian, noise_scale, gain):
    broad, _ = linear_gaussian
    model = linear_gaussian_model(gain * broad.generative.weight.detach(), broad.generative.bias.detach(), noise_scale)
    _, x = ancestral_sample(model, (16,), torch.Generator().manual_seed(0))
    result = log_marginal_2d(model, x)
    exact = linear_gaussian_log_marginal(model, x).detach()
    error = (result.log_marginal - exact).abs()
    assert error.max() < 1e-3, error.max()  # the requirement; in practice ~1e-8 on a Gaussian integrand
    # the error estimate bounds the error, up to the closed form's own float64 rounding (~1e-8 when the posterior is narrow)
    assert (result.error + 1e-8 >= error).all() and result.error.max() < 1e-3, (result.error, error)


@pytest.mark.slow
def test_quadrature_matches_a_brute_force_grid_on_an_mlp_decoder():
    # A random ReLU decoder: a non-Gaussian posterior with kinks, as in trained models (float32).
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(16,)), data_dim=12, likelihood="bernoulli").eval()
    with torch.no_grad():
        model.generative.logits.weight.mul_(4)  # a posterior narrower than the prior
    x = torch.bernoulli(torch.full((6, 12), 0.5), generator=torch.Generator().manual_seed(1))
    result = quadrature_log_marginal(model, x, batch_size=4)
    reference = brute_force_log_marginal(model, x)
    error = (result.log_marginal - reference).abs()
    # Brute force at spacing 0.016 agrees with itself at 0.032 to ~1e-6 here; float32 log-joints add ~1e-6.
    assert error.max() < 1e-3, error
    assert (result.error >= error).all(), (result.error, error)


class SquareGaussian(StochasticLayer):
    """z -> N(x; (z_1^2, z_2), s^2 I): for x_1 > 0 the posterior has two modes, z_1 = +-sqrt(x_1)."""

    def __init__(self, noise_scale: float):
        super().__init__()
        self.noise_scale = noise_scale

    def forward(self, z):
        loc = torch.stack([z[..., 0] ** 2, z[..., 1]], -1)
        return Independent(Normal(loc, torch.full_like(loc, self.noise_scale)), 1)


@pytest.mark.slow
def test_a_bimodal_posterior_is_refined_until_within_tolerance():
    # q is never used by the quadrature: an identity stands in for the recognition network
    model = HelmholtzMachine(StandardNormalPrior(2).double(), SquareGaussian(noise_scale=0.5), nn.Identity(), 2)
    x = torch.tensor([[4.0, 0.3], [1.0, -0.5], [0.1, 0.0]], dtype=torch.float64)  # modes 4 sd apart, 2 sd apart, merged
    settings = QuadratureSettings()
    result = log_marginal_2d(model, x, settings)
    error = (result.log_marginal - brute_force_log_marginal(model, x, points=2000, half_width=4.0)).abs()
    assert error.max() < 1e-3, error
    assert (result.error <= settings.tolerance).all() and (result.error >= error).all(), (result.error, error)
    coarse = log_marginal_2d(model, x, QuadratureSettings(max_points=settings.points))  # no refinement
    assert coarse.error[0] > settings.tolerance  # the far-apart modes needed it


def test_quadrature_needs_a_2d_latent():
    model = build_model(ModelConfig(latent_dim=3, hidden=(4,)), data_dim=5, likelihood="bernoulli")
    with pytest.raises(ValueError, match="2-D latent"):
        log_marginal_2d(model, torch.zeros(1, 5))


class TwoBumps(StochasticLayer):
    """log p(x | z) = log [N(z; mu_1, s^2 I) + a N(z; mu_2, s^2 I)] with x = (mu_1, mu_2, log a) ``[5]``.

    Under p(z) = N(0, I) the posterior has a major mode near mu_1 and a minor one near mu_2, and
    p(x) = N(mu_1; 0, (1 + s^2) I) + a N(mu_2; 0, (1 + s^2) I) exactly (a Gaussian convolution).
    Only ``log_prob`` is used: the quadrature never samples x.
    """

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def log_prob(self, inputs, value):
        bump = lambda mean: Independent(Normal(mean, self.scale), 1).log_prob(inputs)
        return torch.logaddexp(bump(value[..., 0:2]), value[..., 4] + bump(value[..., 2:4]))

    def log_marginal(self, x):
        spread = Independent(Normal(torch.zeros(2, dtype=x.dtype), math.sqrt(1 + self.scale**2)), 1)
        return torch.logaddexp(spread.log_prob(x[:, 0:2]), x[:, 4] + spread.log_prob(x[:, 2:4]))


def test_a_separated_minor_mode_gets_its_own_fine_grid():
    # The defect of issue 15: the locating grids narrow onto the major mode and the final box left out a minor mode
    # holding ~1% of the mass, so log p(x) came out low by -log(1 - 0.01) ~ 0.01 nats, unseen by the error estimate.
    layer = TwoBumps(scale=0.1)
    model = HelmholtzMachine(StandardNormalPrior(2).double(), layer, nn.Identity(), 2)
    x = torch.tensor(
        [
            [0.0, 0.0, 2.5, 0.0, math.log(0.22)],  # minor mode (1% of the mass) 25 posterior sd to the right
            [0.5, -0.5, -2.0, 2.0, math.log(0.1)],  # minor mode (1%) far up and to the left
            [0.0, 0.0, 1.5, 1.5, math.log(0.002)],  # a tiny one (2e-4 of the mass): below the threshold for its own grid
            [0.3, 0.2, 0.0, 0.0, -math.inf],  # unimodal
        ],
        dtype=torch.float64,
    )
    settings = QuadratureSettings()
    result = log_marginal_2d(model, x, settings)
    exact = layer.log_marginal(x)
    error = (result.log_marginal - exact).abs()
    assert error.max() < 1e-3, error  # was [0.0099, 0.0109, 2e-4, 0] before the fix
    assert (result.error >= error).all() and (result.error < settings.tolerance).all(), (result.error, error)
