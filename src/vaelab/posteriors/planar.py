"""Amortized planar flow (Rezende & Mohamed 2015, appendix A.1).

    z' = z + u^ tanh(w . z + b),   log |det| = log (1 + u^ . w tanh'(w . z + b)),

with u, w, b computed from the context h(x) for each step, and u^ = u + (m(w . u) - w . u) w / |w|^2,
m(a) = -1 + softplus(a), so that w . u^ = m(w . u) > -1: each step is invertible and its
determinant positive. The inverse has no closed form, so log q of a given z is not offered.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vaelab.posteriors.flow import AmortizedFlow


def constrained_u(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u^ ``[..., D]`` with w . u^ = -1 + softplus(w . u) > -1, for u, w ``[..., D]``."""
    dot = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(dot) - 1 - dot) * w / (w * w).sum(-1, keepdim=True)


class PlanarFlow(AmortizedFlow):
    """T planar steps; the local parameters are ``[..., T, 2 D + 1]``: u, w, then b."""

    name = "planar"

    def __init__(self, latent_dim: int, context_dim: int, steps: int):
        super().__init__(latent_dim, context_dim, steps)
        self.context = nn.Linear(context_dim, steps * (2 * latent_dim + 1))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.context(context).unflatten(-1, (self.steps, 2 * self.latent_dim + 1))

    def transform(self, params: torch.Tensor, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.latent_dim
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for step in range(self.steps):
            u, w, b = params[..., step, :d], params[..., step, d : 2 * d], params[..., step, 2 * d]
            u = constrained_u(u, w)
            activation = torch.tanh((w * z).sum(-1) + b)
            z = z + u * activation[..., None]
            # 1 + (1 - tanh^2) w . u^ > 0 since w . u^ > -1
            log_det = log_det + torch.log1p((1 - activation**2) * (w * u).sum(-1))
        return z, log_det
