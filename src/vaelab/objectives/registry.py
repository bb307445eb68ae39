"""The registry of learning algorithms, and the rules each one carries.

Every objective has the signature ``fn(model, x, num_samples, generator, **options)`` and returns
an :class:`~vaelab.objectives.core.ObjectiveOutput` of per-example ``[B]`` tensors. An
:class:`Objective` says which ``TrainConfig`` fields it reads and what it requires of the model
and of the sample count; :func:`check_config` applies those rules to a whole experiment, so the
config (which knows no algorithm) and the command line (which refuses options the algorithm
would not read) ask here rather than restate them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vaelab.config import LADDERS, ExperimentConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.objectives.aevb import aevb
from vaelab.objectives.core import ObjectiveOutput
from vaelab.objectives.iwae import ciwae, iwae, iwae_dreg, miwae, piwae
from vaelab.objectives.rws import rws, rws_dreg
from vaelab.objectives.vimco import vimco
from vaelab.objectives.wake_sleep import wake_sleep
from vaelab.posteriors import get_posterior


@dataclass(frozen=True)
class Objective:
    """A registered algorithm and its rules.

    Attributes:
        function: ``fn(model, x, num_samples, generator, **options) -> ObjectiveOutput``.
        options: ``TrainConfig`` fields passed on as keyword arguments (with ``kl_warmup`` where it
            ``warms_up``, the only ones of :data:`ALGORITHM_OPTIONS` it reads: :attr:`reads`).
        reparameterized: differentiates through z = mu + sigma * eps, so it takes Gaussian latents only.
        min_samples: the fewest samples per datapoint it works with.
        phi_ascends_bound: phi's update is the gradient of a bound, so it also trains a prior that
            shares phi (the VampPrior); wake-sleep-style updates are not.
        extra_rule: further requirements on the experiment: a one-line reason it is refused, or None.
        warms_up: its surrogate weighs a KL term, so it takes each step's KL weight beta
            (``kl_weight``, :func:`kl_weight_at`) and reads ``kl_warmup``.
        scores_given_z: it needs log q(z | x) of z it did not draw through q's reparameterisation
            (dreams, detached samples), so it refuses posterior families without ``log_prob``.
    """

    function: Callable[..., ObjectiveOutput]
    options: tuple[str, ...] = ()
    reparameterized: bool = False
    min_samples: int = 1
    phi_ascends_bound: bool = True
    extra_rule: Callable[[ExperimentConfig], str | None] | None = None
    warms_up: bool = False
    scores_given_z: bool = False

    @property
    def reads(self) -> tuple[str, ...]:
        """The ``TrainConfig`` fields of :data:`ALGORITHM_OPTIONS` it reads."""
        return (*self.options, "kl_warmup") if self.warms_up else self.options

    @property
    def latents(self) -> tuple[str, ...]:
        """The latent types it can train."""
        return ("gaussian",) if self.reparameterized else ("gaussian", "bernoulli")


def _rws_rule(config: ExperimentConfig) -> str | None:
    train = config.train
    if train.rws_phi != "sleep" and train.num_samples < 2:
        return f"rws's {train.rws_phi}-phi update needs num_samples >= 2: with one sample its weight is 1 and the update is noise"
    return None


def _aevb_rule(config: ExperimentConfig) -> str | None:
    model = config.model
    if config.train.kl == "analytic" and (model.prior != "standard-normal" or len(model.latent_dims) > 1 or model.posterior != "diagonal" or model.architecture in LADDERS):
        return "aevb's analytic KL needs one stochastic layer, the standard-normal prior, the diagonal posterior and no ladder; use kl 'auto' or 'monte-carlo'"
    return None


OBJECTIVES: dict[str, Objective] = {
    "aevb": Objective(aevb, options=("kl", "free_bits"), reparameterized=True, extra_rule=_aevb_rule, warms_up=True),
    "wake-sleep": Objective(wake_sleep, phi_ascends_bound=False, scores_given_z=True),
    "iwae": Objective(iwae, reparameterized=True),
    "iwae-dreg": Objective(iwae_dreg, reparameterized=True),
    "rws": Objective(rws, options=("rws_phi",), phi_ascends_bound=False, extra_rule=_rws_rule, scores_given_z=True),
    "rws-dreg": Objective(rws_dreg, reparameterized=True, min_samples=2, phi_ascends_bound=False),
    "vimco": Objective(vimco, min_samples=2, scores_given_z=True),
    "miwae": Objective(miwae, options=("groups",), reparameterized=True),
    "piwae": Objective(piwae, options=("groups",), reparameterized=True),
    "ciwae": Objective(ciwae, options=("ciwae_beta",), reparameterized=True),
}

# TrainConfig fields that only some algorithms read
ALGORITHM_OPTIONS = tuple(sorted({name for objective in OBJECTIVES.values() for name in objective.reads}))


def get_objective(name: str) -> Objective:
    """The registered algorithm ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
    if name not in OBJECTIVES:
        raise ConfigError(f"algorithm must be one of {', '.join(OBJECTIVES)} (got {name!r})")
    return OBJECTIVES[name]


