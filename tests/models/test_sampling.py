"""Ancestral sampling, the one function behind the sleep phase's dreams, the bounds study's
synthetic data and the report's sample figure."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.data.binarize import binarize
from vaelab.draws import bernoulli_draw
from vaelab.models.sampling import ancestral_sample, sample
from vaelab.objectives.core import sleep_phase
from vaelab.studies.compare.analysis import prior_sample_means


@pytest.mark.statistics
def test_ancestral_sample_has_the_marginal_of_the_linear_gaussian_model(linear_gaussian):
    # z ~ N(0, I), x | z ~ N(W z + b, s^2 I) gives x ~ N(b, W W^T + s^2 I)
    model, _ = linear_gaussian
    weight, bias, noise = model.generative.weight.detach(), model.generative.bias.detach(), model.generative.scale.detach()
    covariance = weight @ weight.T + torch.diag(noise**2)
    n = 40_000
    z, x = ancestral_sample(model, (n,), torch.Generator().manual_seed(0))
    assert z.shape == (n, 2) and x.shape == (n, 5) and not z.requires_grad and not x.requires_grad
    # Tolerances: 4 standard errors, sqrt(S_ii / n) for a mean and sqrt((S_ii S_jj + S_ij^2) / n) for a covariance
    variances = covariance.diagonal()
    assert ((x.mean(0) - bias).abs() <= 4 * (variances / n).sqrt()).all()
    centred = x - bias
    sample_covariance = centred.T @ centred / n
    covariance_se = ((variances[:, None] * variances[None, :] + covariance**2) / n).sqrt()
    assert ((sample_covariance - covariance).abs() <= 4 * covariance_se).all(), (sample_covariance - covariance) / covariance_se
    assert (covariance_se < 0.05 * covariance.abs().max()).all()  # power: a wrong noise scale or a missing W W^T would show


@pytest.mark.algebra
def test_ancestral_sample_is_the_prior_then_the_likelihood_on_one_generator():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=(4, 3), hidden=(8,), upper_hidden=(6,), latent="bernoulli", prior="bernoulli"), data_dim=10, likelihood="bernoulli")
    z, x = ancestral_sample(model, (7, 2), torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    expected_z = sample(model.prior_distribution(), (7, 2), generator)
    expected_x = sample(model.likelihood(expected_z), (), generator)
    assert z.shape == (7, 2, 7) and x.shape == (7, 2, 10)
    assert torch.equal(z, expected_z) and torch.equal(x, expected_x)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.algebra
def test_decoder_mean_returns_e_x_given_z_and_draws_nothing_more():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(8,)), data_dim=6, likelihood="bernoulli")
    generator = torch.Generator().manual_seed(3)
    z, mean = ancestral_sample(model, (5,), generator, decoder_mean=True)
    torch.testing.assert_close(mean, model.likelihood(z).mean)
    after_z_alone = torch.Generator().manual_seed(3)
    sample(model.prior_distribution(), (5,), after_z_alone)
    assert torch.equal(generator.get_state(), after_z_alone.get_state())
    torch.testing.assert_close(prior_sample_means(model, 5, torch.Generator().manual_seed(3)), mean)


@pytest.mark.algebra
def test_sleep_phase_scores_q_at_the_ancestral_samples():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(8,)), data_dim=6, likelihood="bernoulli")
    z, x = ancestral_sample(model, (3, 4), torch.Generator().manual_seed(5))  # m = 3 dreams for each of B = 4 rows
    expected = model.posterior(x).log_prob(z).mean(0)
    torch.testing.assert_close(sleep_phase(model, 4, 3, torch.Generator().manual_seed(5)), expected)
    assert math.isfinite(expected.sum().item())


@pytest.mark.statistics
def test_bernoulli_draw_has_the_bernoulli_distribution_elementwise():
    probs = torch.tensor([0.0, 1e-3, 0.13, 0.5, 0.87, 1.0], dtype=torch.float64)
    n = 200_000
    draws = bernoulli_draw(probs.expand(n, -1), torch.Generator().manual_seed(0))
    assert draws.shape == (n, 6) and draws.dtype == torch.float64 and set(draws.unique().tolist()) <= {0.0, 1.0}
    # 0 and 1 exactly; elsewhere within 4 standard errors sqrt(p (1 - p) / n) of p
    assert draws[:, 0].sum() == 0 and draws[:, -1].sum() == n
    error = (draws.mean(0) - probs).abs()[1:-1]
    assert (error <= 4 * (probs * (1 - probs) / n).sqrt()[1:-1]).all(), error
    # independent draws: the correlation of successive draws at p = 0.5 is within 4 / sqrt(n) of zero
    centred = draws[:, 3] - 0.5
    assert abs((centred[1:] * centred[:-1]).mean() / 0.25) < 4 / math.sqrt(n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.algebra
def test_bernoulli_draw_gives_torch_bernoullis_very_bits_on_the_cpu(dtype):
    # torch.bernoulli on the CPU compares one uniform per element with p, in order, from the same
    # stream: a run trains on the same pixels and dreams with vaelab.draws as with torch.bernoulli.
    probs = torch.rand(300, 784, generator=torch.Generator().manual_seed(1), dtype=dtype)
    expected = torch.bernoulli(probs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(bernoulli_draw(probs, torch.Generator().manual_seed(5)), expected)
    # drawn into a reused buffer (as a training epoch draws its binarization): the same bits, in the buffer
    buffer = torch.full_like(probs, 7.0)
    drawn = bernoulli_draw(probs, torch.Generator().manual_seed(5), out=buffer)
    assert drawn.data_ptr() == buffer.data_ptr() and torch.equal(buffer, expected)
    for wrong in (torch.empty(300, 783, dtype=dtype), torch.empty(784, 300, dtype=dtype).T):  # another shape; not contiguous
        with pytest.raises(ValueError, match="contiguous tensor of probs' shape"):
            bernoulli_draw(probs, torch.Generator().manual_seed(5), out=wrong)


@pytest.mark.algebra
def test_dynamic_binarization_draws_afresh_and_static_keeps_torch_bernoulli():
    grey = torch.rand(50, 784, generator=torch.Generator().manual_seed(1))
    static = binarize(grey, "static", torch.Generator().manual_seed(0))
    assert torch.equal(static, torch.bernoulli(grey, generator=torch.Generator().manual_seed(0)))  # evaluation bits unchanged
    generator = torch.Generator().manual_seed(0)
    first, second = binarize(grey, "dynamic", generator), binarize(grey, "dynamic", generator)
    assert not torch.equal(first, second) and set(first.unique().tolist()) == {0.0, 1.0}
    # pixel means over the two draws follow the grey values: E[x] = grey, Var of the mean <= 1/8 per pixel
    assert ((first + second) / 2 - grey).mean().abs() < 4 * math.sqrt(1 / 8 / grey.numel())
