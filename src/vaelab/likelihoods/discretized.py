"""A continuous distribution per sub-pixel integrated over each level's bin (Salimans et al. 2017, PixelCNN++).

The value x = v / (levels - 1) is centred to c = 2x - 1 in [-1, 1]; level v owns the bin
[c - h, c + h], h = 1 / (levels - 1), except that the edge bins are open: level 0 takes
(-inf, c + h] and level levels - 1 takes [c - h, +inf), so the probabilities of all levels sum to
one. With a location mu and a scale s = exp(log_scale) (log_scale clamped to [-7, 7]; -7 is
PixelCNN++'s floor), the standardised edges are t = (edge - mu) / s and

    P(v) = F(t_upper) - F(t_lower),   P(0) = F(t_upper),   P(levels - 1) = 1 - F(t_lower),

for the logistic CDF F = sigmoid (:class:`DiscretizedLogistic`, Kingma et al. 2016) or the normal
CDF Phi (:class:`DiscretizedGaussian`). Both are the one construction of :class:`Discretized`,
parameterised by the CDF; each CDF supplies log F, log(1 - F) and a numerically stable
log(F(a) - F(b)), so that a bin far in a tail or far narrower than the scale gives a finite
log-probability in float32, never -inf or NaN:

- logistic: sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), so
  log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a)), exact at every a > b (the width
  a - b = 2 h / s is computed from s, not from the two edges);
- Gaussian: the bin is moved into the left tail by symmetry (Phi(a) - Phi(b) = Phi(-b) - Phi(-a)),
  then log P = log Phi(a) + log(1 - exp(log Phi(b) - log Phi(a))) with ``log_ndtr``; a bin
  narrower than ``NARROW`` standard deviations takes the midpoint rule log phi((a + b) / 2) + log(a - b)
  (relative error (a - b)^2 / 24 times a bounded factor), where the difference of the two logs would cancel.

Heads 2 per sub-pixel: (mean, log-scale), the mean in the centred units of c.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from vaelab.likelihoods.categorical import require_levels
from vaelab.likelihoods.family import LikelihoodFamily, level_index

# The log-scale's range: PixelCNN++'s floor (a bin of 8-bit data is 2/255 = e^-4.8 wide), and a
# ceiling past which every level is equally likely to 1e-5 (2^16 levels and fewer), so that the
# scale's reciprocal never underflows to 0 in float32.
MIN_LOG_SCALE, MAX_LOG_SCALE = -7.0, 7.0
# A Gaussian bin narrower than this (in standard deviations) takes the midpoint rule.
NARROW = 1e-3


def log_ndtr(t: torch.Tensor) -> torch.Tensor:
    """log Phi(t), computed in float64: far in the tail (t = -1e4, a mean many bins away at the
    smallest scale) float32's log Phi ~ -t^2 / 2 leaves its gradient phi / Phi = exp(-t^2 / 2 -
    log Phi) to a cancellation that overflows."""
    return torch.special.log_ndtr(t.double()).to(t.dtype)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class Discretized(LikelihoodFamily):
    """A location-scale CDF F discretized onto ``levels`` bins; subclasses give F (four static methods)."""

    name = "a discretized likelihood"  # the registry's name, for messages

    def __init__(self, data_shape: tuple[int, ...], levels: int | None, components: int = 10, squash_mean: bool = True):
        super().__init__(data_shape, require_levels(self.name, levels), components, squash_mean)

    @property
    def heads(self) -> int:
        return 2

    @staticmethod
    def log_cdf(t: torch.Tensor) -> torch.Tensor:
        """log F(t)."""
        raise NotImplementedError

    @staticmethod
    def log_sf(t: torch.Tensor) -> torch.Tensor:
        """log(1 - F(t))."""
        raise NotImplementedError

    @staticmethod
    def log_interval(upper: torch.Tensor, lower: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """log(F(upper) - F(lower)) for upper = lower + width, width > 0 (given apart: more accurate
        than the difference of two large edges), finite wherever the difference is positive."""
        raise NotImplementedError

    @staticmethod
    def standard_draw(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Draws of the standard distribution (location 0, scale 1), of ``like``'s shape, dtype and device."""
        raise NotImplementedError

    # One sub-pixel's maths, elementwise over broadcast tensors: the mixture reuses it.

    def level_log_prob(self, v: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """log P(v | mean, log_scale) for levels v (int64), elementwise."""
        top = self.levels - 1
        inverse_scale = torch.exp(-log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))
        centre = 2 * v.to(mean.dtype) / top - 1
        upper = (centre + 1 / top - mean) * inverse_scale
        lower = (centre - 1 / top - mean) * inverse_scale
        interval = self.log_interval(upper, lower, (2 / top) * inverse_scale)
        # every branch is finite for finite inputs, so where() passes no NaN gradient back
        return torch.where(v == 0, self.log_cdf(upper), torch.where(v == top, self.log_sf(lower), interval))

    def level_mean(self, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        """E[v] / (levels - 1) = sum_{j=1}^{levels-1} P(v >= j) / (levels - 1), in [0, 1], elementwise."""
        top = self.levels - 1
        edges = torch.arange(1, self.levels, dtype=mean.dtype, device=mean.device) * (2 / top) - 1 - 1 / top  # lower edge of bin j
        inverse_scale = torch.exp(-log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))
        standard = (edges - mean.unsqueeze(-1)) * inverse_scale.unsqueeze(-1)  # [..., levels - 1]
        return self.log_sf(standard).exp().sum(-1) / top

    def level_draw(self, mean: torch.Tensor, log_scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """v (int64): a continuous draw mean + s * eps rounded to its bin (the open edge bins take the tails)."""
        top = self.levels - 1
        continuous = mean + torch.exp(log_scale.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE)) * self.standard_draw(mean, generator)
        return torch.round((continuous + 1) * (top / 2)).nan_to_num_(posinf=top, neginf=0).clamp_(0, top).long()

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.level_log_prob(level_index(x, self.levels), params[..., 0, :], params[..., 1, :]).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.level_mean(params[..., 0, :], params[..., 1, :])

    def draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.level_draw(params[..., 0, :], params[..., 1, :], generator).to(params.dtype) / (self.levels - 1)


