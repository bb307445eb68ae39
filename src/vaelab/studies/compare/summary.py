"""The report's numbers and sentences, computed from metrics rows and the model's configuration
alone (no trained model, no data)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaelab.evaluation.across_seeds import AcrossSeeds, compare_across_seeds, seed_test_words
from vaelab.evaluation.units import BitsPerDim
from vaelab.likelihoods import LikelihoodEntry, get_likelihood

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
    k_hat_above: dict[str, float | None] = field(default_factory=dict)
    bounds_files: dict[str, str | None] = field(default_factory=dict)


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
        k_hat_above={row["split"]: row.get("k_hat_above") for row in final},  # absent from rows written before k-hat
        bounds_files={row["split"]: row.get("bounds_file") for row in final},
    )


def comparison_sentence(test_bounds: dict[str, Estimate], k: int, bits: BitsPerDim | None = None) -> str:
    """One sentence ranking algorithms by test L_k, with the lead in nats and the standard errors;
    with ``bits`` (discrete data: :func:`vaelab.evaluation.units.experiment_bits`), in bits/dim too.

    Two algorithms: "AEVB is ahead of wake-sleep on test L_1000 by 3.2 nats (-140.1 ± 0.4 vs
    -143.3 ± 0.5)."; more are chained in rank order. Leads are differences of the values shown,
    rounded to 0.1 nats; equal rounded values are "level". With bits/dim: "... by 3.2 nats
    (0.0059 bits/dim) (-140.1 ± 0.4 vs -143.3 ± 0.5 nats; 0.258 vs 0.264 bits/dim)."
    """
    ranked = sorted(test_bounds.items(), key=lambda item: item[1].mean, reverse=True)
    names = [display_name(name) for name, _ in ranked]
    if len(ranked) == 1:
        return _capitalised(f"{names[0]} reaches test L_{k} = {ranked[0][1]} nats{_bits_of(ranked[0][1].mean, bits)}; there is nothing to compare it with.")
    steps = []
    for index in range(len(ranked) - 1):
        lead = round(ranked[index][1].mean, 1) - round(ranked[index + 1][1].mean, 1)
        where = f" on test L_{k}" if index == 0 else ""
        if lead == 0:
            steps.append(f"{names[index]} is level with {names[index + 1]}{where}")
        else:
            steps.append(f"{names[index]} is ahead of {names[index + 1]}{where} by {lead:.1f} nats{_bits_lead(lead, bits)}")
    chain = steps[0] if len(steps) == 1 else ", ".join(steps[:-1]) + " and " + steps[-1]
    values = " vs ".join(str(estimate) for _, estimate in ranked)
    return _capitalised(f"{chain} ({values}{_bits_values([estimate.mean for _, estimate in ranked], bits)}).")


def _bits_of(nats: float, bits: BitsPerDim | None) -> str:
    """' (1.234 bits/dim)' of a bound, or '' without bits/dim."""
    return "" if bits is None else f" ({bits.of(nats):.3f} bits/dim)"


def _bits_lead(nats: float, bits: BitsPerDim | None) -> str:
    """' (0.0059 bits/dim)' of a lead in nats, or '' without bits/dim."""
    return "" if bits is None else f" ({_bits_number(bits.spread(nats))} bits/dim)"


def _bits_values(means: list[float], bits: BitsPerDim | None) -> str:
    """' nats; 0.258 vs 0.264 bits/dim' of ranked bounds, or '' without bits/dim."""
    return "" if bits is None else " nats; " + " vs ".join(f"{bits.of(mean):.3f}" for mean in means) + " bits/dim"


def _bits_number(value: float) -> str:
    """'0.012'; below 0.01, two significant digits ('0.0042'), so that a lead of a few nats over many pixels does not read as 0.000."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:#.2g}"


SIGNIFICANT_STANDARD_ERRORS = 2.0  # a paired difference under this many standard errors is called not significant


def paired_difference(first: np.ndarray, second: np.ndarray) -> Estimate:
    """The mean of per-image differences first - second ``[N]`` and its paired standard error std / sqrt(N).

    The same images' values go up and down together (an image hard for one model is hard for the
    other), so the paired standard error is far below the two runs' own standard errors combined.
    """
    difference = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    stderr = float(difference.std(ddof=1) / math.sqrt(difference.size)) if difference.size > 1 else math.nan
    return Estimate(float(difference.mean()), stderr)


