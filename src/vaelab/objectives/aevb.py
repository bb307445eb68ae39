"""AEVB: the reparameterised ELBO (Kingma & Welling 2013; the seed's section 1.3).

    L(theta, phi; x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)),   z = mu + sigma * eps.

One surrogate moves both parameter groups: its gradient w.r.t. phi flows through the
reparameterised samples.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import ObjectiveOutput, importance_samples
from vaelab.models.sampling import sample


def aevb(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    kl: str = "analytic",
) -> ObjectiveOutput:
    """The ELBO of x ``[B, D_x]`` estimated with m = ``num_samples`` reparameterised samples.

    ``kl='analytic'`` uses KL(q || p) in closed form (Kingma & Welling's estimator B);
    ``kl='monte-carlo'`` estimates it from the same samples, as written in the seed's 1.3:
    (1/m) sum_j [log p(x|z_j) + log p(z_j) - log q(z_j|x)].

    Returns:
        ``ObjectiveOutput`` with ``[B]`` tensors; the bound is the ELBO estimate.
    """
    posterior = model.posterior(x)
    if kl == "analytic":
        z = sample(posterior, (num_samples,), generator)  # [m, B, D]
        expected_log_likelihood = model.log_likelihood(x, z).mean(0)
        elbo = expected_log_likelihood - kl_divergence(posterior, model.prior_distribution())
    elif kl == "monte-carlo":
        elbo = importance_samples(model, x, num_samples, generator, posterior).log_weights.mean(0)
    else:
        raise ValueError(f"kl must be 'analytic' or 'monte-carlo' (got {kl!r})")
    return ObjectiveOutput(bound=elbo.detach(), theta_surrogate=elbo, phi_surrogate=elbo)
