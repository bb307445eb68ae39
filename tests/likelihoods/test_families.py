"""The likelihood families of vaelab.likelihoods: normalised discrete probabilities (edge bins
included), PixelCNN++'s mixture against an independent implementation, sampling frequencies,
means, and finite float32 log-probabilities where bins are tiny or far in a tail."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import log_expit, logsumexp

from vaelab.errors import ConfigError
from vaelab.likelihoods import LIKELIHOODS, get_likelihood
from vaelab.models.sampling import sample

DISCRETE = [name for name, entry in LIKELIHOODS.items() if entry.discrete and not entry.binarizes]


def family(name, data_shape=(1, 1, 1), levels=256, components=3, squash_mean=True):
    return get_likelihood(name).family()(data_shape, levels, components=components, squash_mean=squash_mean)


def extreme_params(fam, rows, dtype=torch.float64, seed=0):
    """params ``[rows, heads, D]``: ordinary ones, and means far beyond both edges with scales from
    e^-7 to e^4, so that edge bins 0 and levels - 1 carry mass (and most of it)."""
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(rows, fam.heads, math.prod(fam.data_shape), generator=generator, dtype=dtype) * 2
    params[: rows // 3] *= 6  # far tails, tiny and huge scales (log-scales clamp at -7 and 7)
    if fam.heads == fam.levels:  # categorical: logits that put nearly all the mass on one edge level
        params[0, 0] += 200
        params[1, -1] += 200
    return params


def all_values(levels, channels):
    """Every x of one pixel of ``channels`` sub-pixels ``[levels^channels, channels]``, values v / (levels - 1)."""
    return torch.tensor(list(itertools.product(range(levels), repeat=channels)), dtype=torch.float64) / (levels - 1)


@pytest.mark.parametrize("levels", [2**8, 2**5])
@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.algebra
def test_probabilities_of_every_level_of_a_sub_pixel_sum_to_one(name, levels):
    fam = family(name, levels=levels)
    params = extreme_params(fam, 30)
    log_p = fam.log_prob(params.unsqueeze(1), all_values(levels, 1))  # [rows, levels]
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(30, dtype=torch.float64), rtol=0, atol=1e-5)
    edges = log_p.exp()[:, [0, -1]]
    assert (edges > 0.5).any(0).all(), "the test's params put most of the mass into both edge bins somewhere"


@pytest.mark.algebra
def test_a_coupled_rgb_mixture_is_normalised_over_every_colour():
    fam = family("discretized-logistic-mixture", (3, 1, 1), levels=2**5)
    params = extreme_params(fam, 6)
    log_p = fam.log_prob(params.unsqueeze(1), all_values(2**5, 3))  # [rows, 32^3]
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-5)


def reference_mixture_log_prob(params: np.ndarray, x: np.ndarray, levels: int, components: int) -> float:
    """PixelCNN++'s log p of one image, written from the paper with loops: params ``[4K, 3 * P]``
    (head role * K + k; role 0 logits summed over R, G, B; 1 means; 2 log-scales; 3 coupling), x ``[3 * P]``."""
    pixels = x.size // 3
    half = 1 / (levels - 1)
    total = 0.0
    for p in range(pixels):
        head = lambda role, k, c: params[role * components + k, c * pixels + p]  # noqa: E731
        centred = [2 * round(x[c * pixels + p] * (levels - 1)) / (levels - 1) - 1 for c in range(3)]
        logits = np.array([sum(head(0, k, c) for c in range(3)) for k in range(components)])
        log_weights = logits - logsumexp(logits)
        terms = []
        for k in range(components):
            a, b, c_ = (np.tanh(head(3, k, c)) for c in range(3))
            means = [head(1, k, 0), head(1, k, 1) + a * centred[0], head(1, k, 2) + b * centred[0] + c_ * centred[1]]
            log_component = log_weights[k]
            for c in range(3):
                scale = math.exp(max(head(2, k, c), -7.0))
                upper, lower = (centred[c] + half - means[c]) / scale, (centred[c] - half - means[c]) / scale
                if centred[c] < -1 + 1e-9:  # bin (-inf, upper]
                    log_component += log_expit(upper)
                elif centred[c] > 1 - 1e-9:  # bin [lower, +inf)
                    log_component += log_expit(-lower)
                else:  # log(F(a) - F(b)) = log F(a) + log(1 - F(b) / F(a)), taken in the tail nearer the bin
                    a, b = (upper, lower) if upper + lower < 0 else (-lower, -upper)
                    log_component += log_expit(a) + np.log1p(-np.exp(log_expit(b) - log_expit(a)))
            terms.append(log_component)
        total += logsumexp(terms)
    return total


@pytest.mark.algebra
def test_the_coupled_mixture_equals_an_independent_float64_implementation():
    levels, components = 256, 3
    fam = family("discretized-logistic-mixture", (3, 2, 2), levels=levels, components=components)
    generator = torch.Generator().manual_seed(3)
    params = torch.randn(5, fam.heads, 12, generator=generator, dtype=torch.float64)
    params[:, 2 * components : 3 * components] -= 2  # narrow components: probabilities far from uniform
    x = torch.randint(0, levels, (5, 12), generator=generator).double() / (levels - 1)
    x[0, :4] = 0.0  # edge levels of every channel
    x[1, 4:] = 1.0
    ours = fam.log_prob(params, x)
    reference = [reference_mixture_log_prob(params[i].numpy(), x[i].numpy(), levels, components) for i in range(5)]
    torch.testing.assert_close(ours, torch.tensor(reference, dtype=torch.float64), rtol=0, atol=1e-6)


SAMPLE_DRAWS = 20_000


@pytest.mark.parametrize(
    "name, data_shape", [*((name, (1, 1, 1)) for name in DISCRETE), ("discretized-logistic-mixture", (3, 1, 1))], ids=lambda v: str(v)
)
@pytest.mark.statistics
def test_sample_frequencies_match_the_probabilities(name, data_shape):
    levels = 4 if data_shape[0] == 3 else 8  # 64 colours or 8 levels
    fam = family(name, data_shape, levels=levels)
    params = extreme_params(fam, 3, seed=1)
    params[0] /= 6  # one row of ordinary parameters, two extreme
    draws = sample(fam.distribution(params), (SAMPLE_DRAWS,), torch.Generator().manual_seed(2))  # [n, rows, C]
    assert draws.shape == (SAMPLE_DRAWS, 3, data_shape[0])
    values = all_values(levels, data_shape[0])
    probabilities = fam.log_prob(params.unsqueeze(1), values).exp()  # [rows, colours]
    matches = (draws.unsqueeze(2) == values.to(draws.dtype)).all(-1)  # [n, rows, colours]
    frequencies = matches.double().mean(0)
    assert matches.sum(-1).eq(1).all(), "every draw is one of the levels"
    # 5 binomial standard errors (plus rounding): a fixed seed, so no flakiness, and a real check
    tolerance = 5 * (probabilities * (1 - probabilities) / SAMPLE_DRAWS).sqrt() + 1e-3
    assert ((frequencies - probabilities).abs() <= tolerance).all(), (frequencies - probabilities).abs().max()


@pytest.mark.parametrize(
    "name, data_shape", [*((name, (1, 1, 1)) for name in DISCRETE), ("discretized-logistic-mixture", (3, 1, 1))], ids=lambda v: str(v)
)
@pytest.mark.algebra
def test_the_mean_is_the_probability_weighted_level(name, data_shape):
    levels = 2**5
    fam = family(name, data_shape, levels=levels)
    params = extreme_params(fam, 12)
    if data_shape[0] == 3:  # coupled means enter the mixture mean at component means: exact without coupling
        params[:, 3 * fam.components :] = 0
    values = all_values(levels, data_shape[0])
    probabilities = fam.log_prob(params.unsqueeze(1), values).exp()  # [rows, colours]
    expected = probabilities @ values  # [rows, C]: sum_v v / (levels - 1) P(v)
    mean = fam.distribution(params).mean
    assert mean.shape == (12, data_shape[0]) and ((mean >= 0) & (mean <= 1)).all()
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.algebra
def test_float32_log_probabilities_and_gradients_stay_finite_for_tiny_bins_and_far_tails(name):
    fam = family(name, (3, 2, 2), levels=256)
    params = (extreme_params(fam, 8, dtype=torch.float32) * 5).requires_grad_()
    generator = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (8, 12), generator=generator).float() / 255
    x[:2] = torch.tensor([0.0, 1.0]).repeat_interleave(6)  # both edge levels
    log_p = fam.log_prob(params, x)
    (gradient,) = torch.autograd.grad(log_p.sum(), params)
    assert torch.isfinite(log_p).all() and torch.isfinite(gradient).all()


@pytest.mark.algebra
def test_a_discretized_gaussian_bin_far_narrower_than_the_scale_keeps_its_probability_in_float32():
    fam = family("discretized-gaussian", levels=256)
    # scale e^4 = 55: a bin of 2/255 is 1.4e-4 standard deviations, below float32's resolution of Phi's difference
    params = torch.tensor([[[0.3], [4.0]]])
    x = torch.tensor([[128 / 255]])
    log_p32, log_p64 = fam.log_prob(params, x), fam.log_prob(params.double(), x.double())
    centre = 2 * 128 / 255 - 1
    exact = math.log(0.5 * (math.erf((centre + 1 / 255 - 0.3) / (math.exp(4) * math.sqrt(2))) - math.erf((centre - 1 / 255 - 0.3) / (math.exp(4) * math.sqrt(2)))))
    assert abs(log_p64.item() - exact) < 1e-6 and abs(log_p32.item() - exact) < 1e-4


@pytest.mark.algebra
def test_gaussian_means_are_squashed_into_the_unit_interval_unless_linear():
    params = torch.randn(50, 2, 10) * 10
    squashed = family("gaussian", (10,), levels=None).distribution(params).mean
    linear = family("gaussian", (10,), levels=None, squash_mean=False).distribution(params).mean
    assert ((squashed >= 0) & (squashed <= 1)).all()
    torch.testing.assert_close(linear, params[:, 0])
    assert ((linear < 0) | (linear > 1)).any()


@pytest.mark.parametrize("name", list(LIKELIHOODS))
@pytest.mark.contract
def test_every_family_gives_a_distribution_of_batch_and_event_shape_and_samples_with_a_generator(name):
    fam = family(name, (3, 2, 2), levels=16)
    expected_heads = {"bernoulli": 1, "gaussian": 2, "categorical": 16, "discretized-logistic-mixture": 4 * 3}.get(name, 2)
    assert fam.heads == expected_heads
    params = torch.randn(4, 5, fam.heads, 12)
    distribution = fam.distribution(params)
    assert distribution.batch_shape == (4, 5) and distribution.event_shape == (12,)
    first, again = (sample(distribution, (2,), torch.Generator().manual_seed(9)) for _ in range(2))
    assert first.shape == (2, 4, 5, 12) and torch.equal(first, again)
    assert distribution.log_prob(first).shape == (2, 4, 5)
    torch.testing.assert_close(distribution.log_prob(first[0]), fam.log_prob(params, first[0]))
    if LIKELIHOODS[name].discrete:
        assert ((first >= 0) & (first <= 1)).all() and torch.allclose(torch.round(first * 15), first * 15, rtol=0, atol=1e-5)


@pytest.mark.contract
def test_mixture_heads_are_3k_without_coupling():
    assert family("discretized-logistic-mixture", (1, 4, 4), levels=256, components=5).heads == 15
    assert family("discretized-logistic-mixture", (2, 4, 4), levels=256, components=5).heads == 15
    assert family("discretized-logistic-mixture", (12,), levels=256, components=5).heads == 15


@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.contract
def test_discrete_families_refuse_continuous_data_in_one_line(name):
    with pytest.raises(ConfigError, match=f"^{name} needs images with integer levels") as error:
        family(name, levels=None)
    assert "\n" not in str(error.value)
