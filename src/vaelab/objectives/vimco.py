"""VIMCO: a k-sample score-function estimator of grad_phi L_k with leave-one-out baselines
(Mnih & Rezende 2016), for latents that cannot be reparameterised (and any others).

    grad_phi L_k = E[ sum_i (L^ - L^_{-i} - w~_i) d log q_phi(z_i | x) / dphi ],
    L^ = log (1/k) sum_j w_j,   L^_{-i} = log (1/k) (sum_{j != i} w_j + exp(mean_{j != i} log w_j)),

where L^_{-i} replaces w_i by the geometric mean of the others; it does not depend on z_i, so
subtracting it leaves the gradient unbiased. A prior that shares phi (the VampPrior) adds its
direct term sum_i w~_i d log p(z_i) / dphi. theta ascends L_k.
"""

from __future__ import annotations

import math

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import ObjectiveOutput, importance_samples, log_mean_exp, normalized_weights


def leave_one_out_bounds(log_weights: torch.Tensor) -> torch.Tensor:
    """L^_{-i} ``[k, B]`` for log-weights ``[k, B]`` (k >= 2): w_i replaced by the others' geometric mean."""
    k = log_weights.shape[0]
    others_mean = (log_weights.sum(0, keepdim=True) - log_weights) / (k - 1)  # [k, B]
    replaced = log_weights.unsqueeze(0).repeat(k, 1, 1)  # [i, j, B]: row i holds the k log-weights ...
    diagonal = torch.arange(k, device=log_weights.device)
    replaced[diagonal, diagonal] = others_mean  # ... with its own entry replaced
    return torch.logsumexp(replaced, dim=1) - math.log(k)


def vimco(model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 2, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """L_k of x ``[B, D_x]`` for theta and VIMCO's surrogate for phi; k = ``num_samples`` >= 2. Returns ``[B]`` tensors."""
    if num_samples < 2:
        raise ValueError(f"vimco needs at least 2 samples for its baselines (got {num_samples})")
    samples = importance_samples(model, x, num_samples, generator, reparameterize=False)
    bound = log_mean_exp(samples.log_weights)
    log_weights = samples.log_weights.detach()
    learning_signal = log_mean_exp(log_weights) - leave_one_out_bounds(log_weights) - normalized_weights(log_weights)
    phi_surrogate = (learning_signal * samples.log_proposal + normalized_weights(log_weights) * samples.log_prior).sum(0)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=phi_surrogate)
