"""Objectives: closed forms, unbiasedness and which parameters each term moves (AEVB, wake-sleep), the
algorithms beyond them (IWAE, DReG, RWS, VIMCO, MIWAE, PIWAE, CIWAE), every registered one's
contract, and the latent layers and priors they run on.

Statistical tests use fixed seeds; each states its tolerance in standard errors (SE) of the
Monte Carlo average it checks, and checks its own power where a loose SE could hide a bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaelab.builders import build_model
from vaelab.config import ExperimentConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.exact.linear_gaussian import (
    AffineGaussian,
    linear_gaussian_log_marginal,
    linear_gaussian_model,
    linear_gaussian_posterior,
)
from vaelab.exact.sigmoid_belief import all_configurations, sigmoid_belief_model
from vaelab.models import HelmholtzMachine, StandardNormalPrior
from vaelab.models.priors import MixturePrior
from vaelab.models.sampling import sample
from vaelab.objectives import OBJECTIVES, aevb, check_config, importance_samples, log_mean_exp, wake_sleep
from vaelab.objectives.core import sleep_phase
from vaelab.objectives.vimco import leave_one_out_bounds
from vaelab.posteriors import get_posterior


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


# How each objective's reported bound is formed from its log-weights ``[k, B]`` (with the OPTIONS
# below: k = 6 samples, or 2 groups of 3 for miwae and piwae). A new objective must say, or the
# contract test fails.
def _elbo(log_weights):
    return log_weights.mean(0)


REPORTED_BOUND = {
    "aevb": _elbo,
    "wake-sleep": _elbo,
    "iwae": log_mean_exp,
    "iwae-dreg": log_mean_exp,
    "rws": log_mean_exp,
    "rws-dreg": log_mean_exp,
    "vimco": log_mean_exp,
    "miwae": lambda log_weights: (log_mean_exp(log_weights[:3]) + log_mean_exp(log_weights[3:])) / 2,
    "piwae": log_mean_exp,
    "ciwae": lambda log_weights: 0.25 * log_weights.mean(0) + 0.75 * log_mean_exp(log_weights),
}
OPTIONS = {"aevb": {"kl": "monte-carlo"}, "miwae": {"groups": 2}, "piwae": {"groups": 2}, "ciwae": {"ciwae_beta": 0.25}}
SAMPLES = {"miwae": 3, "piwae": 3}  # per group

MODELS = {  # model variants of the contract test
    "gaussian": ModelConfig(latent_dim=3, hidden=(8,)),
    "two-layer-mixture": ModelConfig(latent_dim=(4, 2), hidden=(8,), upper_hidden=(6,), prior="mixture", prior_components=3),
    "vamp": ModelConfig(latent_dim=3, hidden=(8,), prior="vamp", prior_components=4),
    "bernoulli": ModelConfig(latent_dim=(4, 3), hidden=(8,), upper_hidden=(6,), latent="bernoulli", prior="bernoulli"),
    "conv": ModelConfig(latent_dim=3, architecture="conv"),  # strided convolutions over x as a 2x5 image
    **{flow: ModelConfig(latent_dim=3, hidden=(8,), posterior=flow, flow_steps=2) for flow in ("iaf", "planar", "householder")},
    # ladders of three stochastic layers: top-down inference through the generative path (vaelab.models.ladder)
    "ladder-precision": ModelConfig(latent_dim=(4, 3, 2), hidden=(8,), upper_hidden=(6,), architecture="ladder"),
    "ladder-residual": ModelConfig(latent_dim=(4, 3, 2), hidden=(8,), upper_hidden=(6,), architecture="ladder", ladder_merge="residual"),
    "conv-ladder": ModelConfig(latent_dim=(2, 2, 1), architecture="conv-ladder", ladder_merge="residual"),
}
DATA_SHAPES = {"conv": (1, 2, 5), "conv-ladder": (1, 2, 5)}  # the others see x as a flat [10]


@pytest.mark.contract
def test_every_objective_states_its_reported_bound():
    assert set(REPORTED_BOUND) == set(OBJECTIVES)


def _contract_cases():
    for variant, model_config in MODELS.items():
        for name, objective in sorted(OBJECTIVES.items()):
            if model_config.latent == "bernoulli" and objective.reparameterized:
                continue  # refused by the config (test below)
            if objective.scores_given_z and not get_posterior(model_config.posterior).log_prob:
                continue  # refused by the config (tests/posteriors)
            yield pytest.param(name, variant, id=f"{name}-{variant}")


@pytest.mark.parametrize("name, variant", list(_contract_cases()))
@pytest.mark.contract
def test_objective_contract(name, variant):
    torch.manual_seed(0)
    model = build_model(MODELS[variant], data_dim=10, likelihood="bernoulli", data_shape=DATA_SHAPES.get(variant))
    x = torch.bernoulli(torch.full((5, 10), 0.3), generator=torch.Generator().manual_seed(0))
    k = SAMPLES.get(name, 6)
    output = OBJECTIVES[name].function(model, x, num_samples=k, generator=torch.Generator().manual_seed(7), **OPTIONS.get(name, {}))

    for tensor in (output.bound, output.theta_surrogate, output.phi_surrogate):
        assert tensor.shape == (5,)
        assert torch.isfinite(tensor).all()
    assert not output.bound.requires_grad

    # the value is the bound itself: recomputed from the same draws (same generator seed; every
    # objective draws its k posterior samples first)
    log_weights = importance_samples(model, x, 6, torch.Generator().manual_seed(7)).log_weights.detach()
    torch.testing.assert_close(output.bound, REPORTED_BOUND[name](log_weights))

    # each surrogate moves its own group: a finite gradient, not zero everywhere
    theta, phi = model.generative_parameters(), model.recognition_parameters()
    for surrogate, group in ((output.theta_surrogate, theta), (output.phi_surrogate, phi)):
        gradients = torch.autograd.grad(surrogate.sum(), group, allow_unused=True, retain_graph=True)
        present = [g for g in gradients if g is not None]
        assert present and all(torch.isfinite(g).all() for g in present)
        assert sum(g.abs().sum() for g in present) > 0


@pytest.mark.parametrize("algorithm", sorted(name for name, objective in OBJECTIVES.items() if objective.reparameterized))
@pytest.mark.contract
def test_reparameterised_objectives_refuse_bernoulli_latents(algorithm):
    model = ModelConfig(latent="bernoulli", prior="bernoulli")
    with pytest.raises(ConfigError, match="cannot train Bernoulli latents"):
        check_config(ExperimentConfig(model=model, train=TrainConfig(algorithm=algorithm, kl="monte-carlo", num_samples=2)))


@pytest.mark.algebra
def test_vimco_needs_two_samples_and_analytic_kl_needs_the_standard_normal():
    with pytest.raises(ConfigError, match="vimco needs num_samples >= 2"):
        check_config(ExperimentConfig(train=TrainConfig(algorithm="vimco", num_samples=1)))
    with pytest.raises(ConfigError, match="analytic KL"):
        check_config(ExperimentConfig(model=ModelConfig(prior="mixture"), train=TrainConfig(algorithm="aevb", kl="analytic")))
    check_config(ExperimentConfig(model=ModelConfig(prior="mixture"), train=TrainConfig(algorithm="aevb")))  # kl auto: Monte Carlo


def _gradient_draws(estimator, model, x, k, draws, seed):
    """``[draws, P]`` phi-gradients of the batch-mean phi surrogate, one independent draw per row."""
    generator = torch.Generator().manual_seed(seed)
    phi = model.recognition_parameters()
    rows = []
    for _ in range(draws):
        surrogate = estimator(model, x, num_samples=k, generator=generator).phi_surrogate.mean()
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(surrogate, phi)]))
    return torch.stack(rows)


def _mean_and_se(draws):
    return draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])


@pytest.mark.parametrize("standard, doubly", [("iwae", "iwae-dreg"), ("rws", "rws-dreg")])
@pytest.mark.slow
@pytest.mark.statistics
def test_dreg_phi_gradient_agrees_in_expectation_and_has_lower_variance(linear_gaussian, standard, doubly):
    model, x = linear_gaussian
    with torch.no_grad():
        model.recognition.bias += 0.3  # move q's mean off the posterior's so every gradient is non-zero
    plain = _gradient_draws(OBJECTIVES[standard].function, model, x, k=10, draws=300, seed=0)
    dreg = _gradient_draws(OBJECTIVES[doubly].function, model, x, k=10, draws=300, seed=1)
    (plain_mean, plain_se), (dreg_mean, dreg_se) = _mean_and_se(plain), _mean_and_se(dreg)
    difference_se = (plain_se**2 + dreg_se**2).sqrt()
    # every component agrees within 4 SE of the difference (fixed seeds)
    assert ((plain_mean - dreg_mean).abs() <= 4 * difference_se).all(), (plain_mean - dreg_mean) / difference_se
    # power: the gradient is large against that SE, so a biased estimator would be caught
    assert plain_mean.abs().max() > 20 * difference_se.max()
    # DReG's point: lower variance in total over the components
    assert dreg.var(0).sum() < plain.var(0).sum()


@pytest.mark.slow
@pytest.mark.statistics
def test_phi_gradients_with_a_vamp_prior_agree_in_expectation():
    # The VampPrior's components are q_phi(z | u_k): log p(z) depends on phi directly, a term the
    # DReG and VIMCO surrogates must add back (sum_i w~_i d log p(z_i) / dphi) to stay unbiased
    # for the gradient of L_k that IWAE differentiates.
    torch.manual_seed(0)
    model = build_model(MODELS["vamp"], data_dim=10, likelihood="bernoulli").double()
    x = torch.bernoulli(torch.full((4, 10), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    reference = _gradient_draws(OBJECTIVES["iwae"].function, model, x, k=5, draws=3000, seed=0)
    reference_mean, reference_se = _mean_and_se(reference)
    for name, draws in (("iwae-dreg", 1000), ("vimco", 3000)):
        mean, se = _mean_and_se(_gradient_draws(OBJECTIVES[name].function, model, x, k=5, draws=draws, seed=1))
        difference_se = (se**2 + reference_se**2).sqrt()
        assert ((mean - reference_mean).abs() <= 4 * difference_se).all(), name
        assert reference_mean.abs().max() > 10 * difference_se.max()  # power: the gradient is many SE from zero


@pytest.mark.slow
@pytest.mark.statistics
def test_rws_wake_phi_matches_self_normalised_importance_sampling_of_the_posterior(linear_gaussian):
    # wake-phi estimates E_{p(z|x)}[d log q_phi(z|x) / dphi]; on the linear-Gaussian model the
    # exact posterior N(m, S) gives it in closed form through E_p[log q(z)] =
    # sum_i -log s_i - log(2 pi) / 2 - (S_ii + (m_i - mu_i)^2) / (2 s_i^2).
    model, x = linear_gaussian
    with torch.no_grad():
        model.recognition.bias += 0.3
    generative = model.generative
    mean_map, offset, covariance = linear_gaussian_posterior(generative.weight.detach(), generative.bias.detach(), generative.scale[0].item())
    posterior_mean = x @ mean_map.T + offset
    q = model.posterior(x).base_dist
    expected_log_q = (-q.scale.log() - 0.5 * math.log(2 * math.pi) - (covariance.diagonal() + (posterior_mean - q.loc) ** 2) / (2 * q.scale**2)).sum(-1)
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(expected_log_q.mean(), model.recognition_parameters())])

    draws = _gradient_draws(OBJECTIVES["rws"].function, model, x, k=2000, draws=20, seed=2)
    mean, se = _mean_and_se(draws)
    # within 4 SE plus the self-normalised estimator's O(1/k) bias, bounded here by 1% of the gradient
    assert ((mean - exact).abs() <= 4 * se + 0.01 * exact.abs().max()).all(), (mean - exact, se)
    assert exact.abs().max() > 20 * se.max()


def _exact_expected_bound(model, x, k):
    """E[L_k] ``[B]`` of a model with few binary latents: a sum over all k-tuples of configurations."""
    configurations = all_configurations(model.latent_dim)  # [S, K]
    log_q = model.posterior(x).log_prob(configurations[:, None])  # [S, B]
    log_w = model.prior_distribution().log_prob(configurations[:, None]) + model.log_likelihood(x, configurations[:, None]) - log_q
    tuples = torch.cartesian_prod(*[torch.arange(len(configurations))] * k)  # [S^k, k]
    log_probability = log_q[tuples].sum(1)  # [S^k, B]
    return (log_probability.exp() * log_mean_exp(log_w[tuples], dim=1)).sum(0)


@pytest.mark.slow
@pytest.mark.statistics
def test_vimco_phi_gradient_is_unbiased_on_a_small_discrete_model():
    model = sigmoid_belief_model(latent_dim=3, data_dim=6, generator=torch.Generator().manual_seed(0))
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    k = 3
    phi = model.recognition_parameters()
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(_exact_expected_bound(model, x, k).mean(), phi)])

    replicated = x.repeat(500, 1)  # one VIMCO call draws 500 independent estimates per data point
    draws = _gradient_draws(OBJECTIVES["vimco"].function, model, replicated, k=k, draws=40, seed=3)
    mean, se = _mean_and_se(draws)
    assert ((mean - exact).abs() <= 4 * se).all(), (mean - exact) / se
    assert exact.abs().max() > 20 * se.max()


@pytest.mark.algebra
def test_leave_one_out_bounds_replace_each_weight_by_the_geometric_mean_of_the_others():
    log_weights = torch.tensor([[0.0, -1.0], [2.0, 0.5], [-3.0, 0.0]], dtype=torch.float64)  # [k=3, B=2]
    expected = torch.empty_like(log_weights)
    for i in range(3):
        others = torch.cat([log_weights[:i], log_weights[i + 1 :]])
        replaced = torch.cat([others, others.mean(0, keepdim=True)])
        expected[i] = torch.logsumexp(replaced, 0) - math.log(3)
    torch.testing.assert_close(leave_one_out_bounds(log_weights), expected)


@pytest.mark.statistics
def test_mixture_prior_samples_have_the_mixture_moments():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=2, components=3)
    with torch.no_grad():
        prior.mixture_logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    mixture = prior()
    z = sample(mixture, (200_000,), torch.Generator().manual_seed(0))
    weights = mixture.mixture_distribution.probs
    loc, scale = mixture.component_distribution.base_dist.loc, mixture.component_distribution.base_dist.scale
    mean = (weights[:, None] * loc).sum(0)
    variance = (weights[:, None] * (scale**2 + loc**2)).sum(0) - mean**2
    se = (variance / 200_000).sqrt()
    assert ((z.mean(0) - mean).abs() <= 4 * se).all()
    assert ((z.var(0) - variance).abs() <= 0.02 * variance).all()  # about 4 SE of a variance at 200k draws


@pytest.mark.algebra
def test_two_stochastic_layers_recover_log_marginal_with_the_exact_posterior():
    # p(z2) = N(0, 1), p(z1 | z2) = N(B z2 + d, diag tau^2), p(x | z1) = N(W z1 + b, sigma^2 I).
    # With B = [b1, 0]^T and W^T W diagonal, p(z1 | x) is diagonal and p(z2 | z1, x) = p(z2 | z1)
    # is 1-D, so the mean-field chain q(z1 | x) q(z2 | z1) is the exact posterior: every log-weight
    # equals log p(x), and so does every L_k, with zero variance.
    dtype = torch.float64
    B, d, tau = torch.tensor([[1.5], [0.0]], dtype=dtype), torch.tensor([0.3, -0.2], dtype=dtype), torch.tensor([0.6, 0.8], dtype=dtype)
    W, b, sigma = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=dtype), torch.tensor([0.1, 0.0, -0.4], dtype=dtype), 0.5
    prior_covariance = B @ B.T + torch.diag(tau**2)  # of z1: diagonal here
    precision = torch.linalg.inv(prior_covariance) + W.T @ W / sigma**2
    covariance = torch.linalg.inv(precision)
    map1 = covariance @ W.T / sigma**2
    offset1 = covariance @ torch.linalg.inv(prior_covariance) @ d - map1 @ b
    precision2 = torch.eye(1, dtype=dtype) + B.T @ torch.diag(tau**-2) @ B  # of p(z2 | z1)
    covariance2 = torch.linalg.inv(precision2)
    map2 = covariance2 @ B.T @ torch.diag(tau**-2)
    model = HelmholtzMachine(
        StandardNormalPrior(1).to(dtype),
        AffineGaussian(W, b, torch.full((3,), sigma, dtype=dtype)),
        AffineGaussian(map1, offset1, covariance.diagonal().sqrt()),
        latent_dims=(2, 1),
        upper_generative=[AffineGaussian(B, d, tau)],
        upper_recognition=[AffineGaussian(map2, -map2 @ d, covariance2.diagonal().sqrt())],
    )
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    log_marginal = MultivariateNormal(W @ d + b, W @ prior_covariance @ W.T + sigma**2 * torch.eye(3, dtype=dtype)).log_prob(x)
    log_weights = importance_samples(model, x, 50, torch.Generator().manual_seed(1)).log_weights
    torch.testing.assert_close(log_weights, log_marginal.expand_as(log_weights))


@pytest.mark.algebra
def test_three_stochastic_layers_order_their_blocks():
    # z = [z_1, z_2, z_3]: q draws z_1 | x, z_2 | z_1, z_3 | z_2; p draws z_3, z_2 | z_3, z_1 | z_2.
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=(4, 3, 2), hidden=(8,), upper_hidden=(5,)), data_dim=10, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((6, 10), 0.3), generator=torch.Generator().manual_seed(0))
    z = sample(model.posterior(x), (7,), torch.Generator().manual_seed(1))  # [7, 6, 9]
    z1, z2, z3 = z.split((4, 3, 2), dim=-1)
    up_q, up_p = model.upper_recognition, model.upper_generative
    expected_q = model.recognition(x).log_prob(z1) + up_q[0].log_prob(z1, z2) + up_q[1].log_prob(z2, z3)
    expected_p = model.prior().log_prob(z3) + up_p[1].log_prob(z3, z2) + up_p[0].log_prob(z2, z1)
    torch.testing.assert_close(model.posterior(x).log_prob(z), expected_q)
    torch.testing.assert_close(model.prior_distribution().log_prob(z), expected_p)
    dream = sample(model.prior_distribution(), (5,), torch.Generator().manual_seed(2))
    assert dream.shape == (5, 9)
