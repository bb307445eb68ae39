"""Learning algorithms as plain functions of (model, batch) on one log-weight core.

Every objective has the signature ``fn(model, x, num_samples, generator, **options)`` and returns
an :class:`ObjectiveOutput` of per-example ``[B]`` tensors. ``OBJECTIVES`` maps each algorithm's
registry name to its function and the names of the ``TrainConfig`` fields it takes as options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from vaelab.objectives.aevb import aevb
from vaelab.objectives.core import ImportanceSamples, ObjectiveOutput, importance_samples, log_mean_exp
from vaelab.objectives.iwae import ciwae, iwae, iwae_dreg, miwae, piwae
from vaelab.objectives.rws import rws, rws_dreg
from vaelab.objectives.vimco import vimco
from vaelab.objectives.wake_sleep import wake_sleep


@dataclass(frozen=True)
class Objective:
    """A registered algorithm.

    Attributes:
        function: ``fn(model, x, num_samples, generator, **options) -> ObjectiveOutput``.
        options: ``TrainConfig`` fields passed on as keyword arguments.
        reparameterized: differentiates through z = mu + sigma * eps (so Gaussian latents only).
        min_samples: the fewest samples per datapoint it works with.
        phi_ascends_bound: phi's update is the gradient of a bound, so it also trains a prior that
            shares phi (the VampPrior); wake-sleep-style updates are not.
    """

    function: Callable[..., ObjectiveOutput]
    options: tuple[str, ...] = ()
    reparameterized: bool = False
    min_samples: int = 1
    phi_ascends_bound: bool = True


OBJECTIVES: dict[str, Objective] = {
    "aevb": Objective(aevb, options=("kl",), reparameterized=True),
    "wake-sleep": Objective(wake_sleep, phi_ascends_bound=False),
    "iwae": Objective(iwae, reparameterized=True),
    "iwae-dreg": Objective(iwae_dreg, reparameterized=True),
    "rws": Objective(rws, options=("rws_phi",), phi_ascends_bound=False),
    "rws-dreg": Objective(rws_dreg, reparameterized=True, min_samples=2, phi_ascends_bound=False),
    "vimco": Objective(vimco, min_samples=2),
    "miwae": Objective(miwae, options=("groups",), reparameterized=True),
    "piwae": Objective(piwae, options=("groups",), reparameterized=True),
    "ciwae": Objective(ciwae, options=("ciwae_beta",), reparameterized=True),
}


def objective_from_config(train_config) -> Callable[..., ObjectiveOutput]:
    """``fn(model, x, generator)`` for the algorithm, sample count and options of ``train_config``."""
    objective = OBJECTIVES[train_config.algorithm]
    options = {name: getattr(train_config, name) for name in objective.options}
    return functools.partial(_call, objective.function, train_config.num_samples, options)


def _call(function, num_samples, options, model, x, generator):
    return function(model, x, num_samples=num_samples, generator=generator, **options)


__all__ = [
    "OBJECTIVES",
    "ImportanceSamples",
    "Objective",
    "ObjectiveOutput",
    "aevb",
    "ciwae",
    "importance_samples",
    "iwae",
    "iwae_dreg",
    "log_mean_exp",
    "miwae",
    "objective_from_config",
    "piwae",
    "rws",
    "rws_dreg",
    "vimco",
    "wake_sleep",
]