def check_config(config: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` (one line) where ``config``'s algorithm cannot train its model as configured."""
    algorithm = config.train.algorithm
    objective = get_objective(algorithm)
    if config.train.num_samples < objective.min_samples:
        raise ConfigError(f"{algorithm} needs num_samples >= {objective.min_samples} (got {config.train.num_samples})")
    if config.model.latent not in objective.latents:
        able = [name for name, other in OBJECTIVES.items() if config.model.latent in other.latents]
        raise ConfigError(
            f"{algorithm} differentiates through reparameterised samples and cannot train {config.model.latent.capitalize()} latents; "
            f"use {', '.join(able[:-1])} or {able[-1]}"
        )
    if config.model.prior == "vamp" and not objective.phi_ascends_bound:
        able = [name for name, other in OBJECTIVES.items() if other.phi_ascends_bound]
        raise ConfigError(
            f"the vamp prior shares the recognition network, which {algorithm}'s phi update does not train as part of the prior; "
            f"use {', '.join(able[:-1])} or {able[-1]}"
        )
    if objective.scores_given_z and not get_posterior(config.model.posterior).log_prob:
        able = [name for name, other in OBJECTIVES.items() if not other.scores_given_z]
        raise ConfigError(
            f"{algorithm} needs log q(z | x) of a given z, which the {config.model.posterior} posterior cannot compute (no inverse); use {', '.join(able)}"
        )
    reason = objective.extra_rule(config) if objective.extra_rule else None
    if reason:
        raise ConfigError(reason)


def readers(option: str) -> list[str]:
    """The algorithms that read the ``TrainConfig`` field ``option`` (one of :data:`ALGORITHM_OPTIONS`)."""
    return [name for name, objective in OBJECTIVES.items() if option in objective.reads]


def unread_options(given: Sequence[str], algorithms: Sequence[str]) -> list[str]:
    """The fields of ``given`` (set explicitly by the user) that none of ``algorithms`` reads, e.g.
    ``groups`` with iwae: options that would silently do nothing."""
    return [option for option in ALGORITHM_OPTIONS if option in given and not set(readers(option)) & set(algorithms)]


def objective_from_config(train_config: TrainConfig) -> Callable[..., ObjectiveOutput]:
    """``fn(model, x, generator, kl_weight=1.0)`` for the algorithm, sample count and options of
    ``train_config``; ``kl_weight`` (the step's :func:`kl_weight_at`) reaches an algorithm that warms up."""
    objective = get_objective(train_config.algorithm)
    options = {name: getattr(train_config, name) for name in objective.options}
    return functools.partial(_call, objective.function, train_config.num_samples, options, objective.warms_up)


def _call(function, num_samples, options, warms_up, model, x, generator, kl_weight=1.0):
    step_options = {"kl_weight": kl_weight} if warms_up else {}
    return function(model, x, num_samples=num_samples, generator=generator, **options, **step_options)


def warming_up(train_config: TrainConfig) -> bool:
    """Whether ``train_config``'s algorithm warms up its KL term, ``kl_warmup`` being on."""
    return bool(train_config.kl_warmup) and get_objective(train_config.algorithm).warms_up


def kl_weight_at(train_config: TrainConfig, epoch: int, batch_index: int, batches_per_epoch: int) -> float:
    """The KL weight beta of the step that trains batch ``batch_index`` (from 0) of 1-based ``epoch``:

        beta = min(1, s / (E * N)),   s = (epoch - 1) * N + batch_index steps completed before it,

    E = ``kl_warmup`` epochs of N = ``batches_per_epoch`` steps (Sonderby et al. 2016's linear
    warm-up). A function of the step alone, so a resumed run continues it exactly. 1 where the
    warm-up is off or the algorithm does not warm up.
    """
    if not warming_up(train_config):
        return 1.0
    return min(1.0, ((epoch - 1) * batches_per_epoch + batch_index) / (train_config.kl_warmup * batches_per_epoch))


def surrogate_notes(train_config: TrainConfig, algorithms: Sequence[str]) -> list[str]:
    """What a report must say when ``algorithms`` (those of a study) trained on more than their bound:
    one sentence naming KL warm-up and free bits where one of them warms up, else none. E.g.
    "aevb trained with KL warm-up over 10 epochs and 0.25 free nats per stochastic layer; every
    bound shown is the true ELBO or L_k." """
    used = [f"KL warm-up over {train_config.kl_warmup} epoch{'s' * (train_config.kl_warmup != 1)}"] if train_config.kl_warmup else []
    if train_config.free_bits:
        used.append(f"{train_config.free_bits:g} free nats per stochastic layer")
    warming = [name for name in algorithms if get_objective(name).warms_up]
    if not (used and warming):
        return []
    return [f"{' and '.join(warming)} trained with {' and '.join(used)}; every bound shown is the true ELBO or L_k."]


__all__ = [
    "ALGORITHM_OPTIONS", "OBJECTIVES", "Objective", "check_config", "get_objective", "kl_weight_at", "objective_from_config", "readers", "surrogate_notes", "unread_options", "warming_up",
]
