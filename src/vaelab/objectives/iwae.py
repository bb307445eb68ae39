"""IWAE: training on the importance-weighted bound L_k itself (Burda, Grosse & Salakhutdinov 2015),
with the standard or the doubly reparameterised phi-gradient (Tucker, Lawson, Gu & Maddison 2018).

    L_k = log (1/k) sum_i w_i,   w_i = p_theta(x, z_i) / q_phi(z_i | x),   z_i = mu + sigma * eps_i.

The standard phi-gradient sum_i w~_i d log w_i / dphi has a signal-to-noise ratio that falls like
1 / sqrt(k) (Rainforth et al. 2018); DReG's unbiased alternative sum_i w~_i^2 (d log w_i / dz_i)
(dz_i / dphi) drops the score term whose variance causes it. w~ are the normalised weights.

Rainforth et al. (2018) trade the two off with M groups of K samples, L^(m)_K each group's bound:
MIWAE averages them, (1/M) sum_m L^(m)_K; PIWAE moves theta on L_{MK} and phi on MIWAE; CIWAE
mixes beta ELBO + (1 - beta) L_k.
"""

from __future__ import annotations

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import (
    ObjectiveOutput,
    block_bound,
    flow_pathwise_log_weights,
    importance_samples,
    log_mean_exp,
    normalized_weights,
    pathwise_log_weights,
)
from vaelab.posteriors.flow import FlowPosterior


def iwae(model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """L_k of x ``[B, D_x]`` with k = ``num_samples``; one surrogate moves theta and phi (k = 1: the ELBO)."""
    bound = log_mean_exp(importance_samples(model, x, num_samples, generator).log_weights)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=bound)


def iwae_dreg(model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> ObjectiveOutput:
    """L_k for theta; phi follows DReG's sum_i w~_i^2 d log w_i / dz_i dz_i / dphi, plus
    sum_i w~_i d log p(z_i) / dphi for a prior that shares phi (the VampPrior). Returns ``[B]`` tensors."""
    posterior, prior = model.posterior(x), model.prior_distribution()
    if isinstance(posterior, FlowPosterior):  # d log q / dz from the flow's steps, no inverse
        log_weights, pathwise = flow_pathwise_log_weights(model, x, posterior, num_samples, generator)
        bound = log_mean_exp(log_weights)
        return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=(normalized_weights(log_weights) ** 2 * pathwise).sum(0))
    samples = importance_samples(model, x, num_samples, generator, posterior)
    bound = log_mean_exp(samples.log_weights)
    weights = normalized_weights(samples.log_weights)
    stopped_log_prior = prior.log_prob(samples.z.detach())
    phi_surrogate = (weights**2 * pathwise_log_weights(samples, posterior, stopped_log_prior) + weights * stopped_log_prior).sum(0)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=phi_surrogate)


def miwae(
    model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None, groups: int = 1
) -> ObjectiveOutput:
    """MIWAE(M, K): the mean of M = ``groups`` bounds L_K, K = ``num_samples`` (M K samples in all). Returns ``[B]``."""
    log_weights = importance_samples(model, x, groups * num_samples, generator).log_weights
    bound = block_bound(log_weights, num_samples)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=bound)


def piwae(
    model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None, groups: int = 1
) -> ObjectiveOutput:
    """PIWAE(M, K): theta on L_{MK}, phi on MIWAE(M, K), from the same M K samples; the bound is L_{MK}. Returns ``[B]``."""
    log_weights = importance_samples(model, x, groups * num_samples, generator).log_weights
    bound = log_mean_exp(log_weights)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=block_bound(log_weights, num_samples))


def ciwae(
    model: HelmholtzMachine, x: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None, ciwae_beta: float = 0.5
) -> ObjectiveOutput:
    """CIWAE(beta): beta ELBO + (1 - beta) L_k from the same k = ``num_samples`` samples (a bound too). Returns ``[B]``."""
    log_weights = importance_samples(model, x, num_samples, generator).log_weights
    bound = ciwae_beta * log_weights.mean(0) + (1 - ciwae_beta) * log_mean_exp(log_weights)
    return ObjectiveOutput(bound=bound.detach(), theta_surrogate=bound, phi_surrogate=bound)
