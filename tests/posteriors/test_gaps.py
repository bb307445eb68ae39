"""The inference gap split (approximation and amortization) against the linear-Gaussian model's closed form,
and `vaelab evaluate --gaps` on a flow run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY, one_line_error, run_cli
from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.estimators.ais import AISSettings
from vaelab.evaluation.gaps import GapSettings, inference_gaps
from vaelab.exact.linear_gaussian import linear_gaussian_log_marginal, linear_gaussian_posterior


def _kl_to_posterior(mean, variance, posterior_mean, precision):
    """KL(N(mean, diag variance) || N(posterior_mean, precision^-1)) ``[B]`` for mean, variance ``[B, D]``."""
    difference = mean - posterior_mean
    return 0.5 * (
        (variance * precision.diagonal()).sum(-1)
        + torch.einsum("bi,ij,bj->b", difference, precision, difference)
        - mean.shape[-1]
        - torch.logdet(precision)
        - variance.log().sum(-1)
    )


@pytest.mark.slow
@pytest.mark.statistics
def test_gap_split_on_the_linear_gaussian_model_equals_its_closed_form(linear_gaussian):
    # p(z | x) = N(A x + c, S). The diagonal Gaussian closest to it in KL(q || p), the ELBO's optimum
    # in the family, has its mean and variances 1 / (S^-1)_dd, so with ELBO(q) = log p(x) - KL(q || p(z|x)):
    #   approximation gap = KL(q* || p(z|x)),   amortization gap = KL(q_phi || p(z|x)) - KL(q* || p(z|x)).
    model, x = linear_gaussian
    x = x[:6]
    with torch.no_grad():
        model.recognition.bias += 0.2  # the encoder's mean off the posterior's too: both gaps non-zero
    weight, bias, scale = model.generative.weight.detach(), model.generative.bias.detach(), model.generative.scale.detach()
    mean_map, offset, covariance = linear_gaussian_posterior(weight, bias, scale[0].item())
    posterior_mean, precision = x @ mean_map.T + offset, torch.linalg.inv(covariance)
    encoder = model.posterior(x).base_dist
    encoder_kl = _kl_to_posterior(encoder.loc.detach(), encoder.scale.detach() ** 2, posterior_mean, precision)
    optimal_kl = _kl_to_posterior(posterior_mean, (1 / precision.diagonal()).expand_as(posterior_mean), posterior_mean, precision)

    settings = GapSettings(k=20000, steps=2000, learning_rate=0.01, samples=32, ais=AISSettings(steps=500, chains=256))
    gaps = inference_gaps(model, x, settings, torch.Generator().manual_seed(0))

    exact = linear_gaussian_log_marginal(model, x).detach()
    assert ((gaps["log_px"] - exact).abs() < 4 * gaps["log_px_se"] + 0.01).all()
    assert ((gaps["elbo_encoder"] - (exact - encoder_kl)).abs() < 4 * gaps["elbo_encoder_se"]).all()
    # q* is a stochastic optimiser's end point: within 0.01 nats of the optimum, plus the estimate's noise
    assert ((gaps["approximation_gap"] - optimal_kl).abs() < 4 * gaps["approximation_gap_se"] + 0.01).all()
    assert ((gaps["amortization_gap"] - (encoder_kl - optimal_kl)).abs() < 4 * gaps["amortization_gap_se"] + 0.01).all()
    # over the images: a tighter check, with the power to tell the approximation gap (0.04 nats) from zero
    error = (gaps["approximation_gap"] - optimal_kl).mean()
    tolerance = 4 * gaps["approximation_gap_se"].pow(2).sum().sqrt() / x.shape[0] + 0.005
    assert error.abs() < tolerance < optimal_kl.mean() / 2
    assert (encoder_kl - optimal_kl > 0.5).all()  # power: the amortization gap far above its slack
    assert (gaps["convergence"].abs() < 0.02).all()  # Adam's jitter at this learning rate, no trend


@pytest.mark.slow
@pytest.mark.e2e
def test_train_an_iaf_posterior_then_evaluate_its_gaps(tmp_path):
    run = tmp_path / "run"
    status, _, stderr = run_cli("train", *TINY, "--epochs", "1", "--latent-dim", "4", "--posterior", "iaf", "--flow-steps", "2", "--out", run)
    assert status == 0, stderr
    status, stdout, stderr = run_cli("evaluate", run, "--gaps", "--images", "5", "--k", "50", "--steps", "10", "--gap-steps", "40", "--no-progress", "--device", "cpu")
    assert status == 0, stderr
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("log p(x) by AIS (T=10") and "over 5 images" in lines[0]
    assert any(line.startswith("approximation gap") for line in lines) and any(line.startswith("amortization gap") for line in lines)
    saved = np.load(run / "gaps-test-epoch1.npz")
    assert saved["image_index"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(saved["approximation_gap"] + saved["amortization_gap"], saved["log_px"] - saved["elbo_encoder"], atol=1e-4)
    assert np.isfinite(saved["convergence"]).all()


@pytest.mark.e2e
def test_gap_options_are_refused_where_they_do_nothing(tmp_path):
    for args in (["--gaps", "--estimator", "ais"], ["--gap-steps", "5"]):
        status, _, stderr = run_cli("evaluate", tmp_path, *args)
        one_line_error(status, stderr)
        assert "--gap" in stderr


@pytest.mark.e2e
def test_a_refused_objective_is_one_line_on_the_command_line(tmp_path):
    status, _, stderr = run_cli("train", *TINY, "--posterior", "planar", "--algorithm", "vimco", "--num-samples", "2", "--out", tmp_path / "run")
    one_line_error(status, stderr)
    assert "vimco needs log q(z | x) of a given z, which the planar posterior cannot compute" in stderr


@pytest.mark.contract
def test_gaps_refuse_stacked_latents():
    model = build_model(ModelConfig(latent_dim=(4, 2), hidden=(8,), upper_hidden=(6,)), data_dim=10, likelihood="bernoulli")
    with pytest.raises(ConfigError, match="--gaps needs one stochastic layer of Gaussian latents"):
        inference_gaps(model, torch.zeros(2, 10), GapSettings(k=4, steps=2))
