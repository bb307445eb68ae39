"""Wake-sleep (Hinton, Dayan, Frey & Neal 1995; the homework's section 1.2).

Wake phase, theta only:  maximise (1/m) sum_j log p_theta(x, z_j),  z_j ~ q_phi(z | x).
Sleep phase, phi only:   maximise (1/m) sum_j log q_phi(z_j | x_j),  (z_j, x_j) ~ p_theta(z) p_theta(x | z),
with the dreamed x sampled from the likelihood (not its mean). With a fixed prior the wake term's
gradient is that of E_q[log p_theta(x | z)], as the homework writes it.
"""

from __future__ import annotations

import torch

from vaelab.models import HelmholtzMachine
from vaelab.objectives.core import ObjectiveOutput, importance_samples, sleep_phase


def wake_sleep(
    model: HelmholtzMachine,
    x: torch.Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> ObjectiveOutput:
    """Wake and sleep surrogates for a batch x ``[B, D_x]``, m = ``num_samples`` samples each.

    The sleep phase draws m dreams per batch row (m * B in all), so its surrogate is ``[B]`` too.
    The reported bound is the ELBO at the wake samples: wake-sleep optimises no bound itself.

    The wake term depends on theta alone (q's samples enter as data) and the sleep term on phi
    alone (the dreams enter as data), so their sum serves as both surrogates: one backward pass
    gives each group exactly its own phase's gradient.
    """
    with torch.no_grad():  # the wake phase treats q's samples as observed data: no gradient reaches phi
        posterior = model.posterior(x)
    samples = importance_samples(model, x, num_samples, generator, posterior, reparameterize=False)  # z: [m, B, D]
    both_phases = samples.log_joint.mean(0) + sleep_phase(model, x.shape[0], num_samples, generator)
    return ObjectiveOutput(bound=samples.log_weights.mean(0).detach(), theta_surrogate=both_phases, phi_surrogate=both_phases)
