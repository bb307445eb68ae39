"""AEVB: the reparameterised ELBO (Kingma & Welling 2013; the homework's section 1.3).

    L(theta, phi; x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)),   z = mu + sigma * eps.

One surrogate moves both parameter groups: its gradient w.r.t. phi flows through the
reparameterised samples.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from vaelab.models import HelmholtzMachine
from vaelab.models.sampling import sample
from vaelab.objectives.core import ObjectiveOutput, importance_samples


def aevb(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    kl: str = "auto",
) -> ObjectiveOutput:
    """The ELBO of x ``[B, D_x]`` estimated with m = ``num_samples`` reparameterised samples.

    ``kl='analytic'`` uses KL(q || p) in closed form (Kingma & Welling's estimator B);
    ``kl='monte-carlo'`` estimates it from the same samples, as written in the original study's 1.3:
    (1/m) sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)]; ``kl='auto'`` takes the closed form
    where torch.distributions has one for (q, p) and the Monte Carlo estimator otherwise (mixture
    and VampPrior priors, stacked stochastic layers).

    Returns:
        ``ObjectiveOutput`` with ``[B]`` tensors; the bound is the ELBO estimate.
    """
    if kl not in ("auto", "analytic", "monte-carlo"):
        raise ValueError(f"kl must be 'auto', 'analytic' or 'monte-carlo' (got {kl!r})")
    posterior = model.posterior(x)
    closed_form = None
    if kl != "monte-carlo":
        try:
            closed_form = kl_divergence(posterior, model.prior_distribution())  # [B]
        except NotImplementedError:  # no closed form for this pair
            if kl == "analytic":
                raise ValueError("no closed-form KL for this posterior and prior; use kl 'auto' or 'monte-carlo'") from None
    if closed_form is not None:
        z = sample(posterior, (num_samples,), generator)  # [m, B, D]
        elbo = model.log_likelihood(x, z).mean(0) - closed_form
    else:
        elbo = importance_samples(model, x, num_samples, generator, posterior).log_weights.mean(0)
    return ObjectiveOutput(bound=elbo.detach(), theta_surrogate=elbo, phi_surrogate=elbo)
