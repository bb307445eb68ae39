"""Householder flow (Tomczak & Welling 2016): T reflections of the Gaussian's sample,

    z' = H z,  H = I - 2 v v^T / |v|^2,   log |det| = 0,

the vectors v_t computed from the context h(x) (one linear map for all steps, where the paper
chains v_{t+1} = W v_t). The result is a full-covariance Gaussian; a reflection is symmetric and
its own inverse, so log q of a given z is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.posteriors.flow import AmortizedFlow


def reflect(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(I - 2 v v^T / |v|^2) z for v ``[..., D]`` and z ``[S, ..., D]``."""
    return z - 2 * v * ((v * z).sum(-1, keepdim=True) / (v * v).sum(-1, keepdim=True))


class HouseholderFlow(AmortizedFlow):
    """T reflections; the local parameters are the vectors ``[..., T, D]``."""

    name = "householder"
    invertible = True

    def __init__(self, latent_dim: int, context_dim: int, steps: int):
        super().__init__(latent_dim, context_dim, steps)
        self.context = nn.Linear(context_dim, steps * latent_dim)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.context(context).unflatten(-1, (self.steps, self.latent_dim))

    def step(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return reflect(params[..., t, :], z), z.new_zeros(z.shape[:-1])

    def solve(self, params: torch.Tensor, t: int, z: torch.Tensor, image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return reflect(params[..., t, :], v)  # v H^{-1} = v H = (H v^T)^T: H is symmetric and its own inverse

    def inverse(self, params: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for t in reversed(range(self.steps)):
            z = reflect(params[..., t, :], z)
        return z, z.new_zeros(z.shape[:-1])
