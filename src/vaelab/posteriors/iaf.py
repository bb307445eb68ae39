"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016).

Each step is a MADE (Germain et al. 2015) of one ELU hidden layer, to which the context h(x) adds
a per-step projection, giving for every dimension d a shift m_d and a gate s_d that depend on
z_{<d} (in the step's order) only; the numerically stable update of the paper's eq. 14:

    sigma = sigmoid(s),   z' = sigma * z + (1 - sigma) * m,   log |det| = sum_d log sigma_d

(the Jacobian is triangular in the step's order). Successive steps reverse the order. The inverse
is D sequential passes, so log q of a given z is not offered.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vaelab.posteriors.flow import AmortizedFlow

# The gate's initial bias: sigma = sigmoid(2) ~ 0.88, so each step starts near the identity.
GATE_BIAS = 2.0


def made_masks(latent_dim: int, hidden: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MADE's masks ``[hidden, D]`` (input -> hidden) and ``[D, hidden]`` (hidden -> output) for the
    order 1..D (``reverse``: D..1): output d sees inputs earlier than d only."""
    order = torch.arange(latent_dim, 0, -1) if reverse else torch.arange(1, latent_dim + 1)
    # hidden degrees cycle through 1..D-1 (all 0, the context alone, when D = 1)
    degrees = torch.arange(hidden) % max(latent_dim - 1, 1) + (1 if latent_dim > 1 else 0)
    return (degrees[:, None] >= order[None, :]).float(), (order[:, None] > degrees[None, :]).float()


class InverseAutoregressiveFlow(AmortizedFlow):
    """T gated IAF steps; the local parameters are the context's projections ``[..., T, hidden]``,
    hidden = max(2 D, 16) units per step."""

    name = "iaf"

    def __init__(self, latent_dim: int, context_dim: int, steps: int):
        super().__init__(latent_dim, context_dim, steps)
        self.hidden = max(2 * latent_dim, 16)
        masks = [made_masks(latent_dim, self.hidden, reverse=bool(step % 2)) for step in range(steps)]
        self.register_buffer("input_mask", torch.stack([m[0] for m in masks]))  # [T, hidden, D]
        self.register_buffer("output_mask", torch.stack([m[1] for m in masks]))  # [T, D, hidden]
        bound_in, bound_out = 1 / math.sqrt(latent_dim), 1 / math.sqrt(self.hidden)
        self.input_weight = nn.Parameter(torch.empty(steps, self.hidden, latent_dim).uniform_(-bound_in, bound_in))
        self.input_bias = nn.Parameter(torch.zeros(steps, self.hidden))
        self.shift_weight = nn.Parameter(torch.empty(steps, latent_dim, self.hidden).uniform_(-bound_out, bound_out))
        self.shift_bias = nn.Parameter(torch.zeros(steps, latent_dim))
        self.gate_weight = nn.Parameter(torch.empty(steps, latent_dim, self.hidden).uniform_(-bound_out, bound_out))
        self.gate_bias = nn.Parameter(torch.full((steps, latent_dim), GATE_BIAS))
        self.context = nn.Linear(context_dim, steps * self.hidden)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.context(context).unflatten(-1, (self.steps, self.hidden))

    def transform(self, params: torch.Tensor, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for step in range(self.steps):
            hidden = F.elu(z @ (self.input_weight[step] * self.input_mask[step]).T + self.input_bias[step] + params[..., step, :])
            shift = hidden @ (self.shift_weight[step] * self.output_mask[step]).T + self.shift_bias[step]
            gate = hidden @ (self.gate_weight[step] * self.output_mask[step]).T + self.gate_bias[step]
            sigma = torch.sigmoid(gate)
            z = sigma * z + (1 - sigma) * shift
            log_det = log_det + F.logsigmoid(gate).sum(-1)
        return z, log_det
