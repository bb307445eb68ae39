"""The report's numbers and sentences, computed from metrics rows alone (no model, no data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DISPLAY_NAMES = {"aevb": "AEVB", "iwae": "IWAE", "iwae-dreg": "IWAE-DReG", "rws": "RWS", "rws-dreg": "RWS-DReG", "vimco": "VIMCO"}  # registry names shown as written in the literature


def display_name(algorithm: str) -> str:
    return DISPLAY_NAMES.get(algorithm, algorithm)


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean over images and its standard error, in nats."""

    mean: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.stderr:.1f}"


@dataclass(frozen=True)
class Series:
    """One split's L_k through training: epochs ``[E]``, means ``[E]`` and standard errors ``[E]``."""

    epochs: list[int]
    mean: list[float]
    stderr: list[float]


@dataclass(frozen=True)
class RunSummary:
    """A finished run in numbers: its last evaluation and its cost.

    ``bound`` and ``elbo`` map each evaluated split to its final L_k and ELBO;
    ``wall_seconds`` counts training and evaluation; ``seconds_per_epoch`` training only.
    """

    algorithm: str
    epoch: int
    k: int
    bound: dict[str, Estimate]
    elbo: dict[str, Estimate]
    wall_seconds: float
    seconds_per_epoch: float


def evaluation_series(rows: list[dict[str, Any]], split: str) -> Series:
    """L_k of ``split`` at every evaluation during training (rows of kind 'eval')."""
    evaluations = [row for row in rows if row["kind"] == "eval" and row["split"] == split]
    return Series(
        [row["epoch"] for row in evaluations],
        [row["bound"] for row in evaluations],
        [row["bound_stderr"] for row in evaluations],
    )


def summarise_run(algorithm: str, rows: list[dict[str, Any]]) -> RunSummary:
    """The final evaluation of each split, total wall time and mean time per epoch of a run's metrics."""
    training = [row for row in rows if row["kind"] == "train"]
    last_epoch = training[-1]["epoch"]
    final = [row for row in rows if row["kind"] == "eval" and row["epoch"] == last_epoch]
    return RunSummary(
        algorithm=algorithm,
        epoch=last_epoch,
        k=final[0]["k"],
        bound={row["split"]: Estimate(row["bound"], row["bound_stderr"]) for row in final},
        elbo={row["split"]: Estimate(row["elbo"], row["elbo_stderr"]) for row in final},
        wall_seconds=max(row["wall_seconds"] for row in rows if row["kind"] in ("train", "eval")),
        seconds_per_epoch=sum(row["epoch_seconds"] for row in training) / len(training),
    )


def comparison_sentence(test_bounds: dict[str, Estimate], k: int) -> str:
    """One sentence ranking algorithms by test L_k, with the lead in nats and the standard errors.

    Two algorithms: "AEVB is ahead of wake-sleep on test L_1000 by 3.2 nats (-140.1 ± 0.4 vs
    -143.3 ± 0.5)."; more are chained in rank order. Leads are differences of the values shown,
    rounded to 0.1 nats; equal rounded values are "level".
    """
    ranked = sorted(test_bounds.items(), key=lambda item: item[1].mean, reverse=True)
    names = [display_name(name) for name, _ in ranked]
    if len(ranked) == 1:
        return _capitalised(f"{names[0]} reaches test L_{k} = {ranked[0][1]} nats; there is nothing to compare it with.")
    steps = []
    for index in range(len(ranked) - 1):
        lead = round(ranked[index][1].mean, 1) - round(ranked[index + 1][1].mean, 1)
        where = f" on test L_{k}" if index == 0 else ""
        if lead == 0:
            steps.append(f"{names[index]} is level with {names[index + 1]}{where}")
        else:
            steps.append(f"{names[index]} is ahead of {names[index + 1]}{where} by {lead:.1f} nats")
    chain = steps[0] if len(steps) == 1 else ", ".join(steps[:-1]) + " and " + steps[-1]
    values = " vs ".join(str(estimate) for _, estimate in ranked)
    return _capitalised(f"{chain} ({values}).")


def caveats(likelihood: str, binarization: str | None, latent_dim: int) -> list[str]:
    """What a reader must know to read the numbers and figures.

    Args:
        likelihood: the model's observation model, 'bernoulli' or 'gaussian'.
        binarization: how grey pixels became Bernoulli targets, or None where nothing was binarized.
        latent_dim: dimension of z.
    """
    notes = []
    if binarization == "none":
        notes.append(
            "Binarization is 'none': grey pixel values are used as Bernoulli targets, so L_K is not a "
            "normalised log-likelihood; compare its nats only within this report, not with published values."
        )
    if likelihood == "gaussian":
        notes.append(
            "The likelihood is Gaussian: L_K bounds a log-density of continuous pixels (nats per image), "
            "which can be positive and depends on the pixel scale; it is not a probability of the image."
        )
    if latent_dim != 2:
        notes.append(f"z has {latent_dim} dimensions: the 2-D latent manifold figure is skipped.")
    return notes


def format_duration(seconds: float) -> str:
    """'0.42 s', '12.3 s', '4 min 05 s', '1 h 02 min'."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _capitalised(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]
