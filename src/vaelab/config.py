"""Experiment configuration: one frozen dataclass per component, composed into one.

A run's resolved :class:`ExperimentConfig` is written as ``config.json`` into its run directory and
read back on resume, so everything that changes the numbers lives here and nothing else does.
Values are validated on construction; a bad value raises :class:`~vaelab.errors.ConfigError`
with a one-line message naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab.data.binarize import BINARIZATIONS
from vaelab.errors import ConfigError

ACTIVATIONS = ("relu", "tanh", "elu", "softplus", "sigmoid")
KL_ESTIMATORS = ("analytic", "monte-carlo")
LIKELIHOODS = ("auto", "bernoulli", "gaussian")
PRIORS = ("standard-normal", "mixture", "vamp", "bernoulli")
LATENTS = ("gaussian", "bernoulli")
RWS_PHI_UPDATES = ("wake", "sleep", "mix")
MATMUL_PRECISIONS = ("fp32", "bf16")  # see vaelab.models.backend.matmul_precision
# Components of a prior when ``prior_components`` is not given: mixture of Gaussians, VampPrior.
DEFAULT_PRIOR_COMPONENTS = {"mixture": 10, "vamp": 500}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(name: str, value: Any) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer (got {value!r})",
    )


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name} must be one of {', '.join(choices)} (got {value!r})")


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how grey pixels become Bernoulli targets.

    ``binarization`` applies to the training split of a grey dataset: ``dynamic`` resamples
    x ~ Bernoulli(grey) every epoch, ``static`` samples once, ``threshold`` rounds at 0.5 and
    ``none`` keeps grey values as Bernoulli targets (not a normalised likelihood). Evaluation
    splits are binarized once with ``binarization_seed`` (dynamic and static alike) so that
    L_k figures are comparable across runs and algorithms.
    """

    dataset: str = "digits"
    binarization: str = "dynamic"
    binarization_seed: int = 0

    def __post_init__(self) -> None:
        from vaelab.data import DATASET_NAMES  # local: vaelab.data imports torch-heavy modules

        _one_of("dataset", self.dataset, DATASET_NAMES)
        _one_of("binarization", self.binarization, BINARIZATIONS)
        _require(
            isinstance(self.binarization_seed, int) and not isinstance(self.binarization_seed, bool) and self.binarization_seed >= 0,
            f"binarization_seed must be a non-negative integer (got {self.binarization_seed!r})",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Networks of the Helmholtz machine; the default is the seed's (z in R^2, 512 ReLU units).

    ``latent_dim`` is one width, or one per stochastic layer from x upwards (e.g. ``(100, 50)``,
    the IWAE paper's two-layer model). ``hidden`` are the x <-> z_1 networks' widths,
    ``upper_hidden`` those between stochastic layers. ``latent`` is the latents' type: Gaussian, or
    Bernoulli (a sigmoid belief network, with the ``bernoulli`` prior). ``prior_components`` is
    the mixture's or VampPrior's size (default 10 and 500).
    """

    latent_dim: int | tuple[int, ...] = 2
    hidden: tuple[int, ...] = (512,)
    activation: str = "relu"
    likelihood: str = "auto"  # 'auto': the dataset's (Bernoulli, Gaussian for frey-face)
    prior: str = "standard-normal"
    latent: str = "gaussian"
    upper_hidden: tuple[int, ...] = (100, 100)
    prior_components: int | None = None

    def __post_init__(self) -> None:
        dims = self.latent_dim
        if isinstance(dims, (list, tuple)):
            _require(len(dims) > 0, "latent_dim must list at least one width")
            for width in dims:
                _positive("latent_dim", width)
            object.__setattr__(self, "latent_dim", dims[0] if len(dims) == 1 else tuple(dims))
        else:
            _positive("latent_dim", dims)
        for name in ("hidden", "upper_hidden"):
            widths = getattr(self, name)
            _require(isinstance(widths, (list, tuple)), f"{name} must be a list of widths (got {widths!r})")
            object.__setattr__(self, name, tuple(widths))
            for width in widths:
                _positive(f"{name} width", width)
        _one_of("activation", self.activation, ACTIVATIONS)
        _one_of("likelihood", self.likelihood, LIKELIHOODS)
        _one_of("prior", self.prior, PRIORS)
        _one_of("latent", self.latent, LATENTS)
        _require(
            (self.latent == "bernoulli") == (self.prior == "bernoulli"),
            f"Bernoulli latents take the bernoulli prior and Gaussian latents a continuous one (got latent {self.latent!r}, prior {self.prior!r})",
        )
        _require(self.prior != "vamp" or len(self.latent_dims) == 1, "the vamp prior needs one stochastic layer (its components are q(z | u))")
        if self.prior_components is not None:
            _positive("prior_components", self.prior_components)

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """Widths of the stochastic layers, from x upwards."""
        return self.latent_dim if isinstance(self.latent_dim, tuple) else (self.latent_dim,)

    @property
    def total_latent_dim(self) -> int:
        """Width of the flat latent z = [z_1, ..., z_L]."""
        return sum(self.latent_dims)

    @property
    def prior_size(self) -> int:
        """Size of the mixture or VampPrior (``prior_components`` or the prior's default)."""
        return self.prior_components or DEFAULT_PRIOR_COMPONENTS.get(self.prior, 1)


@dataclass(frozen=True)
class TrainConfig:
    """The learning algorithm, the optimiser and the evaluation protocol.

    The seed's protocol is L_1000 on train and test every 10 epochs for 100 epochs.
    ``eval_train_size`` evaluates the train-split bound on a fixed subset of that many images
    (``None``: all of them).
    """

    algorithm: str = "aevb"
    num_samples: int = 1  # m (aevb, wake-sleep) or k (the L_k objectives): samples per datapoint
    kl: str = "analytic"  # aevb only: analytic KL or the Monte Carlo estimator of the seed's 1.3
    rws_phi: str = "wake"  # rws only: phi's update, wake-phi, sleep-phi or their average
    groups: int = 1  # miwae and piwae: M groups of num_samples = K samples each
    ciwae_beta: float = 0.5  # ciwae: weight of the ELBO against L_k
    epochs: int = 100
    batch_size: int = 100
    learning_rate: float = 1e-3
    eval_every: int = 10
    eval_k: int = 1000
    eval_splits: tuple[str, ...] = ("train", "test")
    eval_train_size: int | None = None
    eval_batch_size: int = 100
    precision: str = "fp32"  # matmuls of the training steps: fp32 or bf16; evaluations are always fp32

    def __post_init__(self) -> None:
        from vaelab.objectives import OBJECTIVES

        _one_of("algorithm", self.algorithm, tuple(OBJECTIVES))
        _positive("num_samples", self.num_samples)
        minimum = OBJECTIVES[self.algorithm].min_samples
        _require(self.num_samples >= minimum, f"{self.algorithm} needs num_samples >= {minimum} (got {self.num_samples})")
        _require(
            self.algorithm != "rws" or self.rws_phi == "sleep" or self.num_samples >= 2,
            f"rws's {self.rws_phi}-phi update needs num_samples >= 2: with one sample its weight is 1 and the update is noise",
        )
        _one_of("kl", self.kl, KL_ESTIMATORS)
        _one_of("rws_phi", self.rws_phi, RWS_PHI_UPDATES)
        _positive("groups", self.groups)
        _require(
            isinstance(self.ciwae_beta, (int, float)) and not isinstance(self.ciwae_beta, bool) and 0 <= self.ciwae_beta <= 1,
            f"ciwae_beta must be in [0, 1] (got {self.ciwae_beta!r})",
        )
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _require(
            isinstance(self.learning_rate, (int, float)) and not isinstance(self.learning_rate, bool) and 0 < self.learning_rate < 1,
            f"learning_rate must be in (0, 1) (got {self.learning_rate!r})",
        )
        _positive("eval_every", self.eval_every)
        _positive("eval_k", self.eval_k)
        _require(
            isinstance(self.eval_splits, (list, tuple)) and len(self.eval_splits) > 0,
            f"eval_splits must be a non-empty list of split names (got {self.eval_splits!r})",
        )
        object.__setattr__(self, "eval_splits", tuple(self.eval_splits))
        for split in self.eval_splits:
            _one_of("eval split", split, ("train", "valid", "test"))
        if self.eval_train_size is not None:
            _positive("eval_train_size", self.eval_train_size)
        _positive("eval_batch_size", self.eval_batch_size)
        _one_of("precision", self.precision, MATMUL_PRECISIONS)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines a run's numbers."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"seed must be a non-negative integer (got {self.seed!r})",
        )
        from vaelab.objectives import OBJECTIVES

        algorithm = self.train.algorithm
        _require(
            self.model.latent == "gaussian" or not OBJECTIVES[algorithm].reparameterized,
            f"{algorithm} differentiates through reparameterised samples and cannot train Bernoulli latents; "
            "use wake-sleep, rws or vimco",
        )
        _require(
            self.model.prior != "vamp" or OBJECTIVES[algorithm].phi_ascends_bound,
            f"the vamp prior shares the recognition network, which {algorithm}'s phi update does not train as part of the prior; "
            "use aevb, iwae, iwae-dreg, vimco, miwae, piwae or ciwae",
        )
        _require(
            algorithm != "aevb" or self.train.kl != "analytic" or (self.model.prior == "standard-normal" and len(self.model.latent_dims) == 1),
            "aevb's analytic KL needs one stochastic layer and the standard-normal prior; use kl 'monte-carlo'",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from a (JSON) dict; unknown or mistyped keys raise :class:`ConfigError`."""
        if not isinstance(values, dict):
            raise ConfigError("a config must be a JSON object")
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        _check_keys("config", values, set(sections) | {"seed"})
        kwargs: dict[str, Any] = {}
        for name, section_cls in sections.items():
            section = values.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config section '{name}' must be a JSON object")
            _check_keys(name, section, {f.name for f in dataclasses.fields(section_cls)})
            try:
                kwargs[name] = section_cls(**section)
            except TypeError as error:  # e.g. a list where an int belongs
                raise ConfigError(f"config section '{name}': {error}") from None
        if "seed" in values:
            kwargs["seed"] = values["seed"]
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        from vaelab.runio import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        try:
            values = json.loads(Path(path).read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _check_keys(where: str, values: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown)) if any(not k.isidentifier() for k in unknown) else ', '.join(unknown)}")


def config_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Dotted names of the fields whose values differ, e.g. ``['train.learning_rate']``."""
    differences = []
    old_dict, new_dict = old.to_dict(), new.to_dict()
    for section in sorted(old_dict):
        if isinstance(old_dict[section], dict):
            for key in sorted(old_dict[section]):
                if old_dict[section][key] != new_dict[section][key]:
                    differences.append(f"{section}.{key}")
        elif old_dict[section] != new_dict[section]:
            differences.append(section)
    return differences
