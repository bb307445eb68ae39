"""What ``vaelab evaluate`` measures, as data: one frozen dataclass whose fields carry their kind,
help and flag as the experiment config's do (:func:`vaelab.config.option`), from which the command
line builds its options. The defaults live here (L_k's k) or in the estimator (AIS's T and M).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vaelab.config import LEARNING_RATE, MATMUL_PRECISIONS, POSITIVE_INT, SPLITS, Kind, is_int, one_of, validate_fields
from vaelab.errors import ConfigError
from vaelab.estimators.ais import STARTS, AISSettings
from vaelab.runio import CHECKPOINT_CHOICES

LK_DEFAULT_K = 1000  # importance samples of L_k, the homework's protocol
AIS_DEFAULT_CHAINS = AISSettings.chains  # M
AIS_DEFAULT_STEPS = AISSettings.steps  # T
ESTIMATORS = ("iwae", "ais")


def _steps(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _switch(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(text)
    return text == "true"


STEPS = Kind(
    "non-negative integers separated by commas",
    _steps,
    lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(is_int(s) and s >= 0 for s in v),
)
SWITCH = Kind("true or false", _switch, lambda v: isinstance(v, bool))  # on the command line, a flag that takes no value


def setting(default: Any, kind: Kind, help: str, *, shown: str | None = "", metavar: str | None = None) -> Any:
    """A field as :func:`vaelab.config.option` makes it, with how its help states the default:
    ``shown`` '' for the default itself, None where the help says it, else that text."""
    metadata = {"kind": kind, "help": help, "optional": default is None, "flag": None, "shown": shown, "metavar": metavar}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class EvaluateSettings:
    """The estimator, its sample sizes and the images of one evaluation of a saved run.

    Raises:
        ConfigError: a value outside its kind, or an option the chosen estimator does not read
            (``steps`` and ``ais_start`` with L_k; ``precision`` with AIS; ``images`` with BDMC).
    """

    k: int | None = setting(
        None, POSITIVE_INT,
        f"importance samples of L_k (default: {LK_DEFAULT_K}); with --estimator ais or --bdmc, the AIS chains per image M "
        f"(default: {AIS_DEFAULT_CHAINS})", shown=None,
    )
    estimator: str = setting(
        "iwae", one_of(ESTIMATORS),
        "iwae: L_k with the Pareto k-hat of each image's weights; ais: annealed importance sampling from q(z|x) to "
        "p(z|x) with HMC (Gaussian latents; T = 0 and M = 1 is L_1)",
    )
    steps: tuple[int, ...] | None = setting(
        None, STEPS, "AIS intermediate distributions T; with --bdmc a comma-separated list, one sandwich each", shown=str(AIS_DEFAULT_STEPS),
    )
    bdmc: int | None = setting(
        None, POSITIVE_INT,
        "bidirectional Monte Carlo on N images simulated from the model: forward AIS (lower bound) and reverse AIS "
        "from the simulated z (upper bound) per T of --steps, and the sandwich width", shown=None, metavar="N",
    )
    ais_start: str = setting(
        "proposal", one_of(STARTS),
        "AIS's first distribution: q(z|x), or p(z) (needs more steps, but does not inherit q's blind spots)",
    )
    split: str = setting("test", one_of(SPLITS), "split to evaluate")
    exact: bool = setting(
        False, SWITCH,
        "2-D latents only: exact log p(x) by quadrature and its gap to L_k for k = 1, 10, 100, 1000, 5000 (ignores --k); "
        "writes exact-<split>.json and the per-image log p(x) and L_k (bounds-*.npz) into the run", shown=None,
    )
    images: int | None = setting(None, POSITIVE_INT, "evaluate the first N images of the split only", shown="all")
    precision: str = setting(
        "fp32", one_of(MATMUL_PRECISIONS),
        "matmul precision of L_k (not --exact): bf16 is about 1.4x faster on CPUs with AVX512-BF16 and moved L_k by "
        "0.02 nats on a trained MNIST model; the row records it",
    )

    gaps: bool = setting(
        False, SWITCH,
        "the inference gap split per image: log p(x) by AIS (--steps T, from q), the encoder's ELBO and L_k (--k), and "
        "the ELBO of q* of the same family optimised for that image (Adam, --gap-steps, --gap-lr); approximation gap "
        "log p(x) - ELBO(q*), amortization gap ELBO(q*) - ELBO(encoder); writes gaps-<split>-epoch<E>.npz into the run",
        shown=None,
    )
    gap_steps: int = setting(1000, POSITIVE_INT, "with --gaps: Adam steps of each image's q* (16 draws each)")
    gap_lr: float = setting(0.01, LEARNING_RATE, "with --gaps: Adam's learning rate for q*")

    checkpoint: str | None = setting(
        None, one_of(CHECKPOINT_CHOICES),
        "which checkpoint: best (best.pt, the best on the valid split, of a run trained with --select-on) or last",
        shown="best where the run selected one, else last",
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.exact:  # quadrature reads the split, the images and nothing else
            return
        if self.gaps:
            if self.annealed or self.precision != "fp32":
                raise ConfigError("--gaps runs its own AIS in fp32: leave --estimator, --bdmc and --precision at their defaults")
            return
        if (self.gap_steps, self.gap_lr) != (1000, 0.01):
            raise ConfigError("--gap-steps and --gap-lr apply to --gaps only")
        if self.annealed:
            if self.precision != "fp32":
                raise ConfigError("--precision applies to L_k only, not to --estimator ais or --bdmc")
            if self.bdmc is not None and self.images is not None:
                raise ConfigError("--bdmc simulates its own images: --images does not apply")
            if self.bdmc is None and len(self.ais_steps) != 1:
                raise ConfigError("--estimator ais takes one --steps T (a list is for --bdmc)")
        elif self.steps is not None or self.ais_start != "proposal":
            raise ConfigError("--steps and --ais-start apply to --estimator ais and --bdmc only")

    @property
    def annealed(self) -> bool:
        """True for AIS and BDMC, False for L_k (and for ``exact``, which ignores both)."""
        return self.bdmc is not None or self.estimator == "ais"

    @property
    def samples(self) -> int:
        """k of L_k, or M, the AIS chains per image."""
        return self.k or (AIS_DEFAULT_CHAINS if self.annealed else LK_DEFAULT_K)

    @property
    def ais_steps(self) -> tuple[int, ...]:
        """The T of each AIS run (one, or one per BDMC sandwich)."""
        return self.steps or (AIS_DEFAULT_STEPS,)