def paired_comparison_sentence(
    test_bounds: dict[str, Estimate], per_image: dict[str, tuple[np.ndarray, np.ndarray]], k: int, bits: BitsPerDim | None = None
) -> str:
    """The comparison sentence built on paired differences: algorithms ranked by test L_k, each lead
    the mean of the per-image differences on the test images both runs scored, ± its paired
    standard error (:func:`paired_difference`). A lead under two paired standard errors
    (|mean| < 2 SE) is said to be not significant.

    E.g. "AEVB is ahead of wake-sleep on test L_1000 by 3.21 ± 0.12 nats (-140.1 ± 0.4 vs -143.3 ± 0.5);
    a lead is the mean per-image difference over the same 300 test images ± its paired standard error."

    Args:
        test_bounds: algorithm -> its final test L_k (mean ± standard error).
        per_image: algorithm -> (image indices ``[N]``, per-image L_k ``[N]``) of that evaluation.
        bits: the study's bits/dim (discrete data), said beside each lead and value; None: nats alone.
    """
    ranked = sorted(test_bounds.items(), key=lambda item: item[1].mean, reverse=True)
    if len(ranked) == 1:
        return comparison_sentence(test_bounds, k, bits)
    steps, counts = [], set()
    for index in range(len(ranked) - 1):
        (ahead, _), (behind, _) = ranked[index], ranked[index + 1]
        common, ahead_at, behind_at = np.intersect1d(per_image[ahead][0], per_image[behind][0], return_indices=True)
        counts.add(common.size)
        lead = paired_difference(per_image[ahead][1][ahead_at], per_image[behind][1][behind_at])
        where = f" on test L_{k}" if index == 0 else ""
        names = display_name(ahead), display_name(behind)
        shown = _with_two_digits_of_error(lead)
        if abs(lead.mean) >= SIGNIFICANT_STANDARD_ERRORS * lead.stderr:
            steps.append(f"{names[0]} is ahead of {names[1]}{where} by {shown} nats{_bits_lead(lead.mean, bits)}")
        else:
            in_bits = "" if bits is None else f", {_bits_number(bits.spread(lead.mean))} bits/dim"
            steps.append(f"{names[0]} is not significantly ahead of {names[1]}{where} ({shown} nats{in_bits}, under two standard errors)")
    chain = steps[0] if len(steps) == 1 else ", ".join(steps[:-1]) + " and " + steps[-1]
    values = " vs ".join(str(estimate) for _, estimate in ranked) + _bits_values([estimate.mean for _, estimate in ranked], bits)
    images = f"the same {counts.pop()} test images" if len(counts) == 1 else "the test images both runs scored"
    return _capitalised(f"{chain} ({values}); a lead is the mean per-image difference over {images} ± its paired standard error.")


def seeds_comparison_sentence(
    test_bounds: dict[str, AcrossSeeds], per_image: dict[str, tuple[np.ndarray, np.ndarray]] | None, seed: int | None, k: int,
    bits: BitsPerDim | None = None,
) -> str:
    """The comparison sentence of a study with seeds: algorithms ranked by mean test L_k over seeds,
    each lead the difference of the means, tested across seeds (paired by seed, else Welch's:
    :func:`vaelab.evaluation.across_seeds.compare_across_seeds`) and said to be within the spread of
    seeds where p >= 0.05; beside it, the per-image paired standard error of the lead at one seed's
    models (:func:`paired_difference`), which holds the models fixed and so says nothing of a new run.

    E.g. "AEVB is ahead of wake-sleep on test L_1000 by 3.21 nats over 4 seeds, significant across seeds
    (paired t-test by seed over 4 seeds, t = 9.10, p = 0.0028); per-image paired SE, model fixed (seed 0): 0.12 nats.
    Mean ± sd over seeds: -140.10 ± 0.40 vs -143.31 ± 0.52."

    Args:
        test_bounds: algorithm -> its final test L_k over seeds.
        per_image: algorithm -> (image indices ``[N]``, per-image L_k ``[N]``) of ``seed``'s run, or None
            (runs trained before per-image files).
        bits: the study's bits/dim (discrete data), said beside each lead and mean; None: nats alone.
    """
    ranked = sorted(test_bounds.items(), key=lambda item: item[1].mean, reverse=True)
    if len(ranked) == 1:
        name, summary = ranked[0]
        return _capitalised(f"{display_name(name)} reaches test L_{k} = {summary}{_bits_of(summary.mean, bits)}; there is nothing to compare it with.")
    steps = []
    for index in range(len(ranked) - 1):
        (ahead, first), (behind, second) = ranked[index], ranked[index + 1]
        test = compare_across_seeds(first, second)
        where = f" on test L_{k}" if index == 0 else ""
        step = f"{display_name(ahead)} is ahead of {display_name(behind)}{where} by {_nats(test.difference)} nats{_bits_lead(test.difference, bits)} over {test.seeds_words}, {seed_test_words(test)}"
        if per_image is not None:
            common, ahead_at, behind_at = np.intersect1d(per_image[ahead][0], per_image[behind][0], return_indices=True)
            lead = paired_difference(per_image[ahead][1][ahead_at], per_image[behind][1][behind_at])
            step += f"; per-image paired SE, model fixed (seed {seed}): {_with_two_digits_of_error(lead).split(' ± ')[1]} nats"
        steps.append(step)
    values = " vs ".join(summary.short for _, summary in ranked) + _bits_values([summary.mean for _, summary in ranked], bits)
    return _capitalised(". ".join(steps) + f". Mean ± sd over seeds: {values}.")


