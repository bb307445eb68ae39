"""Models with each likelihood family: one training step on the digits (17 levels) with aevb and
iwae, the conv and the user's decoders giving [B, heads, C, H, W], the folded evaluation of
two-head families, and the rules that refuse a family the data cannot take."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

from vaelab.builders import build_model, initial_model
from vaelab.cli import main
from vaelab.config import ExperimentConfig, ModelConfig
from vaelab.data import load_dataset
from vaelab.errors import ConfigError
from vaelab.estimators import folding
from vaelab.estimators.bounds import importance_weighted_bound
from vaelab.likelihoods import LIKELIHOOD_NAMES, LIKELIHOODS, get_likelihood
from vaelab.models.layers import BernoulliLayer, LikelihoodLayer
from vaelab.models.networks import NetworkLayer
from vaelab.objectives import OBJECTIVES
from vaelab.preflight import check_likelihood, memory_needed

DIGIT_LEVELS = 17


@pytest.fixture(scope="module")
def digits():
    """The 8x8 digits: 17 levels, 0..16."""
    dataset = load_dataset("digits")
    assert dataset.levels == DIGIT_LEVELS
    return dataset


@pytest.mark.parametrize("algorithm", ["aevb", "iwae"])
@pytest.mark.parametrize("likelihood", LIKELIHOOD_NAMES)
@pytest.mark.e2e
def test_a_model_of_each_family_trains_a_step_on_the_digits_with_a_finite_bound(likelihood, algorithm, digits):
    config = ExperimentConfig(model=ModelConfig(latent_dim=2, hidden=(16,), likelihood=likelihood, mixture_components=3))
    model = initial_model(config, digits)
    assert isinstance(model.generative, BernoulliLayer if likelihood == "bernoulli" else LikelihoodLayer)
    x = digits.unit_images("train")[:32]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bounds = []
    for step in range(2):
        output = OBJECTIVES[algorithm].function(model, x, num_samples=3, generator=torch.Generator().manual_seed(step))
        bounds.append(output.bound)
        optimizer.zero_grad()
        (-(output.theta_surrogate + output.phi_surrogate).mean()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
    assert all(torch.isfinite(bound).all() and bound.shape == (32,) for bound in bounds)
    if LIKELIHOODS[likelihood].discrete and likelihood != "bernoulli":
        assert (bounds[0] < 0).all()  # a log-probability of discrete values


@pytest.mark.algebra
def test_the_bernoulli_output_bias_starts_at_the_data_mean_logits(digits):
    model = initial_model(ExperimentConfig(model=ModelConfig(latent_dim=2, hidden=(8,))), digits)
    mean = digits.unit_images("train").mean(0)
    torch.testing.assert_close(model.generative.logits.bias, torch.logit(mean.clamp(1e-3, 1 - 1e-3)))


@pytest.mark.algebra
def test_the_generic_layer_with_the_bernoulli_family_is_the_bernoulli_layer():
    torch.manual_seed(0)
    fast = BernoulliLayer(3, 10, (8,), "tanh").double()
    generic = LikelihoodLayer(3, get_likelihood("bernoulli").family()((10,), 2), (8,), "tanh").double()
    generic.load_state_dict({key.replace("logits", "head"): value for key, value in fast.state_dict().items()})
    z, x = torch.randn(4, 5, 3, dtype=torch.float64), torch.rand(5, 10, dtype=torch.float64)
    torch.testing.assert_close(generic.log_prob(z, x), fast.log_prob(z, x))
    torch.testing.assert_close(generic(z).mean, fast(z).mean)
    mean = torch.rand(10, dtype=torch.float64)
    fast.init_output_bias(mean)
    generic.init_output_bias(mean)
    torch.testing.assert_close(generic.head.bias, fast.logits.bias)


USER_DECODERS = textwrap.dedent(
    """
    import math
    from torch import nn

    def encoder(data_shape, latent_dim):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data_shape), 2 * latent_dim))

    def decoder(data_shape, latent_dim, heads):
        return nn.Sequential(nn.Linear(latent_dim, heads * math.prod(data_shape)), nn.Unflatten(1, (heads, *data_shape)))

    def headless(data_shape, latent_dim):
        return nn.Sequential(nn.Linear(latent_dim, math.prod(data_shape)), nn.Unflatten(1, data_shape))
    """
)


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "heads_nets.py"
    path.write_text(USER_DECODERS)
    return path


IMAGE = (3, 6, 5)


@pytest.mark.parametrize("networks", ["conv", "user"])
@pytest.mark.parametrize("likelihood", LIKELIHOOD_NAMES)
@pytest.mark.contract
def test_conv_and_user_decoders_give_each_familys_heads(likelihood, networks, user_module):
    options = {"architecture": "conv"} if networks == "conv" else {"encoder": f"{user_module}:encoder", "decoder": f"{user_module}:decoder"}
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, likelihood=likelihood, mixture_components=2, **options), 90, "bernoulli", IMAGE, levels=16)
    assert isinstance(model.generative, NetworkLayer)
    heads = model.generative.family.heads
    assert heads == {"bernoulli": 1, "categorical": 16, "discretized-logistic-mixture": 8}.get(likelihood, 2)
    z = torch.randn(4, 2)
    assert model.generative.network(z).shape == (4, heads, *IMAGE)
    x = torch.randint(0, 16, (4, 90)).float() / 15
    log_likelihood = model.log_likelihood(x, torch.randn(3, 4, 2))  # [k, B]
    assert log_likelihood.shape == (3, 4) and torch.isfinite(log_likelihood).all()
    images = model.sample(5, torch.Generator().manual_seed(1), mean=False)
    means = model.sample(5, torch.Generator().manual_seed(1))
    assert images.shape == means.shape == (5, *IMAGE)
    if likelihood != "gaussian":
        assert ((images >= 0) & (images <= 1)).all()
    assert ((means >= 0) & (means <= 1)).all()


@pytest.mark.contract
def test_a_decoder_without_heads_is_told_the_shape_it_must_return(user_module):
    config = ModelConfig(latent_dim=2, likelihood="categorical", encoder=f"{user_module}:encoder", decoder=f"{user_module}:headless")
    model = build_model(config, 90, "bernoulli", IMAGE, levels=16)
    with pytest.raises(ConfigError, match=r"headless: returned shape \[4, 3, 6, 5\] for input \[4, 2\]; expected \[4, 16, 3, 6, 5\]$"):
        model.likelihood(torch.randn(4, 2))
    bernoulli = build_model(dataclasses.replace(config, likelihood="bernoulli"), 90, "bernoulli", IMAGE, levels=16)
    assert bernoulli.likelihood(torch.randn(4, 2)).batch_shape == (4,)  # one head: [B, *data_shape] as before


@pytest.mark.parametrize("likelihood", ["gaussian", "discretized-logistic", "discretized-gaussian"])
@pytest.mark.algebra
def test_two_head_families_fold_to_the_dense_bound(likelihood):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden=(32,), likelihood=likelihood), 12, "bernoulli", levels=16).double()
    x = torch.randint(0, 16, (4, 12), generator=torch.Generator().manual_seed(1)).double() / 15
    values = {}
    for mode in ("always", "never"):
        with torch.no_grad(), folding.folding_mode(mode):
            assert (folding.foldable_decoder(model) is not None) == (mode == "always")
            values[mode] = importance_weighted_bound(model, x, 50, torch.Generator().manual_seed(2))
    torch.testing.assert_close(values["always"], values["never"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("likelihood", [name for name, entry in LIKELIHOODS.items() if entry.discrete and not entry.binarizes])
@pytest.mark.contract
def test_a_discrete_family_refuses_continuous_data_naming_it(likelihood, digits):
    continuous = dataclasses.replace(digits, levels=None)
    config = ExperimentConfig(model=ModelConfig(latent_dim=2, hidden=(8,), likelihood=likelihood))
    with pytest.raises(ConfigError, match=f"^{likelihood} needs images with integer levels \\(8-bit or binary\\); digits is continuous$"):
        check_likelihood(config, "digits", "bernoulli", None)  # before training (named data) or once read (data by path)
    with pytest.raises(ConfigError, match=f"^{likelihood} needs images with integer levels"):
        initial_model(config, continuous)  # the model's own check, for the Python API


@pytest.mark.algebra
def test_the_memory_estimate_counts_a_categorical_decoders_heads():
    def needed(likelihood, levels):
        return memory_needed(ExperimentConfig(model=ModelConfig(likelihood=likelihood)), 3072, {"train": 50_000, "test": 10_000}, levels)

    assert needed("categorical", None) == needed("auto", None) < needed("categorical", 256)
    # 256 x 3072 outputs from 512 hidden units: 403M parameters held 4 times (6 GiB), and an
    # evaluation chunk of at most 2^24 logits (estimators.bounds.decoder_rows: 21 rows of 786,432),
    # not 4,096 rows (24 GiB), nor all 100 x 1000 rows (600 GiB)
    assert 6 * 2**30 < needed("categorical", 256) < 12 * 2**30


@pytest.mark.contract
def test_train_help_lists_each_family_with_its_summary(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    for name, entry in LIKELIHOODS.items():
        assert f"{name}: {' '.join(entry.summary.split())}" in text
    assert "--mixture-components" in text and "--gaussian-mean {sigmoid,linear}" in text


@pytest.mark.contract
def test_model_config_checks_the_likelihood_options():
    with pytest.raises(ConfigError, match="^likelihood must be one of auto, bernoulli"):
        ModelConfig(likelihood="poisson")
    with pytest.raises(ConfigError, match="^mixture_components must be a positive integer"):
        ModelConfig(mixture_components=0)
    with pytest.raises(ConfigError, match="^gaussian_mean must be one of sigmoid, linear"):
        ModelConfig(gaussian_mean="tanh")
