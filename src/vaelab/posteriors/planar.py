"""Amortized planar flow (Rezende & Mohamed 2015, appendix A.1).

    z' = z + u^ tanh(w . z + b),   J = I + u^ psi^T,  psi = tanh'(w . z + b) w,   log |det J| = log (1 + u^ . psi),

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

    def _parts(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u^ and w ``[..., D]`` of step t, and tanh(w . z + b) ``[S, ...]``."""
        d = self.latent_dim
        u, w, b = params[..., t, :d], params[..., t, d : 2 * d], params[..., t, 2 * d]
        return constrained_u(u, w), w, torch.tanh((w * z).sum(-1) + b)

    def step(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, w, activation = self._parts(params, t, z)
        # 1 + (1 - tanh^2) w . u^ > 0 since w . u^ > -1
        return z + u * activation[..., None], torch.log1p((1 - activation**2) * (w * u).sum(-1))

    def solve(self, params: torch.Tensor, t: int, z: torch.Tensor, image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u, w, activation = self._parts(params, t, z)
        psi = (1 - activation**2)[..., None] * w
        # Sherman-Morrison: v (I + u psi^T)^{-1} = v - (v . u) psi / (1 + psi . u)
        return v - ((v * u).sum(-1) / (1 + (psi * u).sum(-1)))[..., None] * psi
