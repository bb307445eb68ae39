"""Active-unit folding: log p(x | z) of a one-hidden-layer ReLU decoder at the cost of its crossing units.

The decoder is h = relu(W1 z + b1), W1 ``[H, D]``, and the output layer o = W2 h + b2, W2 ``[O, H]``
(the Bernoulli logits, or a Gaussian's mean and raw scale stacked into one ``[2 D_x, H]`` matrix).
For the n samples z_1..z_n of one image b, split the hidden units by the signs of their
pre-activations a_i = W1 z_i + b1 over those samples:

    on_b       = {j : a_ij >= 0 for every i}    relu is the identity: h_ij = a_ij, affine in z_i
    off_b      = {j : a_ij <= 0 for every i}    h_ij = 0: the unit contributes nothing
    crossing_b = the others, C_b

so that, exactly (the same sum, grouped differently),

    o_i = M_b z_i + c_b + W2[:, C_b] relu(a_i[C_b]),
    M_b = W2[:, on_b] W1[on_b]  ``[O, D]``,   c_b = W2[:, on_b] b1[on_b] + b2  ``[O]``.

The per-sample product is then K_b = D + |C_b| wide (plus the bias) instead of H. The split needs
no per-sample pre-activations of all H units: the samples of image b lie in their box
[min_i z_ib, max_i z_ib], and over that box each unit's pre-activation lies between the bounds
W1 c_b + b1 -+ |W1| r_b (c_b the box's centre, r_b its half-widths; :func:`preactivation_bounds`).
A unit whose lower bound is >= 0 is on, one whose upper bound is <= 0 off; only the units the
bounds leave undecided (about 25% more than the truly crossing ones on the MNIST study's models)
get their n pre-activations computed, and of those the ones off for every sample are dropped, so
C_b is the truly crossing units plus the few that are on throughout (scored by their relu, which is
then the identity: the same sum). Folding costs one ``[O, H] x [H, D]`` product per image (shared
by all its samples). Deciding units from the box instead of every sample's ``[n, H]``
pre-activations (:func:`preactivation_range`, 19% of a one-thread folded evaluation) made L_1000 of
the MNIST study's trained models 13-22% faster on AEVB's and 2-12% on wake-sleep's (2 threads, old
and new code alternating). It pays when q(z | x) is concentrated, so that
few units change sign within an image's samples: a trained 2-D MNIST model (posterior standard
deviations ~0.05-0.08) has ~60 of 512 units crossing, and the dense 512-wide product shrinks about
8x. With a broad q (an untrained model, sd ~1) nearly every unit crosses and folding is slower
than the dense product, so :func:`log_likelihood` counts the units the bounds leave undecided in
each block of samples (all images of the batch) and folds only where the estimated width ratio
``(mean_b K_b + 1 + H D / n) / H`` is under :data:`FOLD_WIDTH_RATIO`.

For binary x the log-likelihood is sum_d log sigmoid(t_d), t_d = s_d o_d with s_d = 2 x_d - 1, and
a pixel the decoder is sure of for every sample adds nothing the arithmetic can hold: where
t_d >= T (:data:`SATURATED_LOGIT`), log sigmoid(t_d) lies in (-e^(-T), 0], at most 2e-9 nats per
pixel for fp32's T = 20 and 4e-18 for fp64's T = 40, below the rounding of a sum of ~100 nats in
either format (and the fp32 factor sigmoid(t_d) itself rounds to exactly 1). A lower bound of
t_d over the image's samples, from the range of each feature (z in its per-image box, an undecided
unit in [0, its upper bound]), certifies such pixels for all images at once before the
products (:func:`saturated_pixels`: a few ``[B, H] x [H, O]`` and ``[B, D, O]`` operations against
the products' ``[n, K_b, O]`` per image). Only the other pixels are scored: 24% of the pixels
per image are certified on the trained 2-D MNIST study's AEVB model, 7% on wake-sleep's (with
the exact ranges of :func:`preactivation_range` in place of the box bounds, 24% and 8%).

The numbers are those of the dense path up to floating-point rounding (the sum over hidden units
is grouped differently): within 1e-4 nats per image in fp32, 1e-9 in fp64 (tests/estimators/test_folding.py).
Folding applies without autograd, in fp32 or fp64 matmuls (not under ``matmul_precision('bf16')``,
whose rounding is defined per dense layer), on the CPU (its per-image products would be many
small kernel launches on a GPU); every other model and setting takes the dense path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from vaelab.models import (
    BernoulliLayer,
    DiagonalGaussianLayer,
    HelmholtzMachine,
    backend,
)
from vaelab.likelihoods.family import LikelihoodFamily
from vaelab.models.layers import MIN_SCALE, LikelihoodLayer

# Fold a block when its folded product is under this fraction of the dense one's width. The
# per-image products are small GEMMs, less efficient than one large one, so the bar is below 1;
# 0.6 is a conservative choice, not a measured break-even (a trained 2-D MNIST model sits at
# ~0.15, an untrained one near 1).
FOLD_WIDTH_RATIO = 0.6
# log_sigmoid_sum's clamp of t and its threshold of recomputation: sigmoid(-SIGMOID_CLAMP) =
# 1.8e-35 < RECOMPUTE_BELOW, so a row with a clamped factor is always recomputed exactly.
SIGMOID_CLAMP = 80.0
RECOMPUTE_BELOW = 1e-30
# Signed logits from which a pixel's log sigmoid is dropped: past 1 + e^(-T) == 1 (T = 16.6 in fp32,
# 36.7 in fp64), with a margin for the rounding of the bound that certifies them.
SATURATED_LOGIT = {torch.float32: 20.0, torch.float64: 40.0}
# At most this many sigmoid factors per log in log_sigmoid_sum (a product of more underflows
# more often, and each underflow recomputes its row).
MAX_FACTORS = 32
MODES = ("auto", "always", "never")
_mode = "auto"  # set by folding_mode


@contextlib.contextmanager
def folding_mode(name: str) -> Iterator[None]:
    """Within the block, foldable decoders fold ``'auto'`` (where it pays), ``'always'`` or ``'never'``.

    Process-wide, like :func:`vaelab.models.backend.matmul_precision`; for tests and benchmarks.
    """
    global _mode
    if name not in MODES:
        raise ValueError(f"folding mode must be one of {MODES} (got {name!r})")
    previous, _mode = _mode, name
    try:
        yield
    finally:
        _mode = previous


@dataclass(frozen=True)
class FoldableDecoder:
    """The parameters of a one-hidden-layer ReLU decoder, its output heads stacked.

    Attributes:
        weight1: ``[H, D]`` and bias1 ``[H]``: the hidden layer, h = relu(W1 z + b1).
        weight2: ``[O, H]`` and bias2 ``[O]``: the output layer (Bernoulli: O = D_x logits;
            Gaussian: O = 2 D_x, the means then the raw scales).
        likelihood: ``'bernoulli'``, ``'gaussian'`` (linear means, a DiagonalGaussianLayer) or the
            :class:`~vaelab.likelihoods.family.LikelihoodFamily` of a LikelihoodLayer (O = heads D_x, head-major).
    """

    weight1: torch.Tensor
    bias1: torch.Tensor
    weight2: torch.Tensor
    bias2: torch.Tensor
    likelihood: str | LikelihoodFamily

    @property
    def hidden(self) -> int:
        return self.weight1.shape[0]


def foldable_decoder(model: HelmholtzMachine) -> FoldableDecoder | None:
    """The decoder of ``model`` as a :class:`FoldableDecoder`, or None where folding does not apply.

    Applies to a Bernoulli, diagonal-Gaussian or two-head family's likelihood layer whose trunk is exactly one ReLU
    layer, outside autograd, on the CPU, with fp32 or fp64 matmuls and folding not switched off.
    """
    layer = model.generative
    if _mode == "never" or torch.is_grad_enabled() or backend._matmul_dtype != torch.float32:
        return None
    # a family's heads: at most two per pixel, as a Gaussian's (the fold holds [samples, heads * D_x] outputs at once)
    if not isinstance(layer, (BernoulliLayer, DiagonalGaussianLayer)) and not (isinstance(layer, LikelihoodLayer) and layer.family.heads <= 2):
        return None
    trunk = layer.trunk
    if trunk.activation != "relu" or len(trunk.layers) != 1 or trunk.layers[0].weight.device.type != "cpu":
        return None
    hidden = trunk.layers[0]
    if isinstance(layer, BernoulliLayer):
        weight2, bias2, likelihood = layer.logits.weight, layer.logits.bias, "bernoulli"
    elif isinstance(layer, LikelihoodLayer):
        weight2, bias2, likelihood = layer.head.weight, layer.head.bias, layer.family
    else:
        weight2 = torch.cat([layer.loc.weight, layer.raw_scale.weight])
        bias2, likelihood = torch.cat([layer.loc.bias, layer.raw_scale.bias]), "gaussian"
    return FoldableDecoder(hidden.weight, hidden.bias, weight2, bias2, likelihood)


def preactivation_bounds(decoder: FoldableDecoder, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds ``[B, H]`` of each hidden unit's pre-activation over z in each image's
    box [min_i z_ib, max_i z_ib] (z ``[n, B, D]``), which holds all its samples: with the box's
    centre c and half-widths r, W1 c + b1 -+ |W1| r. Two ``[B, D] x [D, H]`` products, where the
    exact range (:func:`preactivation_range`) costs an ``[n, B, D] x [D, H]`` one."""
    low, high = z.amin(0), z.amax(0)
    centre = torch.addmm(decoder.bias1, (low + high) / 2, decoder.weight1.T)
    radius = ((high - low) / 2) @ decoder.weight1.abs().T
    return centre - radius, centre + radius


