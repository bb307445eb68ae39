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
from vaelab.objectives.wake_sleep import wake_sleep


@dataclass(frozen=True)
class Objective:
    function: Callable[..., ObjectiveOutput]
    options: tuple[str, ...] = ()  # TrainConfig fields passed on as keyword arguments


OBJECTIVES: dict[str, Objective] = {
    "aevb": Objective(aevb, options=("kl",)),
    "wake-sleep": Objective(wake_sleep),
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
    "importance_samples",
    "log_mean_exp",
    "objective_from_config",
    "wake_sleep",
]
