"""KL warm-up and free bits in aevb's surrogate (Sonderby et al. 2016; Kingma et al. 2016): the
default is today's ELBO bit for bit, beta = 0 leaves E_q[log p(x|z)] alone (checked against the
closed-form KL's gradient), free bits stop the gradient of a layer whose batch-mean KL is below
lambda, and the reported bound is the ELBO throughout. float64 throughout."""

from __future__ import annotations

import pytest
import torch

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.models.sampling import sample
from vaelab.objectives import aevb, importance_samples
from vaelab.objectives.aevb import free_bits_kl, monte_carlo_layer_kls

SEED = 7  # of the posterior samples: every call below draws the same z


def two_layer_model():
    """Two stochastic layers (4 and 2 units): free bits' groups, Monte Carlo KL; with x ``[6, 10]``."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=(4, 2), hidden=(8,), upper_hidden=(6,)), data_dim=10, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((6, 10), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    return model, x


def gradients(surrogate, parameters):
    """d sum_b surrogate_b / d each parameter (zeros where it does not reach it)."""
    return [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(parameters, torch.autograd.grad(surrogate.sum(), parameters, allow_unused=True, retain_graph=True))
    ]


def assert_all_close(left, right):
    for a, b in zip(left, right, strict=True):
        torch.testing.assert_close(a, b)


def run(model, x, **options):
    return aevb(model, x, num_samples=3, generator=torch.Generator().manual_seed(SEED), **options)


@pytest.mark.algebra
def test_free_bits_kl_averages_to_max_of_lambda_and_the_batch_mean():
    kl = torch.tensor([0.1, 0.5, 2.0, 0.2], dtype=torch.float64)  # batch mean 0.7
    for free_bits, mean in ((0.25, 0.7), (0.7, 0.7), (1.5, 1.5)):
        assert free_bits_kl(kl, free_bits).mean().item() == pytest.approx(mean)
    assert free_bits_kl(kl, 0.0) is kl  # off: even a negative Monte Carlo mean is left as it is
    negative = -kl
    assert free_bits_kl(negative, 0.0) is negative


@pytest.mark.parametrize("kl", ["analytic", "monte-carlo"])
@pytest.mark.algebra
def test_full_weight_and_no_free_bits_is_todays_elbo_bit_for_bit(linear_gaussian, kl):
    model, x = linear_gaussian
    output = run(model, x, kl=kl, kl_weight=1.0, free_bits=0.0)
    # today's surrogate, from the same draws
    if kl == "analytic":
        posterior = model.posterior(x)
        z = sample(posterior, (3,), torch.Generator().manual_seed(SEED))
        elbo = model.log_likelihood(x, z).mean(0) - torch.distributions.kl_divergence(posterior, model.prior_distribution())
    else:
        elbo = importance_samples(model, x, 3, torch.Generator().manual_seed(SEED)).log_weights.mean(0)
    assert torch.equal(output.theta_surrogate, elbo) and torch.equal(output.bound, elbo.detach())
    parameters = list(model.parameters())
    for got, expected in zip(gradients(output.theta_surrogate, parameters), gradients(elbo, parameters)):
        assert torch.equal(got, expected)


@pytest.mark.gradients
def test_zero_kl_weight_leaves_the_expected_log_likelihood_alone(linear_gaussian):
    """q = N(A x + c, diag s^2), p(z) = N(0, I): KL = 1/2 sum(mu^2 + s^2 - 1 - log s^2), so
    d sum_b KL_b / dc = sum_b mu_b, / dA = mu^T x, / ds = B (s - 1/s)."""
    model, x = linear_gaussian
    phi = [model.recognition.weight, model.recognition.bias, model.recognition.scale]
    warm, plain = run(model, x, kl="analytic", kl_weight=0.0), run(model, x, kl="analytic")
    torch.testing.assert_close(warm.bound, plain.bound)  # the bound is the ELBO still

    mu = x @ model.recognition.weight.detach().T + model.recognition.bias.detach()  # [B, Dz]
    s = model.recognition.scale.detach()
    kl_gradient = [mu.T @ x, mu.sum(0), x.shape[0] * (s - 1 / s)]  # A, c, s
    by_hand = [a - b for a, b in zip(gradients(warm.phi_surrogate, phi), kl_gradient)]
    assert_all_close(gradients(plain.phi_surrogate, phi), by_hand)

    # and it is the gradient of (1/m) sum_j log p(x | z_j) alone, z_j the same reparameterised draws
    z = sample(model.posterior(x), (3,), torch.Generator().manual_seed(SEED))
    expected_log_likelihood = model.log_likelihood(x, z).mean(0)
    assert_all_close(gradients(warm.phi_surrogate, list(model.parameters())), gradients(expected_log_likelihood, list(model.parameters())))


@pytest.mark.algebra
def test_layer_kls_sum_to_the_monte_carlo_kl():
    model, x = two_layer_model()
    samples = importance_samples(model, x, 3, torch.Generator().manual_seed(SEED))
    layer_kls = monte_carlo_layer_kls(model, model.posterior(x), samples.z)
    assert len(layer_kls) == 2 and all(kl.shape == (6,) for kl in layer_kls)
    torch.testing.assert_close(layer_kls[0] + layer_kls[1], (samples.log_proposal - samples.log_prior).mean(0))
    # layer 2 (the top, 2 units): log q(z_2 | z_1) - log p(z_2)
    z1, z2 = samples.z.split((4, 2), dim=-1)
    top = (model.upper_recognition[0].log_prob(z1, z2) - model.prior().log_prob(z2)).mean(0)
    torch.testing.assert_close(layer_kls[1], top)


@pytest.mark.gradients
def test_free_bits_stop_the_gradient_of_each_layer_below_lambda_only():
    model, x = two_layer_model()
    phi = model.recognition_parameters()
    samples = importance_samples(model, x, 3, torch.Generator().manual_seed(SEED))
    expected_log_likelihood = samples.log_likelihood.mean(0)
    layer_kls = monte_carlo_layer_kls(model, model.posterior(x), samples.z)
    means = sorted(kl.mean().item() for kl in layer_kls)
    assert means[0] < means[1]  # so a lambda can lie between them
    plain = run(model, x, kl="monte-carlo")

    above_all = run(model, x, kl="monte-carlo", free_bits=means[1] + 1.0)
    assert_all_close(gradients(above_all.phi_surrogate, phi), gradients(expected_log_likelihood, phi))  # no KL gradient at all
    below_all = run(model, x, kl="monte-carlo", free_bits=means[0] / 2)
    assert_all_close(gradients(below_all.phi_surrogate, phi), gradients(plain.phi_surrogate, phi))

    between = run(model, x, kl="monte-carlo", free_bits=(means[0] + means[1]) / 2)
    larger = max(layer_kls, key=lambda kl: kl.mean().item())
    assert_all_close(gradients(between.phi_surrogate, phi), gradients(expected_log_likelihood - larger, phi))
    # the surrogate's batch mean is E_q[log p(x|z)] - sum_l max(lambda, mean KL_l)
    lam = (means[0] + means[1]) / 2
    assert between.theta_surrogate.mean().item() == pytest.approx(expected_log_likelihood.mean().item() - lam - means[1])
    for output in (above_all, below_all, between):
        assert torch.equal(output.bound, plain.bound)  # the bound is the ELBO, whatever lambda


@pytest.mark.gradients
def test_warm_up_and_free_bits_together_weigh_the_free_bits_kl():
    model, x = two_layer_model()
    samples = importance_samples(model, x, 3, torch.Generator().manual_seed(SEED))
    layer_kls = monte_carlo_layer_kls(model, model.posterior(x), samples.z)
    lam = min(kl.mean().item() for kl in layer_kls) / 2  # below both: each layer's plain KL
    output = run(model, x, kl="monte-carlo", kl_weight=0.25, free_bits=lam)
    expected = samples.log_likelihood.mean(0) - 0.25 * (layer_kls[0] + layer_kls[1])
    torch.testing.assert_close(output.theta_surrogate, expected)
    parameters = list(model.parameters())
    assert_all_close(gradients(output.theta_surrogate, parameters), gradients(expected, parameters))
