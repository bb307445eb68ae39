"""Layers: distributions, the fused Bernoulli log-likelihood and the oneDNN matmul path."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Independent

from vaelab.config import ModelConfig
from vaelab.models import BernoulliLayer, DiagonalGaussianLayer, build_model
from vaelab.models.backend import ONEDNN_LINEAR, MLP, linear


@pytest.mark.parametrize("grey", [False, True])
def test_fused_bernoulli_log_prob_equals_the_distribution(grey):
    torch.manual_seed(0)
    layer = BernoulliLayer(3, 20, (16,), "relu").double()
    z = torch.randn(7, 5, 3, dtype=torch.float64)
    x = torch.rand(5, 20, dtype=torch.float64)
    x = x if grey else torch.bernoulli(x)
    expected = Independent(Bernoulli(logits=layer(z).base_dist.logits, validate_args=False), 1).log_prob(x)
    torch.testing.assert_close(layer.log_prob(z, x), expected)
    assert layer.log_prob(z, x).shape == (7, 5)


def test_fused_bernoulli_log_prob_is_finite_for_extreme_logits():
    layer = BernoulliLayer(2, 4, (), "relu")
    with torch.no_grad():
        layer.logits.weight.fill_(0.0)
        layer.logits.bias.copy_(torch.tensor([200.0, -200.0, 200.0, -200.0]))
    log_prob = layer.log_prob(torch.zeros(1, 2), torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(log_prob, torch.tensor([-400.0]))


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "softplus", "sigmoid"])
@pytest.mark.skipif(not ONEDNN_LINEAR, reason="this PyTorch build has no oneDNN linear op")
def test_onednn_linear_matches_f_linear(activation):
    torch.manual_seed(0)
    mlp = MLP(6, (32, 16), activation)
    inputs = torch.randn(3, 50, 6)
    with torch.no_grad():
        fast = linear(linear(inputs, mlp.layers[0], activation, use_onednn=True), mlp.layers[1], activation, use_onednn=True)
        reference = linear(linear(inputs, mlp.layers[0], activation, use_onednn=False), mlp.layers[1], activation, use_onednn=False)
        assert torch.allclose(fast, reference, atol=1e-5)
        torch.testing.assert_close(mlp(inputs), reference, atol=1e-5, rtol=1e-5)  # no_grad: oneDNN chosen


def test_gradients_flow_through_the_autograd_path():
    mlp = MLP(4, (8,), "relu")
    mlp(torch.randn(5, 4)).sum().backward()  # with grad enabled, F.linear is used
    assert mlp.layers[0].weight.grad is not None


def test_gaussian_layer_scale_is_bounded_below():
    layer = DiagonalGaussianLayer(2, 3, (4,), "tanh")
    with torch.no_grad():
        layer.raw_scale.bias.fill_(-1e4)
    assert (layer(torch.randn(10, 2)).base_dist.scale >= 1e-3).all()


def test_build_model_takes_the_dataset_likelihood_unless_overridden():
    assert isinstance(build_model(ModelConfig(), 784, "bernoulli").generative, BernoulliLayer)
    assert isinstance(build_model(ModelConfig(), 560, "gaussian").generative, DiagonalGaussianLayer)
    assert isinstance(build_model(ModelConfig(likelihood="bernoulli"), 560, "gaussian").generative, BernoulliLayer)
