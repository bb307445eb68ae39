"""Ladder VAEs (vaelab.models.ladder): one layer is today's VAE, log q and log p against a float64
recomputation of the merge by hand, draws that follow q, the config's refusals, and the command
line end to end (exact resume, AIS and k-hat on a trained ladder)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from tests.conftest import TINY
from vaelab.builders import build_model, load_run
from vaelab.cli import main
from vaelab.config import LADDER_MERGES, ModelConfig
from vaelab.errors import ConfigError
from vaelab.likelihoods.gaussian import MIN_SCALE
from vaelab.models.chain import layer_log_probs
from vaelab.models.ladder import MERGES
from vaelab.models.sampling import sample_and_log_prob
from vaelab.objectives import importance_samples, iwae
from vaelab.objectives.aevb import monte_carlo_layer_kls
from vaelab.runio import read_metrics

X = torch.bernoulli(torch.full((5, 36), 0.3), generator=torch.Generator().manual_seed(0))


def _ladder(architecture: str, merge: str) -> torch.nn.Module:
    dims = (3, 2, 2) if architecture == "conv-ladder" else (5, 4, 3)
    config = ModelConfig(latent_dim=dims, hidden=(12,), upper_hidden=(10, 8), architecture=architecture, ladder_merge=merge)
    torch.manual_seed(0)
    return build_model(config, data_dim=36, likelihood="bernoulli", data_shape=(1, 6, 6) if architecture == "conv-ladder" else None)


@pytest.mark.algebra
def test_the_config_and_the_model_know_the_same_merges():
    assert LADDER_MERGES == MERGES


@pytest.mark.algebra
@pytest.mark.parametrize("merge", MERGES)
def test_a_one_layer_ladder_is_the_vae_on_the_same_weights(merge):
    torch.manual_seed(0)
    vae = build_model(ModelConfig(latent_dim=4, hidden=(16,)), data_dim=36, likelihood="bernoulli")
    ladder = build_model(ModelConfig(latent_dim=4, hidden=(16,), architecture="ladder", ladder_merge=merge), data_dim=36, likelihood="bernoulli")
    ladder.generative.load_state_dict(vae.generative.state_dict())
    ladder.networks.bottom_up[0].load_state_dict(vae.recognition.trunk.state_dict())
    head = ladder.networks.posterior_heads[0]
    with torch.no_grad():  # the head's rows: the means, then the raw scales
        head.weight.copy_(torch.cat([vae.recognition.loc.weight, vae.recognition.raw_scale.weight]))
        head.bias.copy_(torch.cat([vae.recognition.loc.bias, vae.recognition.raw_scale.bias]))

    draws = [importance_samples(model, X, 7, torch.Generator().manual_seed(3)) for model in (vae, ladder)]
    for field in ("z", "log_prior", "log_likelihood", "log_proposal"):
        torch.testing.assert_close(getattr(draws[1], field), getattr(draws[0], field))
    # the IWAE gradient of every matching parameter: the decoder's, the trunk's and the heads'
    bounds = [iwae(model, X, 7, torch.Generator().manual_seed(3)).theta_surrogate.sum() for model in (vae, ladder)]
    vae_grads = torch.autograd.grad(bounds[0], [*vae.generative.parameters(), *vae.recognition.trunk.parameters(), vae.recognition.loc.weight, vae.recognition.raw_scale.weight])
    ladder_grads = torch.autograd.grad(bounds[1], [*ladder.generative.parameters(), *ladder.networks.bottom_up[0].parameters(), head.weight])
    for a, b in zip(vae_grads[:-2], ladder_grads[:-1]):
        torch.testing.assert_close(b, a)
    torch.testing.assert_close(ladder_grads[-1], torch.cat(vae_grads[-2:]))


def _by_hand(model, x: torch.Tensor, z: torch.Tensor) -> tuple[list, list, list]:
    """Each layer's (mean, scale) under q and log q, log p of z ``[k, B, sum D]``, in the model's dtype,
    from the module docstring's formulas written out here (the networks give only their raw outputs)."""
    networks, shapes = model.networks, model.networks.latent_shapes
    blocks = [block.unflatten(-1, shape) for block, shape in zip(z.split(model.latent_dims, -1), shapes)]
    features = networks.bottom_up_features(x)
    top = len(shapes) - 1

    def normal_log_density(value, mean, scale, dims):
        density = -0.5 * ((value - mean) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
        return density.flatten(density.dim() - dims).sum(-1)

    def pair(params, dims):
        return params.select(-1 - dims, 0), params.select(-1 - dims, 1)

    q_params, log_q, log_p = [None] * len(shapes), [None] * len(shapes), [None] * len(shapes)
    above = None
    for layer in reversed(range(len(shapes))):
        dims = len(shapes[layer])
        if layer == top:
            prior_mean, prior_scale, t = torch.zeros_like(blocks[layer]), torch.ones_like(blocks[layer]), None
        else:
            t = networks.top_down_features(layer, blocks[layer + 1], above)
            prior_mean, raw = pair(networks.prior_head(layer, t), dims)
            prior_scale = F.softplus(raw) + MIN_SCALE
        if layer == top or networks.merge == "precision":
            mean, raw = pair(networks.posterior_head(layer, features[layer], None), dims)
            scale = F.softplus(raw) + MIN_SCALE
            if layer < top:  # Sonderby et al.'s eq. 18-19
                precision = scale**-2 + prior_scale**-2
                mean, scale = (mean * scale**-2 + prior_mean * prior_scale**-2) / precision, precision**-0.5
        else:  # NVAE: relative to the prior
            shift, raw = pair(networks.posterior_head(layer, features[layer], t), dims)
            mean, scale = prior_mean + shift, prior_scale * (F.softplus(raw) / math.log(2) + MIN_SCALE)
        q_params[layer] = (mean, scale)
        log_q[layer] = normal_log_density(blocks[layer], mean, scale, dims)
        log_p[layer] = normal_log_density(blocks[layer], prior_mean, prior_scale, dims)
        above = t
    return q_params, log_q, log_p


@pytest.mark.algebra
@pytest.mark.parametrize("architecture", ["ladder", "conv-ladder"])
@pytest.mark.parametrize("merge", MERGES)
def test_log_q_and_log_p_of_a_three_layer_ladder_match_a_float64_recomputation(architecture, merge):
    model = _ladder(architecture, merge).double()
    x = X.double()
    with torch.no_grad():
        posterior = model.posterior(x)
        z, log_q_drawn = sample_and_log_prob(posterior, (4,), torch.Generator().manual_seed(1))
        _, log_q, log_p = _by_hand(model, x, z)
        assert z.shape == (4, 5, model.latent_dim) and model.latent_dim == sum(model.latent_dims)
        torch.testing.assert_close(log_q_drawn, sum(log_q), rtol=1e-12, atol=1e-10)
        for ours, theirs in zip(layer_log_probs(posterior, z), log_q):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
        for ours, theirs in zip(layer_log_probs(model.prior_distribution(), z), log_p):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
        # the per-layer KL terms of free bits sum to the whole Monte Carlo KL
        kls = monte_carlo_layer_kls(model, posterior, z)
        torch.testing.assert_close(sum(kls), (sum(log_q) - sum(log_p)).mean(0), rtol=1e-12, atol=1e-10)


@pytest.mark.statistics
@pytest.mark.parametrize("merge", MERGES)
def test_top_down_draws_follow_each_layers_conditional(merge):
    """Each block drawn, standardised by q(z_l | z_>l, x)'s mean and scale at the blocks drawn above
    it, is N(0, 1): mean within 5 SE (SE = 1/sqrt(n)) and variance within 5 SE (sqrt(2/n))."""
    model = _ladder("ladder", merge)
    with torch.no_grad():
        z, _ = sample_and_log_prob(model.posterior(X), (4000,), torch.Generator().manual_seed(2))
        q_params, _, _ = _by_hand(model, X, z)
    blocks = z.split(model.latent_dims, -1)
    for block, (mean, scale) in zip(blocks, q_params):
        standardised = ((block - mean) / scale).reshape(-1)
        n = standardised.numel()
        assert abs(standardised.mean().item()) < 5 / math.sqrt(n)
        assert abs(standardised.var().item() - 1) < 5 * math.sqrt(2 / n)


@pytest.mark.contract
@pytest.mark.parametrize(
    "options, message",
    [
        ({"architecture": "ladder", "prior": "mixture"}, "takes Gaussian latents and the standard-normal prior"),
        ({"ladder_merge": "residual"}, "--ladder-merge applies to --architecture ladder or conv-ladder"),
        ({"architecture": "ladder", "posterior": "iaf"}, "--posterior iaf needs"),
    ],
)
def test_the_config_refuses_what_a_ladder_cannot_be(options, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(latent_dim=(4, 2), **options)


@pytest.mark.contract
def test_a_conv_ladder_needs_images():
    with pytest.raises(ConfigError, match="conv-ladder needs image data"):
        build_model(ModelConfig(latent_dim=(2, 2), architecture="conv-ladder"), data_dim=36, likelihood="bernoulli")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["ladder", "conv-ladder"])
def test_a_ladder_resumes_bitwise_and_is_scored_by_ais_and_k_hat(architecture, tmp_path):
    options = [*TINY, "--architecture", architecture, "--latent-dim", "3,2,2", "--upper-hidden", "8", "--ladder-merge", "residual",
               "--algorithm", "aevb", "--free-bits", "0.1", "--kl-warmup", "1", "--eval-k", "5"]
    assert main(["train", *options, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *options, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["train", *options, "--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    straight, resumed = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=False) for name in ("straight", "resumed"))
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key

    run = tmp_path / "straight"
    assert main(["evaluate", str(run), "--k", "50", "--images", "20", "--device", "cpu"]) == 0
    assert main(["evaluate", str(run), "--estimator", "ais", "--k", "4", "--steps", "20", "--images", "20", "--device", "cpu"]) == 0
    rows = [row for row in read_metrics(run / "metrics.jsonl") if row["kind"] == "evaluate"]
    bound, ais = rows[-2], rows[-1]
    assert math.isfinite(bound["bound"]) and 0 <= bound["k_hat_above"] <= 1 and math.isfinite(bound["k_hat_mean"])
    # AIS and L_50 both estimate log p(x) from below: within a few nats on a 2-epoch model of 20 images
    assert abs(ais["log_px"] - bound["bound"]) < 5.0, (ais, bound)
    images = load_run(run).model.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8) and ((images >= 0) & (images <= 1)).all()
