"""Priors p(z): modules whose ``forward()`` returns a distribution with event shape ``[latent_dim]``."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I); no parameters (buffers only, so it follows the model across devices)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Independent:
        return Independent(Normal(self.loc, self.scale), 1)


PRIORS = {"standard-normal": StandardNormalPrior}
