"""The importance-weighted bound: exact algebra, chunking, and convergence on a tractable model."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.estimators.bounds import (
    DEFAULT_MAX_ROWS,
    block_bound,
    bound_and_k_hat,
    decoder_rows,
    bound_curve,
    evaluate_bound,
    evaluate_bound_and_k_hat,
    evaluate_bound_curve_and_k_hat,
    importance_weighted_bound,
    log_weights_in_chunks,
    mean_and_standard_error,
)
from vaelab.estimators.pareto import pareto_k_hat
from vaelab.exact.linear_gaussian import (
    linear_gaussian_log_marginal,
    linear_gaussian_model,
)
from vaelab.models.backend import matmul_precision
from vaelab.objectives import log_mean_exp


@pytest.mark.algebra
def test_log_mean_exp_is_stable_and_exact():
    values = torch.tensor([[-1000.0, 3.0], [-1001.0, 1.0], [-999.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([-1000.0 + math.log((1 + math.exp(-1) + math.exp(1)) / 3), math.log((math.e**3 + math.e + math.e**2) / 3)], dtype=torch.float64)
    torch.testing.assert_close(log_mean_exp(values, 0), expected)


@pytest.mark.parametrize("k,max_rows", [(1, 4096), (7, 3), (1000, 64), (1001, 4096)])
@pytest.mark.algebra
def test_chunked_bound_is_exact_when_weights_are_constant(k, max_rows):
    # With q equal to the exact posterior every weight is p(x), so L_k = log p(x) for any k and
    # any chunking; this checks the running logaddexp and the 1/k normalisation.
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    model = linear_gaussian_model(weight, torch.zeros(3, dtype=torch.float64), noise_scale=0.7)
    x = torch.tensor([[0.5, -1.0, 0.3], [2.0, 0.1, -0.4]], dtype=torch.float64)
    bound = importance_weighted_bound(model, x, k, torch.Generator().manual_seed(0), max_rows=max_rows)
    torch.testing.assert_close(bound, linear_gaussian_log_marginal(model, x))


@pytest.mark.slow
@pytest.mark.statistics
def test_bound_is_below_log_marginal_increases_with_k_and_converges(linear_gaussian):
    model, x = linear_gaussian
    exact = linear_gaussian_log_marginal(model, x)  # [64]
    generator = torch.Generator().manual_seed(0)
    gap, stderr = {}, {}
    for k in (1, 10, 100, 1000, 5000):
        # log p(x) - L_k over 64 points x 5 independent draws
        gaps = torch.stack([exact - importance_weighted_bound(model, x, k, generator) for _ in range(5)])
        gap[k], stderr[k] = mean_and_standard_error(gaps.flatten())
    ks = sorted(gap)
    # Statistical tolerance: 3 standard errors (of the gap, or of the difference of two gaps).
    assert all(gap[k] > -3 * stderr[k] for k in ks), (gap, stderr)  # E[L_k] <= log p(x)
    for smaller, larger in zip(ks, ks[1:]):  # E[L_k] non-decreasing in k
        assert gap[larger] < gap[smaller] + 3 * math.hypot(stderr[smaller], stderr[larger]), (gap, stderr)
    assert gap[1] > 0.1 and gap[1] > 3 * stderr[1], gap  # the mean-field q is visibly loose at k = 1 ...
    assert gap[10] > gap[100] > 0, gap  # ... strictly tighter with k where the gap is measurable ...
    assert abs(gap[5000]) < 0.05, gap  # ... and within 0.05 nats of log p(x) at k = 5000


@pytest.mark.algebra
def test_evaluate_bound_batches_and_matches_shapes(linear_gaussian):
    model, x = linear_gaussian
    values = evaluate_bound(model, x, 5, torch.Generator().manual_seed(0), batch_size=10)
    assert values.shape == (64,)
    assert torch.isfinite(values).all()


@pytest.mark.algebra
def test_rejects_nonpositive_k(linear_gaussian):
    model, x = linear_gaussian
    with pytest.raises(ValueError, match="positive"):
        importance_weighted_bound(model, x, 0)


@pytest.mark.algebra
def test_mean_and_standard_error():
    mean, stderr = mean_and_standard_error(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == pytest.approx(2.5)
    assert stderr == pytest.approx(math.sqrt(5 / 3) / 2)


@pytest.mark.algebra
def test_block_bound_is_the_mean_of_disjoint_block_estimates():
    log_weights = torch.log(torch.tensor([[1.0], [3.0], [2.0], [6.0]], dtype=torch.float64))
    torch.testing.assert_close(block_bound(log_weights, 2), torch.tensor([(math.log(2.0) + math.log(4.0)) / 2], dtype=torch.float64))
    torch.testing.assert_close(block_bound(log_weights, 4), torch.tensor([math.log(3.0)], dtype=torch.float64))
    torch.testing.assert_close(block_bound(log_weights, 1), log_weights.mean(0))
    with pytest.raises(ValueError, match="divide"):
        block_bound(log_weights, 3)


@pytest.mark.algebra
def test_bound_curve_agrees_with_single_draws(linear_gaussian):
    model, x = linear_gaussian
    curve = bound_curve(model, x, (1, 10, 100), torch.Generator().manual_seed(0), batch_size=16)
    assert set(curve) == {1, 10, 100} and curve[10].shape == (64,)
    for k in (1, 10, 100):
        single = torch.stack([importance_weighted_bound(model, x, k, torch.Generator().manual_seed(s)) for s in range(20)])
        # Same expectation as single draws. A block estimate's variance is at most a single draw's
        # (v_i per point), so the mean difference over 64 points has standard error <= sqrt(mean(v) * 1.05 / 64).
        difference = (curve[k] - single.mean(0)).mean()
        stderr = math.sqrt(single.var(0).mean() * (1 + 1 / 20) / 64)
        assert abs(difference) < 4 * stderr, (k, difference, stderr)


@pytest.mark.algebra
def test_bf16_matmuls_move_the_bound_by_a_small_stated_amount():
    # Same samples (same seed) scored with bfloat16 matmuls: each image's L_k moves by far less
    # than a nat on the homework's architecture (measured on MNIST's trained AEVB model: 0.02 nats on average).
    torch.manual_seed(0)
    model = build_model(ModelConfig(), data_dim=784, likelihood="bernoulli")
    images = torch.bernoulli(torch.full((20, 784), 0.15), generator=torch.Generator().manual_seed(1))
    full = evaluate_bound(model, images, 200, torch.Generator().manual_seed(2))
    with matmul_precision("bf16"):
        reduced = evaluate_bound(model, images, 200, torch.Generator().manual_seed(2))
    assert reduced.dtype == torch.float32
    assert 0 < (full - reduced).abs().max() < 0.5  # bf16 did run, and moved each L_k by less than half a nat
    torch.testing.assert_close(evaluate_bound(model, images, 200, torch.Generator().manual_seed(2)), full)  # fp32 again after the block


@pytest.mark.parametrize("k,max_rows", [(10, 4096), (300, 4096), (300, 128), (1000, 50)])
@pytest.mark.algebra
def test_k_hat_rides_on_the_same_draws_as_the_bound(linear_gaussian, k, max_rows):
    # bound_and_k_hat keeps only a running top of the weights: its L_k must be the very numbers of
    # importance_weighted_bound (the same draws, bitwise), and its k-hat that of all k weights.
    model, x = linear_gaussian
    bound, k_hat = bound_and_k_hat(model, x, k, torch.Generator().manual_seed(3), max_rows)
    assert torch.equal(bound, importance_weighted_bound(model, x, k, torch.Generator().manual_seed(3), max_rows))
    expected = pareto_k_hat(log_weights_in_chunks(model, x, k, torch.Generator().manual_seed(3), max_rows))
    torch.testing.assert_close(k_hat, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(k_hat).all() == (k < 25)


@pytest.mark.algebra
def test_the_curve_with_k_hat_rides_on_the_evaluations_draws(linear_gaussian):
    # L_100 of the curve is the running evaluation's on the same seed (one log-sum-exp against a
    # running one: rounding only), its k-hat the very same, and its other k those of bound_curve.
    model, x = linear_gaussian
    generators = [torch.Generator().manual_seed(5) for _ in range(2)]
    curve, k_hats = evaluate_bound_curve_and_k_hat(model, x, (1, 10, 100), generators[0], batch_size=17)
    bounds, expected_k_hats = evaluate_bound_and_k_hat(model, x, 100, generators[1], batch_size=17)
    assert torch.equal(generators[0].get_state(), generators[1].get_state())  # the same draws: what comes after (the ELBO) is unchanged
    torch.testing.assert_close(curve[100], bounds, rtol=0, atol=1e-5)
    assert torch.equal(k_hats, expected_k_hats)
    expected_curve = bound_curve(model, x, (1, 10, 100), torch.Generator().manual_seed(5), batch_size=17)
    assert all(torch.equal(curve[k], expected_curve[k]) for k in (1, 10, 100))


@pytest.mark.algebra
def test_evaluate_bound_and_k_hat_matches_evaluate_bound(linear_gaussian):
    model, x = linear_gaussian
    bounds, k_hats = evaluate_bound_and_k_hat(model, x, 100, torch.Generator().manual_seed(5), batch_size=17)
    assert torch.equal(bounds, evaluate_bound(model, x, 100, torch.Generator().manual_seed(5), batch_size=17))
    assert k_hats.shape == (64,) and torch.isfinite(k_hats).all()


@pytest.mark.contract
def test_wide_decoders_are_evaluated_in_fewer_rows():
    """A categorical decoder of 32x32x3 8-bit images gives 256 x 3,072 numbers a row: a chunk holds
    2^24 // 786,432 = 21 rows, not 4,096 (12 GiB a tensor); MNIST's Bernoulli decoder keeps 4,096,
    and a hand-written layer that does not give its width keeps the rows asked for."""
    colour = build_model(ModelConfig(latent_dim=4, hidden=(8,), likelihood="categorical", architecture="conv"), 3072, "categorical", (3, 32, 32), 256)
    assert decoder_rows(colour) == 2**24 // (256 * 3072) == 21
    assert decoder_rows(build_model(ModelConfig(hidden=(8,)), 784, "bernoulli", (1, 28, 28), 2)) == DEFAULT_MAX_ROWS
    weight = torch.ones(3, 2, dtype=torch.float64)
    assert decoder_rows(linear_gaussian_model(weight, torch.zeros(3, dtype=torch.float64), noise_scale=0.7), 64) == 64