def preactivation_range(decoder: FoldableDecoder, z: torch.Tensor, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest and largest pre-activation ``[B, H]`` of each hidden unit over the samples z ``[n, B, D]``."""
    samples_per_chunk = max(1, max_rows // z.shape[1])
    low = high = None
    for chunk in z.split(samples_per_chunk):
        pre = torch.addmm(decoder.bias1, chunk.reshape(-1, chunk.shape[-1]), decoder.weight1.T).reshape(*chunk.shape[:2], -1)
        chunk_low, chunk_high = pre.amin(0), pre.amax(0)
        low = chunk_low if low is None else torch.minimum(low, chunk_low)
        high = chunk_high if high is None else torch.maximum(high, chunk_high)
    return low, high


def width_ratio(low: torch.Tensor, high: torch.Tensor, num_samples: int, latent_dim: int) -> float:
    """Estimated cost of folding over the dense product, from pre-activation bounds ``[B, H]``:
    (mean over images of D + |U_b| + 1, plus the fold's H D per image spread over n samples) / H,
    U_b the units the bounds leave undecided (a superset of the crossing units C_b with box
    bounds, so folding is chosen conservatively)."""
    hidden = low.shape[1]
    crossing = ((low < 0) & (high > 0)).sum(1).double().mean().item()
    return (latent_dim + crossing + 1 + hidden * latent_dim / num_samples) / hidden


def folded_log_likelihood(decoder: FoldableDecoder, x: torch.Tensor, z: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """log p(x_b | z_ib) ``[n, B]`` by folding, for x ``[B, D_x]``, z ``[n, B, D]`` and bounds ``[B, H]``
    on each unit's pre-activation over each image's samples (:func:`preactivation_bounds`, or the
    exact :func:`preactivation_range`); see the module docstring."""
    on = (low >= 0).to(z.dtype)  # [B, H]; a unit at exactly 0 for some sample is still relu(a) = a
    crossing = (low < 0) & (high > 0)  # undecided by the bounds: scored by their relu (those off throughout dropped)
    weight2_t = decoder.weight2.T.contiguous()  # [H, O]: rows gathered per image, a contiguous [K_b, O] operand
    # M_b^T = W1^T diag(on_b) W2^T [B, D, O] and c_b = W2 (on_b * b1) + b2 [B, O], for all images at once.
    folded_weight = torch.matmul(decoder.weight1.T * on.unsqueeze(1), weight2_t)
    folded_bias = torch.addmm(decoder.bias2, on * decoder.bias1, weight2_t)
    result = torch.empty(z.shape[:2], dtype=z.dtype, device=z.device)
    ones = torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)
    binary = decoder.likelihood == "bernoulli" and bool(((x == 0) | (x == 1)).all())
    if binary:
        signs = 2 * x - 1  # [B, O]
        saturated = saturated_pixels(folded_weight, folded_bias, weight2_t, z, torch.where(crossing, high, 0), signs)
        # per image, its unsaturated pixels first, and how many to score: rounded up to whole products
        order = torch.argsort(saturated.to(torch.uint8), dim=1, stable=True)
        factors = _factors_per_product(x.shape[1])
        counts = (-(-(~saturated).sum(1) // factors) * factors).tolist()
    for b in range(x.shape[0]):
        units = crossing[b].nonzero().squeeze(1)
        z_b = z[:, b]  # [n, D]
        hidden = torch.addmm(decoder.bias1[units], z_b, decoder.weight1[units].T)  # [n, |C_b|] pre-activations
        active = hidden.amax(0) > 0  # the bounds' undecided units that are off for every sample add nothing
        units, hidden = units[active], hidden[:, active].relu_()
        # The bias as a feature of ones: one pass over the [n, O] outputs fewer than adding it.
        features = torch.cat([z_b, ones, hidden], 1)  # [n, K_b], K_b = D + 1 + |C_b|
        weight = torch.cat([folded_weight[b], folded_bias[b].unsqueeze(0), weight2_t[units]])  # [K_b, O]
        if binary:
            # log p(x | o) = sum_d log sigmoid(s_d o_d); the signs fold into the weight.
            if counts[b] < x.shape[1]:
                pixels = order[b, : counts[b]]
                result[:, b] = log_sigmoid_sum(features, weight[:, pixels] * signs[b, pixels])
            else:
                result[:, b] = log_sigmoid_sum(features, weight * signs[b])
        elif decoder.likelihood == "bernoulli":  # grey targets: sum_d x_d o_d - softplus(o_d)
            result[:, b] = features @ (weight @ x[b]) - F.softplus(features @ weight).sum(-1)
        elif decoder.likelihood == "gaussian":
            result[:, b] = _gaussian_log_likelihood(features @ weight, x[b])
        else:  # a likelihood family of vaelab.likelihoods: its log-probability of the outputs [n, heads, D_x]
            result[:, b] = decoder.likelihood.log_prob((features @ weight).unflatten(-1, (decoder.likelihood.heads, -1)), x[b])
    return result


def saturated_pixels(
    folded_weight: torch.Tensor, folded_bias: torch.Tensor, weight2_t: torch.Tensor, z: torch.Tensor, crossing_high: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """``[B, O]``: whether s_bd o_d(z) >= :data:`SATURATED_LOGIT` for every z of image b's samples
    (certified from a lower bound, so a pixel marked True is saturated; one marked False may be too).

    o_d = sum_k M_bdk z_k + c_bd + sum_{j in C_b} W2[d, j] h_j with z in its per-image box
    [min_i z_ib, max_i z_ib] and each crossing unit h_j in [0, an upper bound of its pre-activation]; the
    minimum of a linear function over a box takes each term at its smaller end, so

        min s_bd o_d = sum_k min(s M z_low, s M z_high) + s c + sum_j h_high_j min(0, s W2[d, j]).

    Args:
        folded_weight: ``[B, D, O]`` M_b^T; folded_bias ``[B, O]`` c_b; weight2_t ``[H, O]`` W2^T.
        z: ``[n, B, D]`` the samples; crossing_high ``[B, H]``: an upper bound of a crossing
            unit's pre-activation over the samples, 0 for the others; signs ``[B, O]``: s = 2 x - 1.
    """
    signed_weight = folded_weight * signs.unsqueeze(1)  # [B, D, O]
    z_low, z_high = z.amin(0).unsqueeze(2), z.amax(0).unsqueeze(2)  # [B, D, 1]
    bound = torch.minimum(z_low * signed_weight, z_high * signed_weight).sum(1) + folded_bias * signs
    # h_j min(0, s W2[d, j]) is h_j min(0, W2[d, j]) where s = 1 and -h_j max(0, W2[d, j]) where s = -1
    bound += torch.where(signs > 0, crossing_high @ weight2_t.clamp(max=0), -(crossing_high @ weight2_t.clamp(min=0)))
    return bound >= SATURATED_LOGIT[z.dtype]


def _factors_per_product(width: int) -> int:
    """How many sigmoid factors :func:`log_sigmoid_sum` multiplies per log for ``width`` pixels:
    the largest power of two <= :data:`MAX_FACTORS` dividing it (16 for MNIST's 784; 1, a log per
    pixel, for an odd width)."""
    factors = 1
    while width % (2 * factors) == 0 and 2 * factors <= MAX_FACTORS:
        factors *= 2
    return factors


def log_sigmoid_sum(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_d log sigmoid(t_d) ``[n]`` for t = features ``[n, K]`` @ weight ``[K, O]``; exact up to rounding.

    The logarithms dominate an elementwise log-sigmoid; here the factors sigmoid(t_d) of a group of
    G pixels (G a power of two, :func:`_factors_per_product`; pixel d with d + O/G, d + 2 O/G, ...)
    are multiplied first, by halving each row in place, and their product's log taken once (G times
    fewer logs; the halvings ran 2.1x faster than a reduction over groups of 28 contiguous factors). Rows
    where a product falls below :data:`RECOMPUTE_BELOW` (mispredicted pixels, about -69 nats in a
    group) are recomputed elementwise, so nothing underflows.

    t is clamped to [-80, 80] first: beyond about 87, sigmoid passes through subnormal floats,
    which x86 CPUs compute several times slower (a trained MNIST model's confident logits made the
    sigmoid 2.9x slower per image). sigmoid(t) is exactly 1 above 80 in fp32 and fp64, and a
    factor clamped at -80 (sigmoid = 1.8e-35) puts its row below :data:`RECOMPUTE_BELOW`, so that
    row is recomputed from the unclamped t: the clamp changes no result.
    """
    products = torch.sigmoid_((features @ weight).clamp_(-SIGMOID_CLAMP, SIGMOID_CLAMP))  # [n, O]
    for _ in range(_factors_per_product(weight.shape[-1]).bit_length() - 1):
        half = products.shape[1] // 2  # each row's first half times its second, in place: contiguous and vectorised
        products = products[:, :half].mul_(products[:, half:])  # [n, O / G] after the halvings
    result = products.log().sum(-1)
    underflow = (products < RECOMPUTE_BELOW).any(-1)
    if underflow.any():
        result[underflow] = F.logsigmoid(features[underflow] @ weight).sum(-1)
    return result


def _gaussian_log_likelihood(outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag sigma^2) ``[n]`` from the output layer ``[n, 2 D_x]`` (mu, then the raw
    scale: sigma = softplus(raw) + MIN_SCALE, as :class:`DiagonalGaussianLayer`) and x ``[D_x]``."""
    loc, raw_scale = outputs.chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + MIN_SCALE
    return (-((x - loc) ** 2) / (2 * scale**2) - scale.log() - math.log(math.sqrt(2 * math.pi))).sum(-1)


def log_likelihood(model: HelmholtzMachine, decoder: FoldableDecoder, x: torch.Tensor, z: torch.Tensor, max_rows: int) -> torch.Tensor:
    """log p(x_b | z_ib) ``[n, B]`` for x ``[B, D_x]`` and z ``[n, B, latent_dim]``: folded where it
    pays (or always, under ``folding_mode('always')``), else the dense path ``max_rows`` rows at a time."""
    z1 = z[..., : decoder.weight1.shape[1]]  # x depends on z_1 only
    low, high = preactivation_bounds(decoder, z1)
    if _mode == "always" or width_ratio(low, high, z.shape[0], z1.shape[-1]) < FOLD_WIDTH_RATIO:
        return folded_log_likelihood(decoder, x, z1, low, high)
    samples_per_chunk = max(1, max_rows // x.shape[0])
    return torch.cat([model.log_likelihood(x, chunk) for chunk in z.split(samples_per_chunk)])
