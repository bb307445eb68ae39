"""PixelCNN++'s mixture of discretized logistics per pixel (Salimans et al. 2017, section 2.1-2.2).

A pixel p of C channels takes one of K = ``components`` components, with weights
pi = softmax(l_p); given component k its sub-pixels are discretized logistics
(:class:`~vaelab.likelihoods.discretized.DiscretizedLogistic`, 1 / (levels - 1) bins with open
edges, centred values c = 2x - 1), and for C = 3 their means are coupled linearly to the sub-pixels
before them (the data's own values, centred):

    mu_R' = mu_R,   mu_G' = mu_G + a x_R,   mu_B' = mu_B + b x_R + c x_G,   (a, b, c) = tanh(raw),

    log p(x_p) = logsumexp_k [ log pi_k + sum_c log P(v_c | mu_{k,c}', s_{k,c}) ].

Head layout, per sub-pixel (``params [..., heads, D]``, head = role * K + k):

- role 0: a mixture logit; a pixel's logit l_{p,k} is the sum of its C sub-pixels' role-0 heads;
- role 1: the component's mean mu_{k,c} (centred units);
- role 2: its log-scale (clamped below at -7);
- role 3, for C = 3 only: the coupling coefficient before tanh, R's head giving a (G on R),
  G's giving b (B on R), B's giving c (B on G).

So heads = 4K for RGB images and 3K otherwise; C = 1 (and vector data, one channel) has no
coupling, and any other C is modelled without coupling (channels independent given the component).
PixelCNN++'s 10K numbers per RGB pixel become 12K: the two spare logit heads of each pixel are
summed in, not left unused.

``mean`` is the mixture mean sum_k pi_k E_k[x_c]; with coupling, E_k[x_G] takes x_R at its
component mean E_k[x_R] (and B likewise), a plug-in that is exact where the coefficients are 0.
"""

from __future__ import annotations

import torch

from vaelab.likelihoods.categorical import require_levels
from vaelab.likelihoods.discretized import DiscretizedLogistic
from vaelab.likelihoods.family import LikelihoodFamily, inverse_cdf_draw, level_index

COUPLED_CHANNELS = 3  # R, G, B


class DiscretizedLogisticMixture(LikelihoodFamily):
    """Heads 4K (RGB) or 3K (other channel counts); see the module's head layout."""

    def __init__(self, data_shape: tuple[int, ...], levels: int | None, components: int = 10, squash_mean: bool = True):
        super().__init__(data_shape, require_levels("discretized-logistic-mixture", levels), components, squash_mean)
        self.logistic = DiscretizedLogistic(data_shape, levels)  # one sub-pixel's maths
        self.channels = data_shape[0] if len(data_shape) == 3 else 1
        self.coupled = self.channels == COUPLED_CHANNELS

    @property
    def heads(self) -> int:
        return (4 if self.coupled else 3) * self.components

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mixture log-weights ``[..., K, P]`` and means, log-scales, coefficients ``[..., K, C, P]`` (P pixels)."""
        roles = params.unflatten(-2, (-1, self.components)).unflatten(-1, (self.channels, -1))  # [..., role, K, C, P]
        log_weights = roles[..., 0, :, :, :].sum(-2).log_softmax(-2)
        coefficients = torch.tanh(roles[..., 3, :, :, :]) if self.coupled else None
        return log_weights, roles[..., 1, :, :, :], roles[..., 2, :, :, :], coefficients

    @staticmethod
    def _coupled(means: torch.Tensor, coefficients: torch.Tensor | None, channel: int, earlier: list[torch.Tensor]) -> torch.Tensor:
        """mu_c' of ``channel`` given the centred values of the channels before it (``earlier``)."""
        mean = means[..., channel, :]
        if coefficients is None or channel == 0:
            return mean
        if channel == 1:
            return mean + coefficients[..., 0, :] * earlier[0]
        return mean + coefficients[..., 1, :] * earlier[0] + coefficients[..., 2, :] * earlier[1]

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_weights, means, log_scales, coefficients = self._split(params)
        v = level_index(x, self.levels).unflatten(-1, (self.channels, -1)).unsqueeze(-3)  # [..., 1, C, P]: one for every component
        centred = [2 * v[..., c, :].to(params.dtype) / (self.levels - 1) - 1 for c in range(self.channels)]
        log_components = log_weights
        for c in range(self.channels):
            mean = self._coupled(means, coefficients, c, centred)
            log_components = log_components + self.logistic.level_log_prob(v[..., c, :], mean, log_scales[..., c, :])
        return log_components.logsumexp(-2).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        log_weights, means, log_scales, coefficients = self._split(params)
        component_means: list[torch.Tensor] = []  # E_k[x_c] [..., K, P]
        for c in range(self.channels):
            mean = self._coupled(means, coefficients, c, [2 * m - 1 for m in component_means])
            component_means.append(self.logistic.level_mean(mean, log_scales[..., c, :]))
        return (torch.stack(component_means, -2) * log_weights.exp().unsqueeze(-2)).sum(-3).flatten(-2)

    def draw(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A component per pixel, then its sub-pixels in order R, G, B, each given the levels drawn before it."""
        log_weights, means, log_scales, coefficients = self._split(params)
        component = inverse_cdf_draw(log_weights.exp(), -2, generator).unsqueeze(-2)  # [..., 1, P]

        def chosen(values: torch.Tensor) -> torch.Tensor:  # [..., K, P] -> [..., P]
            return values.gather(-2, component).squeeze(-2)

        drawn: list[torch.Tensor] = []  # centred values [..., P]
        for c in range(self.channels):
            mean = chosen(self._coupled(means, coefficients, c, [d.unsqueeze(-2) for d in drawn]))
            v = self.logistic.level_draw(mean, chosen(log_scales[..., c, :]), generator)
            drawn.append(2 * v.to(params.dtype) / (self.levels - 1) - 1)
        return ((torch.stack(drawn, -2) + 1) / 2).flatten(-2)
