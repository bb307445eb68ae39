"""Learning algorithms as plain functions of (model, batch) on one log-weight core.

Every objective has the signature ``fn(model, x, num_samples, generator, **options)`` and returns
an :class:`ObjectiveOutput` of per-example ``[B]`` tensors. ``OBJECTIVES`` (in
:mod:`vaelab.objectives.registry`) maps each algorithm's registry name to its function and its
rules: the ``TrainConfig`` fields it reads, the latents it takes, its minimum k.
"""

from vaelab.objectives.aevb import aevb
from vaelab.objectives.core import (
    ImportanceSamples,
    ObjectiveOutput,
    importance_samples,
    log_mean_exp,
)
from vaelab.objectives.iwae import ciwae, iwae, iwae_dreg, miwae, piwae
from vaelab.objectives.registry import (
    OBJECTIVES,
    Objective,
    check_config,
    get_objective,
    kl_weight_at,
    objective_from_config,
    warming_up,
)
from vaelab.objectives.rws import (
    rws,
    rws_dreg,
    rws_dreg_phi_surrogate_from_log_weight,
    wake_phi_surrogate_from_log_weight,
)
from vaelab.objectives.vimco import (
    leave_one_out_bounds,
    vimco,
    vimco_phi_surrogate_from_log_weight,
)
from vaelab.objectives.wake_sleep import wake_sleep

__all__ = [
    "OBJECTIVES",
    "ImportanceSamples",
    "Objective",
    "ObjectiveOutput",
    "aevb",
    "check_config",
    "ciwae",
    "get_objective",
    "importance_samples",
    "iwae",
    "iwae_dreg",
    "kl_weight_at",
    "leave_one_out_bounds",
    "log_mean_exp",
    "miwae",
    "objective_from_config",
    "piwae",
    "rws",
    "rws_dreg",
    "rws_dreg_phi_surrogate_from_log_weight",
    "vimco",
    "vimco_phi_surrogate_from_log_weight",
    "wake_phi_surrogate_from_log_weight",
    "wake_sleep",
    "warming_up",
]
