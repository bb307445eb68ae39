"""Layers: distributions, the fused Bernoulli log-likelihood and the oneDNN matmul path."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch.distributions import Bernoulli, Independent

from vaelab.builders import build_model
from vaelab.config import ModelConfig
from vaelab.likelihoods.gaussian import Gaussian
from vaelab.models import BernoulliLayer, DiagonalGaussianLayer
from vaelab.models.layers import LikelihoodLayer
from vaelab.machine import flushing_subnormals, subnormals_flushed
from vaelab.models.backend import MLP, ONEDNN_LINEAR, linear, matmul_precision
from vaelab.objectives import aevb


@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.algebra
def test_fused_bernoulli_log_prob_equals_the_distribution(grey):
    torch.manual_seed(0)
    layer = BernoulliLayer(3, 20, (16,), "relu").double()
    z = torch.randn(7, 5, 3, dtype=torch.float64)
    x = torch.rand(5, 20, dtype=torch.float64)
    x = x if grey else torch.bernoulli(x)
    expected = Independent(Bernoulli(logits=layer(z).base_dist.logits, validate_args=False), 1).log_prob(x)
    torch.testing.assert_close(layer.log_prob(z, x), expected)
    assert layer.log_prob(z, x).shape == (7, 5)


@pytest.mark.algebra
def test_fused_bernoulli_log_prob_is_finite_for_extreme_logits():
    layer = BernoulliLayer(2, 4, (), "relu")
    with torch.no_grad():
        layer.logits.weight.fill_(0.0)
        layer.logits.bias.copy_(torch.tensor([200.0, -200.0, 200.0, -200.0]))
    log_prob = layer.log_prob(torch.zeros(1, 2), torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(log_prob, torch.tensor([-400.0]))


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "softplus", "sigmoid"])
@pytest.mark.skipif(not ONEDNN_LINEAR, reason="this PyTorch build has no oneDNN linear op")
@pytest.mark.algebra
def test_onednn_linear_matches_f_linear(activation):
    torch.manual_seed(0)
    mlp = MLP(6, (32, 16), activation)
    inputs = torch.randn(3, 50, 6)
    with torch.no_grad():
        fast = linear(linear(inputs, mlp.layers[0], activation, use_onednn=True), mlp.layers[1], activation, use_onednn=True)
        reference = linear(linear(inputs, mlp.layers[0], activation, use_onednn=False), mlp.layers[1], activation, use_onednn=False)
        assert torch.allclose(fast, reference, atol=1e-5)
        torch.testing.assert_close(mlp(inputs), reference, atol=1e-5, rtol=1e-5)  # no_grad: oneDNN chosen


def _confident_model_and_data():
    """A model whose logits are -95 on half the pixels, where those pixels are 0: softplus(-95) and
    its gradient, sigmoid(-95) ~ 5e-42, are subnormal in fp32."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(32,)), 64, "bernoulli")
    with torch.no_grad():
        model.generative.logits.weight.mul_(0.01)
        model.generative.logits.bias[:32] = -95
    x = torch.zeros(8, 64)
    x[:, 32:] = (torch.rand(8, 32, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    return model, x, torch.randn(5, 8, 2, generator=torch.Generator().manual_seed(2))


@pytest.mark.algebra
def test_flushing_subnormals_moves_log_likelihoods_and_gradients_by_rounding_only():
    model, x, z = _confident_model_and_data()
    reference = copy.deepcopy(model).double().log_likelihood(x.double(), z.double())
    before = subnormals_flushed()
    results = {}
    try:
        torch.set_flush_denormal(False)
        for flushed in (False, True):
            with flushing_subnormals() if flushed else contextlib.nullcontext():
                assert subnormals_flushed() == flushed
                model.zero_grad()
                values = model.log_likelihood(x, z)
                values.sum().backward()
                results[flushed] = values.detach(), model.generative.logits.bias.grad.clone()
            assert not subnormals_flushed(), "the block restores the thread's setting"
    finally:
        torch.set_flush_denormal(before)
    for values, _ in results.values():
        torch.testing.assert_close(values.double(), reference, rtol=0, atol=1e-4)
    assert (results[False][1][:32] != 0).all() and (results[True][1][:32] == 0).all()  # subnormal gradients, flushed
    torch.testing.assert_close(results[True][1], results[False][1], rtol=0, atol=1e-37)


@pytest.mark.parametrize("onednn_bf16", [False, True])
@pytest.mark.algebra
def test_bf16_products_without_gradient_run_whether_or_not_onednn_has_bf16(monkeypatch, onednn_bf16):
    # AVX2-only CPUs have no oneDNN bf16 linear ("could not create a primitive descriptor"): bf16
    # products then take F.linear. Both paths give F.linear's bf16 result up to bf16 rounding.
    from vaelab.models import backend

    if onednn_bf16 and not backend.ONEDNN_LINEAR_BF16:
        pytest.skip("oneDNN has no bf16 linear on this CPU (no AVX-512)")
    monkeypatch.setattr(backend, "ONEDNN_LINEAR_BF16", onednn_bf16)
    torch.manual_seed(0)
    mlp = MLP(6, (32,), "relu")
    inputs = torch.randn(40, 6)
    with torch.no_grad(), matmul_precision("bf16"):
        outputs = mlp(inputs)
    reference = torch.relu(torch.nn.functional.linear(inputs.bfloat16(), mlp.layers[0].weight.bfloat16(), mlp.layers[0].bias.bfloat16())).float()
    assert outputs.dtype == torch.float32
    torch.testing.assert_close(outputs, reference, atol=0.05, rtol=0.02)
    assert not torch.equal(outputs, mlp(inputs).detach())  # bf16 did run


@pytest.mark.gradients
def test_gradients_flow_through_the_autograd_path():
    mlp = MLP(4, (8,), "relu")
    mlp(torch.randn(5, 4)).sum().backward()  # with grad enabled, F.linear is used
    assert mlp.layers[0].weight.grad is not None


@pytest.mark.gradients
def test_bf16_training_gradients_reach_the_fp32_parameters_and_point_the_same_way():
    # The AEVB surrogate with bfloat16 matmuls (the same noise): every gradient is fp32, differs
    # from the fp32 one (bf16 did run), and agrees with it in direction (cosine > 0.99 per tensor).
    torch.manual_seed(0)
    model = build_model(ModelConfig(), data_dim=784, likelihood="bernoulli")
    x = torch.bernoulli(torch.full((50, 784), 0.15), generator=torch.Generator().manual_seed(1))

    def gradients():
        model.zero_grad()
        aevb(model, x, 1, torch.Generator().manual_seed(2)).theta_surrogate.mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    full = gradients()
    with matmul_precision("bf16"):
        reduced = gradients()
    assert all(g.dtype == torch.float32 for g in reduced)
    assert any(not torch.equal(a, b) for a, b in zip(full, reduced))
    for a, b in zip(full, reduced):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


@pytest.mark.algebra
def test_gaussian_layer_scale_is_bounded_below():
    layer = DiagonalGaussianLayer(2, 3, (4,), "tanh")
    with torch.no_grad():
        layer.raw_scale.bias.fill_(-1e4)
    assert (layer(torch.randn(10, 2)).base_dist.scale >= 1e-3).all()


@pytest.mark.algebra
def test_build_model_takes_the_dataset_likelihood_unless_overridden():
    assert isinstance(build_model(ModelConfig(), 784, "bernoulli").generative, BernoulliLayer)
    gaussian = build_model(ModelConfig(), 560, "gaussian").generative
    assert isinstance(gaussian, LikelihoodLayer) and isinstance(gaussian.family, Gaussian) and gaussian.family.squash_mean
    assert isinstance(build_model(ModelConfig(likelihood="bernoulli"), 560, "gaussian").generative, BernoulliLayer)
    assert not build_model(ModelConfig(gaussian_mean="linear"), 560, "gaussian").generative.family.squash_mean
