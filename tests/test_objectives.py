"""Objectives: closed forms, unbiasedness, and which parameters each term moves."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.exact.linear_gaussian import (
    linear_gaussian_log_marginal,
    linear_gaussian_model,
)
from vaelab.objectives import aevb, importance_samples, wake_sleep
from vaelab.objectives.core import sleep_phase


def closed_form_elbo(model, x):
    """ELBO of the linear-Gaussian model under its Gaussian q, exactly:
    E_q[log N(x; Wz + b, s^2)] - KL(q || N(0, I))."""
    q = model.posterior(x)
    mu, sd = q.base_dist.loc, q.base_dist.scale  # [B, Dz]
    weight, bias, noise = model.generative.weight, model.generative.bias, model.generative.scale
    residual = x - mu @ weight.T - bias  # [B, Dx]
    trace = (sd**2) @ (weight**2).T  # [B, Dx]: diag(W diag(sd^2) W^T)
    expected_log_likelihood = (
        -0.5 * torch.log(2 * math.pi * noise**2) - (residual**2 + trace) / (2 * noise**2)
    ).sum(-1)
    kl = 0.5 * (mu**2 + sd**2 - 1 - torch.log(sd**2)).sum(-1)
    return expected_log_likelihood - kl


@pytest.mark.algebra
def test_analytic_kl_matches_closed_form():
    mu = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    sd = torch.tensor([[0.5, 1.7], [0.2, 1.0]], dtype=torch.float64)
    q = Independent(Normal(mu, sd), 1)
    p = Independent(Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), 1)
    expected = 0.5 * (mu**2 + sd**2 - 1 - torch.log(sd**2)).sum(-1)
    torch.testing.assert_close(kl_divergence(q, p), expected)


@pytest.mark.algebra
def test_elbo_equals_log_marginal_when_q_is_the_exact_posterior():
    # Orthogonal columns make the exact posterior diagonal, so q = p(z|x) and every log-weight equals log p(x).
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    model = linear_gaussian_model(weight, torch.zeros(3, dtype=torch.float64), noise_scale=0.7)
    x = torch.tensor([[0.5, -1.0, 0.3], [2.0, 0.1, -0.4]], dtype=torch.float64)
    log_weights = importance_samples(model, x, 7, torch.Generator().manual_seed(0)).log_weights
    torch.testing.assert_close(log_weights, linear_gaussian_log_marginal(model, x).expand(7, 2))
    exact = linear_gaussian_log_marginal(model, x)
    torch.testing.assert_close(closed_form_elbo(model, x), exact)  # KL(q || posterior) = 0
    estimate = aevb(model, x, 3, torch.Generator().manual_seed(1), kl="monte-carlo").bound  # zero variance
    torch.testing.assert_close(estimate, exact)


@pytest.mark.slow
@pytest.mark.parametrize("kl", ["analytic", "monte-carlo"])
@pytest.mark.statistics
def test_aevb_value_is_unbiased_for_the_closed_form_elbo(linear_gaussian, kl):
    model, x = linear_gaussian
    estimate = aevb(model, x, num_samples=20_000, generator=torch.Generator().manual_seed(0), kl=kl).bound
    # Tolerance: the Monte Carlo standard error with 20k samples is below 0.01 nats per example here.
    torch.testing.assert_close(estimate, closed_form_elbo(model, x), atol=0.05, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kl", ["analytic", "monte-carlo"])
@pytest.mark.statistics
def test_aevb_gradient_is_unbiased_for_the_exact_elbo_gradient(linear_gaussian, kl):
    model, x = linear_gaussian
    parameters = list(model.parameters())
    exact = torch.autograd.grad(closed_form_elbo(model, x).mean(), parameters)
    generator = torch.Generator().manual_seed(0)
    draws = [  # 20 independent estimates, 1000 samples per point each
        torch.autograd.grad(aevb(model, x, 1000, generator, kl=kl).theta_surrogate.mean(), parameters)
        for _ in range(20)
    ]
    for index, exact_grad in enumerate(exact):
        estimates = torch.stack([draw[index] for draw in draws])
        mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(len(draws))
        # every component within 4 standard errors of the exact gradient (fixed seed)
        assert ((mean - exact_grad).abs() <= 4 * stderr + 1e-9).all(), (index, mean - exact_grad, stderr)
    # and the test has power: the gradients are far larger than the estimator's standard error
    assert max(g.abs().max() for g in exact) > 50 * max(torch.stack([d[i] for d in draws]).std(0).max() / math.sqrt(20) for i in range(len(exact)))


@pytest.mark.gradients
def test_aevb_gradient_matches_finite_differences():
    # With the noise fixed, the reparameterised surrogate is a deterministic function of the
    # parameters: autograd must agree with finite differences (float64 gradcheck).
    model = build_model(ModelConfig(latent_dim=2, hidden=(6,), activation="tanh"), data_dim=4, likelihood="bernoulli").double()
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    weight = model.recognition.loc.weight

    def functional(parameter):
        # rebuild the forward pass with `parameter` in place of the weight, so gradcheck can differentiate
        original = model.recognition.loc.weight
        del model.recognition.loc.weight
        model.recognition.loc.weight = parameter
        try:
            return aevb(model, x, 3, torch.Generator().manual_seed(5), kl="monte-carlo").theta_surrogate
        finally:
            model.recognition.loc.weight = original

    assert torch.autograd.gradcheck(functional, (weight.detach().clone().requires_grad_(),))


@pytest.mark.gradients
def test_wake_sleep_phases_move_only_their_own_parameters():
    # One surrogate serves both groups: its theta-gradient must be the wake phase's alone and its
    # phi-gradient the sleep phase's alone, each recomputed here from the same draws.
    model = build_model(ModelConfig(latent_dim=2, hidden=(8,)), data_dim=6, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((5, 6), 0.4), generator=torch.Generator().manual_seed(0))
    output = wake_sleep(model, x, num_samples=3, generator=torch.Generator().manual_seed(1))
    theta, phi = model.generative_parameters(), model.recognition_parameters()
    on_theta = torch.autograd.grad(output.theta_surrogate.sum(), theta, retain_graph=True)
    on_phi = torch.autograd.grad(output.phi_surrogate.sum(), phi)

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        posterior = model.posterior(x)
    wake = importance_samples(model, x, 3, generator, posterior, reparameterize=False).log_joint.mean(0)
    sleep = sleep_phase(model, 5, 3, generator)
    for actual, expected in zip((*on_theta, *on_phi), (*torch.autograd.grad(wake.sum(), theta), *torch.autograd.grad(sleep.sum(), phi))):
        torch.testing.assert_close(actual, expected)
        assert expected.abs().sum() > 0
    assert not output.bound.requires_grad


@pytest.mark.statistics
def test_wake_sleep_sleep_phase_fits_q_to_dreams_of_the_exact_posterior():
    # On the linear-Gaussian model, E_{p(z,x)}[log q(z|x)] is maximised by q = p(z|x): the sleep
    # gradient at the exact posterior's mean map vanishes in expectation.
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    model = linear_gaussian_model(weight, torch.zeros(3, dtype=torch.float64), noise_scale=0.7)
    x = torch.zeros(2000, 3, dtype=torch.float64)
    output = wake_sleep(model, x, num_samples=10, generator=torch.Generator().manual_seed(3))
    gradients = torch.autograd.grad(output.phi_surrogate.mean(), model.recognition_parameters())
    for gradient in gradients:  # 20k dreams: standard error of each component about 0.01
        assert gradient.abs().max() < 0.05