def _nats(value: float) -> str:
    """'3.21'; below 0.01, two significant digits ('0.0042'), so that a small lead does not read as 0.00."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:#.2g}"


def _with_two_digits_of_error(estimate: Estimate) -> str:
    """'3.21 ± 0.12'; with a smaller standard error, as many decimals as show its first two digits ('0.0123 ± 0.0040')."""
    stderr = estimate.stderr
    decimals = 2 if not math.isfinite(stderr) or stderr >= 0.01 else min(8, 1 - math.floor(math.log10(stderr))) if stderr > 0 else 2
    return f"{estimate.mean:.{decimals}f} ± {stderr:.{decimals}f}"


PRIOR_WORDS = {
    # prior name -> (what p(z) is in words, the draws z ~ p(z) on a figure title: matplotlib mathtext)
    "standard-normal": ("p(z) = N(0, I), the standard normal", "$z \\sim p(z) = N(0, I)$"),
    "mixture": ("p(z) = Σ_c π_c N(μ_c, diag σ_c²), a learned mixture of {n} diagonal Gaussians", "$z \\sim p(z)$, a learned mixture of {n} Gaussians"),
    "vamp": (
        "p(z) = (1/{n}) Σ_k q(z | u_k), the VampPrior over {n} learned pseudo-inputs u_k (Tomczak & Welling 2018)",
        "$z \\sim p(z)$, a VampPrior of {n} pseudo-inputs",
    ),
    "bernoulli": (
        "p(z) = Π_d Bernoulli(z_d; σ(a_d)), independent binary units with learned probabilities",
        "binary $z \\sim p(z) = \\prod_d\\, \\mathrm{{Bernoulli}}(z_d)$",
    ),
}


@dataclass(frozen=True)
class ModelDescription:
    """What the captions say about the trained model: its prior, likelihood and latents, from its
    configuration (the names of :class:`vaelab.config.ModelConfig`), so that no caption claims
    N(0, I) or pixel probabilities for a model that has neither.

    ``likelihood`` is the registry name of the one used (never 'auto'), whose entry
    (:mod:`vaelab.likelihoods`) gives every word said of p(x | z), whatever network computes it;
    ``latent_dims`` the widths of the stochastic layers from x upwards; ``components`` the
    mixture's or VampPrior's size; ``ladder`` whether each layer's prior conditions on every layer
    above it (a ladder's top-down path, :mod:`vaelab.models.ladder`) rather than on the next one.
    """

    prior: str
    likelihood: str
    latent: str
    latent_dims: tuple[int, ...]
    components: int = 1
    ladder: bool = False

    @property
    def latent_dim(self) -> int:
        return sum(self.latent_dims)

    @property
    def latent_space(self) -> str:
        """Where z lives, e.g. 'R^2', '{0, 1}^200', 'R^(100 + 50)' (plain text; '^' marks the exponent)."""
        dims = str(self.latent_dim) if len(self.latent_dims) == 1 else "(" + " + ".join(map(str, self.latent_dims)) + ")"
        return ("{0, 1}^" if self.latent == "bernoulli" else "R^") + dims

    @property
    def _above(self) -> str:
        return "z_(>l)" if self.ladder else "z_(l+1)"

    @property
    def prior_words(self) -> str:
        """p(z) in words, e.g. 'p(z) = N(0, I), the standard normal'; with several stochastic layers,
        the prior of the top one and how the others are drawn."""
        words = PRIOR_WORDS[self.prior][0].format(n=self.components)
        if len(self.latent_dims) == 1:
            return words
        return f"{words.replace('p(z)', 'p(z_L)', 1)} over the top layer z_L, then each z_l ~ p(z_l | {self._above}) down to z_1"

    @property
    def prior_title(self) -> str:
        """The draws z ~ p(z) for a figure title (matplotlib mathtext)."""
        title = PRIOR_WORDS[self.prior][1].format(n=self.components)
        if len(self.latent_dims) == 1:
            return title
        above = "z_{>l}" if self.ladder else "z_{l+1}"
        return title.replace("z \\sim p(z)", "z_L \\sim p(z_L)", 1) + f", then $z_l \\sim p(z_l \\mid {above})$"

    @property
    def entry(self) -> LikelihoodEntry:
        """The registry entry of the likelihood."""
        return get_likelihood(self.likelihood)

    @property
    def mean_words(self) -> str:
        """What a decoder mean E[x | z] is, pixel by pixel (the entry's ``mean_words``)."""
        return self.entry.mean_words

    @property
    def likelihood_words(self) -> str:
        """What p(x | z) is (the entry's ``caption``)."""
        return self.entry.caption

    @property
    def uniform_grid(self) -> bool:
        """Whether the latent grid z = Phi^-1(u) covers equal prior probability per tile: only under N(0, I)."""
        return self.prior == "standard-normal"


def describe_model(prior: str, likelihood: str, latent: str, latent_dims: tuple[int, ...], components: int, ladder: bool = False) -> ModelDescription:
    """The :class:`ModelDescription` of a model; ``components`` is ignored by priors that have none."""
    return ModelDescription(prior, likelihood, latent, tuple(latent_dims), components if prior in ("mixture", "vamp") else 1, ladder)


def clipped_fraction(images) -> float:
    """The fraction of the values of ``images`` (any shape, numpy) outside [0, 1]: the pixels a grey
    scale from black (0) to white (1) can only show clipped."""
    return float(((images < 0) | (images > 1)).mean())


def clipping_sentence(fractions: dict[str, float]) -> str:
    """How out-of-range decoder means are drawn, with each algorithm's share of them, e.g.
    'Means outside [0, 1] are drawn clipped (below 0 black, above 1 white): 21.3% of the pixels shown
    for AEVB, 0.0% for wake-sleep.'

    Args:
        fractions: the name shown for each algorithm -> its fraction of clipped pixels.
    """
    shares = [f"{share:.1%} for {name}" for name, share in fractions.items()]
    shares[0] = shares[0].replace(" for ", " of the pixels shown for ", 1)
    return f"Means outside [0, 1] are drawn clipped (below 0 black, above 1 white): {', '.join(shares)}."


def caveats(likelihood: str, binarization: str | None, latent_dim: int, data_dim: int, levels: int | None) -> list[str]:
    """What a reader must know to read the numbers and figures.

    Args:
        likelihood: the registry name of the model's p(x | z) (:mod:`vaelab.likelihoods`).
        binarization: how grey pixels became Bernoulli targets, or None where nothing was binarized.
        latent_dim: dimension of z.
        data_dim: D, the sub-pixels of one image.
        levels: the values a sub-pixel of the data takes, or None for continuous data.
    """
    entry, notes = get_likelihood(likelihood), []
    if binarization == "none":
        notes.append(
            "Binarization is 'none': grey pixel values are used as Bernoulli targets, so L_K is not a "
            "normalised log-likelihood and has no bits/dim; compare its nats only within this report, not with published values."
        )
    if entry.dequantizes and levels is not None:
        notes.append(
            f"The likelihood is a density ({entry.caption}) of the dequantized pixels y = (v + u) / {levels}, u ~ U[0, 1): "
            f"L_K bounds a log-density (nats per image), which compares with the log-probabilities of discrete likelihoods only "
            f"after subtracting D ln(levels) = {data_dim} ln {levels} = {data_dim * math.log(levels):.1f} nats; the bits/dim include it."
        )
    elif not entry.discrete:
        notes.append(
            f"The likelihood is a density ({entry.caption}): L_K bounds a log-density of continuous pixels (nats per image), "
            "which can be positive and depends on the pixel scale; it is not a probability of the image, and has no bits/dim."
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
