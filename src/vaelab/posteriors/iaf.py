"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016).

Each step is a MADE (Germain et al. 2015) of one ELU hidden layer, to which the context h(x) adds
a per-step projection, giving for every dimension d a shift m_d and a gate s_d that depend on
z_{<d} (in the step's order) only; the numerically stable update of the paper's eq. 14:

    sigma = sigmoid(s),   z' = sigma * z + (1 - sigma) * m,   log |det| = sum_d log sigma_d

(the Jacobian is triangular in the step's order). Successive steps reverse the order. The inverse
is D sequential passes, so log q of a given z is not offered; d log q / dz at a drawn z, which DReG
needs, takes D - 1 vector-Jacobian products per step (:meth:`InverseAutoregressiveFlow.solve`).
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

    def _shift_and_gate(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m and s ``[S, ..., D]`` of step t: the MADE of z with the context's projection added to its hidden layer."""
        hidden = F.elu(z @ (self.input_weight[t] * self.input_mask[t]).T + self.input_bias[t] + params[..., t, :])
        shift = hidden @ (self.shift_weight[t] * self.output_mask[t]).T + self.shift_bias[t]
        gate = hidden @ (self.gate_weight[t] * self.output_mask[t]).T + self.gate_bias[t]
        return shift, gate

    def step(self, params: torch.Tensor, t: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, gate = self._shift_and_gate(params, t, z)
        sigma = torch.sigmoid(gate)
        return sigma * z + (1 - sigma) * shift, F.logsigmoid(gate).sum(-1)

    def solve(self, params: torch.Tensor, t: int, z: torch.Tensor, image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # J = diag(sigma) + L, L strictly triangular in the step's order: u = (v - u L) / sigma, exact
        # after D rounds (L is nilpotent); u L = u J - sigma u, u J one vector-Jacobian product.
        sigma = torch.sigmoid(self._shift_and_gate(params, t, z)[1]).detach()
        u = v / sigma
        for _ in range(self.latent_dim - 1):
            (product,) = torch.autograd.grad(image, z, grad_outputs=u, retain_graph=True)
            u = (v - (product - sigma * u)) / sigma
        return u
