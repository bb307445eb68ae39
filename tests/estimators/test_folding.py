"""Active-unit folding: the same per-image L_k as the dense decoder on the same draws, and the dense
path for every decoder it does not apply to."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.estimators import folding
from vaelab.estimators.bounds import bound_curve, importance_weighted_bound
from vaelab.exact.linear_gaussian import linear_gaussian_model
from vaelab.models.backend import matmul_precision

pytestmark = pytest.mark.algebra

DATA_DIM = 64
# Per-image tolerance on L_k between the two paths: rounding only (the figures).
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def _model(latent_dim, likelihood, dtype, posterior_sd, activation="relu", hidden=(128,)):
    """A seeded model whose q(z|x) has standard deviations about ``posterior_sd`` (softplus of the
    raw scale's bias), concentrated like a trained model's or broad like an untrained one's."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=latent_dim, hidden=hidden, activation=activation), DATA_DIM, likelihood).to(dtype)
    with torch.no_grad():
        model.recognition.raw_scale.weight.mul_(0.01)
        model.recognition.raw_scale.bias.fill_(torch.log(torch.expm1(torch.tensor(posterior_sd))).item())
    return model


def _data(likelihood, dtype, grey=False):
    generator = torch.Generator().manual_seed(1)
    probabilities = torch.rand(6, DATA_DIM, generator=generator)
    if likelihood == "gaussian" or grey:
        return probabilities.to(dtype)
    return torch.bernoulli(probabilities, generator=generator).to(dtype)


def _bounds_both_ways(model, x, k, max_rows=256):
    """Per-image L_k ``[B]`` folded and dense, from the same seed, and the generators' states after."""
    values, states = {}, {}
    for mode in ("always", "never"):
        generator = torch.Generator().manual_seed(7)
        with folding.folding_mode(mode):
            values[mode] = importance_weighted_bound(model, x, k, generator, max_rows=max_rows)
        states[mode] = generator.get_state()
    assert torch.equal(states["always"], states["never"]), "folding must not change the draws"
    return values["always"], values["never"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("latent_dim", [2, 16])
@pytest.mark.parametrize("posterior_sd", [0.05, 1.0], ids=["concentrated", "broad"])
def test_folded_bound_equals_dense_bound_on_the_same_draws(latent_dim, likelihood, dtype, posterior_sd):
    model = _model(latent_dim, likelihood, dtype, posterior_sd)
    x = _data(likelihood, dtype)
    folded, dense = _bounds_both_ways(model, x, k=300)
    assert folded.dtype == dense.dtype == dtype and folded.shape == (6,)
    assert torch.isfinite(dense).all()
    torch.testing.assert_close(folded, dense, rtol=0, atol=TOLERANCE[dtype])


def test_concentrated_posterior_has_units_on_off_and_crossing():
    # The test above exercises every branch of the fold only if all three kinds of unit occur.
    model = _model(2, "bernoulli", torch.float64, 0.05)
    x = _data("bernoulli", torch.float64)
    with torch.no_grad():
        decoder = folding.foldable_decoder(model)
        z = model.posterior(x).rsample((300,))
    low, high = folding.preactivation_range(decoder, z, max_rows=256)
    on, off = (low >= 0).sum(1), (high <= 0).sum(1)
    crossing = decoder.hidden - on - off
    assert (on > 0).all() and (off > 0).all() and (crossing > 0).all(), (on, off, crossing)
    assert folding.width_ratio(*folding.preactivation_bounds(decoder, z), 300, 2) < folding.FOLD_WIDTH_RATIO  # auto folds here


@pytest.mark.parametrize("latent_dim", [2, 16])
def test_box_bounds_hold_every_samples_preactivation_and_leave_units_of_each_kind_undecided(latent_dim):
    model = _model(latent_dim, "bernoulli", torch.float64, 0.05)
    x = _data("bernoulli", torch.float64)
    with torch.no_grad():
        decoder = folding.foldable_decoder(model)
        z = model.posterior(x).rsample((300,))
    low, high = folding.preactivation_range(decoder, z, max_rows=256)
    bound_low, bound_high = folding.preactivation_bounds(decoder, z)
    assert (bound_low <= low + 1e-12).all() and (bound_high >= high - 1e-12).all()
    undecided = (bound_low < 0) & (bound_high > 0)
    assert (undecided >= ((low < 0) & (high > 0))).all()
    # the fold's per-image refinement meets both kinds the bounds cannot place: units on, and units off, for every sample
    assert (undecided & (low >= 0)).any() and (undecided & (high <= 0)).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_grey_bernoulli_targets_fold_to_the_dense_cross_entropy(dtype):
    model = _model(16, "bernoulli", dtype, 0.05)
    x = _data("bernoulli", dtype, grey=True)
    folded, dense = _bounds_both_ways(model, x, k=100)
    torch.testing.assert_close(folded, dense, rtol=0, atol=TOLERANCE[dtype])


def test_log_sigmoid_sum_recovers_from_underflow():
    # Pixels predicted wrongly by 40 nats each: a group's product of sigmoids underflows in fp32.
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(50, 5, generator=generator)
    weight = torch.randn(5, 64, generator=generator)
    weight[:, :16] *= 40
    expected = F.logsigmoid((features @ weight).double()).sum(-1)
    torch.testing.assert_close(folding.log_sigmoid_sum(features, weight).double(), expected, rtol=0, atol=1e-3)
    assert torch.isfinite(folding.log_sigmoid_sum(features, weight)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_sigmoid_sum_is_exact_beyond_its_clamp(dtype):
    # Logits far past +-80 (the clamp that keeps the sigmoid off subnormal floats): one row with a
    # factor below the clamp, one above it, one with both, one moderate; against logsigmoid's sum.
    t = torch.tensor([[-95.0] + [3.0] * 63, [120.0] + [2.0] * 63, [-300.0, 300.0] + [-1.0] * 62, [0.5] * 64], dtype=dtype)
    features, weight = t, torch.eye(64, dtype=dtype)  # features @ weight = t
    expected = F.logsigmoid(t.double()).sum(-1)
    torch.testing.assert_close(folding.log_sigmoid_sum(features, weight).double(), expected, rtol=0, atol=TOLERANCE[dtype])
    assert folding.log_sigmoid_sum(features, weight)[0] < -95 + 1  # the clamped factor's row was recomputed, not clamped


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_saturated_pixels_are_those_saturated_at_every_corner_of_the_box(dtype):
    # Brute force: a linear function's minimum over a box is at a corner. One image, D = 2, three
    # crossing units of six: enumerate the 2^5 corners of (z_1, z_2, h_1, h_2, h_3).
    generator = torch.Generator().manual_seed(0)
    pixels, hidden = 96, 6
    folded_weight = torch.randn(1, 2, pixels, generator=generator, dtype=dtype) * 5
    weight2_t = torch.randn(hidden, pixels, generator=generator, dtype=dtype) * 5
    signs = torch.where(torch.rand(1, pixels, generator=generator) < 0.5, -1.0, 1.0).to(dtype)
    folded_bias = signs * (folding.SATURATED_LOGIT[dtype] + 4 * torch.randn(1, pixels, generator=generator, dtype=dtype))
    z = torch.stack([torch.tensor([[-0.3, 0.2]]), torch.tensor([[0.1, 0.5]]), torch.tensor([[0.0, 0.3]])]).to(dtype)  # [n = 3, 1, 2]
    crossing_high = torch.tensor([[0.4, 0.0, 0.9, 0.0, 0.2, 0.0]], dtype=dtype)
    corners = torch.cartesian_prod(*(torch.tensor(ends, dtype=dtype) for ends in ([-0.3, 0.1], [0.2, 0.5], [0, 0.4], [0, 0.9], [0, 0.2])))
    crossing_weight = weight2_t[[0, 2, 4]]  # the crossing units' rows
    outputs = corners[:, :2] @ folded_weight[0] + folded_bias[0] + corners[:, 2:] @ crossing_weight  # [32, O]
    expected = (signs[0] * outputs).amin(0) >= folding.SATURATED_LOGIT[dtype]
    assert 10 < expected.sum() < 86, "both kinds of pixel should occur"
    found = folding.saturated_pixels(folded_weight, folded_bias, weight2_t, z, crossing_high, signs)
    assert torch.equal(found[0], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_pixels_the_decoder_is_sure_of_are_skipped_without_changing_the_bound(dtype, monkeypatch):
    # Half the pixels are 1 in every image and the decoder's logits there sit 5 above the
    # saturation threshold (the rest of the logit varies by well under 5 at this init): each
    # image's fold must certify exactly that half, and the bound must not move.
    model = _model(2, "bernoulli", dtype, 0.05)
    x = _data("bernoulli", dtype)
    x[:, : DATA_DIM // 2] = 1
    with torch.no_grad():
        model.generative.logits.bias[: DATA_DIM // 2] = folding.SATURATED_LOGIT[dtype] + 5
    found = []
    original = folding.saturated_pixels
    monkeypatch.setattr(folding, "saturated_pixels", lambda *args: found.append(original(*args)) or found[-1])
    folded, dense = _bounds_both_ways(model, x, k=300)
    torch.testing.assert_close(folded, dense, rtol=0, atol=TOLERANCE[dtype])
    assert found and all(torch.equal(mask, (torch.arange(DATA_DIM) < DATA_DIM // 2).expand_as(mask)) for mask in found)


def test_log_sigmoid_sum_of_no_columns_is_zero():
    assert torch.equal(folding.log_sigmoid_sum(torch.ones(3, 4), torch.ones(4, 0)), torch.zeros(3))


def test_bound_curve_is_the_same_folded_and_dense():
    model = _model(2, "bernoulli", torch.float64, 0.05)
    x = _data("bernoulli", torch.float64)
    curves = {}
    for mode in ("always", "never"):
        with folding.folding_mode(mode):
            curves[mode] = bound_curve(model, x, (1, 10, 100), torch.Generator().manual_seed(3), batch_size=4)
    for k in (1, 10, 100):
        torch.testing.assert_close(curves["always"][k], curves["never"][k], rtol=0, atol=1e-9)


def test_auto_folds_a_concentrated_posterior_and_not_a_broad_one(monkeypatch):
    calls = []
    original = folding.folded_log_likelihood
    monkeypatch.setattr(folding, "folded_log_likelihood", lambda *args: calls.append(1) or original(*args))
    x = _data("bernoulli", torch.float32)
    importance_weighted_bound(_model(2, "bernoulli", torch.float32, 0.05, hidden=(512,)), x, 1000, torch.Generator().manual_seed(0))
    assert calls, "a concentrated q should fold"
    calls.clear()
    importance_weighted_bound(_model(2, "bernoulli", torch.float32, 3.0, hidden=(512,)), x, 1000, torch.Generator().manual_seed(0))
    assert not calls, "a broad q (every unit crossing) should take the dense path"


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: _model(2, "bernoulli", torch.float32, 0.05, activation="tanh"), id="tanh"),
        pytest.param(lambda: _model(2, "gaussian", torch.float32, 0.05, hidden=(32, 32)), id="two-hidden-layers"),
        pytest.param(lambda: linear_gaussian_model(torch.ones(3, 2), torch.zeros(3), noise_scale=0.5), id="no-hidden-layer"),
    ],
)
def test_other_decoders_take_the_dense_path(model):
    with torch.no_grad():
        assert folding.foldable_decoder(model()) is None


def test_folding_stays_out_of_autograd_bf16_and_when_switched_off():
    model = _model(2, "bernoulli", torch.float32, 0.05)
    assert folding.foldable_decoder(model) is None  # gradients enabled: training never folds
    with torch.no_grad():
        assert folding.foldable_decoder(model) is not None
        with matmul_precision("bf16"):
            assert folding.foldable_decoder(model) is None
        with folding.folding_mode("never"):
            assert folding.foldable_decoder(model) is None
    with pytest.raises(ValueError):
        with folding.folding_mode("sometimes"):
            pass