class DiscretizedLogistic(Discretized):
    """F = sigmoid: the discretized logistic of Kingma et al. (2016) and Salimans et al. (2017)."""

    name = "discretized-logistic"

    @staticmethod
    def log_cdf(t: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(t)

    @staticmethod
    def log_sf(t: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(-t)

    @staticmethod
    def log_interval(upper: torch.Tensor, lower: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-width))

    @staticmethod
    def standard_draw(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.logit(torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device))


class DiscretizedGaussian(Discretized):
    """F = Phi, the standard normal CDF."""

    name = "discretized-gaussian"

    @staticmethod
    def log_cdf(t: torch.Tensor) -> torch.Tensor:
        return log_ndtr(t)

    @staticmethod
    def log_sf(t: torch.Tensor) -> torch.Tensor:
        return log_ndtr(-t)

    @staticmethod
    def log_interval(upper: torch.Tensor, lower: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        flip = upper + lower > 0  # a bin right of 0: its mirror image, in the left tail where log Phi is accurate
        high, low = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
        log_high = log_ndtr(high)
        gap = (log_ndtr(low) - log_high).clamp(max=-torch.finfo(upper.dtype).tiny)
        narrow = width < NARROW
        exact = log_high + log1mexp(torch.where(narrow, -1.0, gap))  # -1: a finite stand-in where the midpoint rule is taken
        midpoint = -0.5 * ((upper + lower) / 2) ** 2 - 0.5 * math.log(2 * math.pi) + width.log()
        return torch.where(narrow, midpoint, exact)

    @staticmethod
    def standard_draw(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
