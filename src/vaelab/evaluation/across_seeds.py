"""Seeds as an axis: the layout of a multi-seed parent directory, and statistics across seeds.

A number over test images (``bound ± bound_stderr``) holds the trained model fixed; a number over
seeds says what a new training run would give. Each seed is one complete run directory,
``PARENT/seed-<s>/`` (``train --seeds``) or ``PARENT/<group>/seed-<s>/`` (a compare study's
algorithm, a reproduction's row), and ``PARENT/seeds.json`` records the seeds.

Statistics over n seeds' values x_1..x_n: the mean, the sample standard deviation (ddof = 1), the
95% interval mean ± t_{0.975, n-1} sd / sqrt(n) (Student's t), and two tests of a difference
between two groups: paired by seed (``scipy.stats.ttest_rel``: seed s of every algorithm shares
its data order, initial seed and evaluation bits) where the seeds match, else Welch's
(``scipy.stats.ttest_ind(equal_var=False)``). With one seed there is no spread: sd, interval and
tests are None and the words say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from vaelab.config import MAX_SEED, ExperimentConfig
from vaelab.errors import ConfigError, RunError
from vaelab.runio import CONFIG_FILE, METRICS_FILE, SEEDS_FILE, directory_lock, read_metrics, write_json_atomic

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # a difference tested at p >= this is "within the spread of seeds"
SEED_DIR_PREFIX = "seed-"
MAX_SEEDS = 1000  # --seeds N: one run directory each; far more than any study trains, and range(2^63) would hang


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: 'N' is seeds 0..N-1, '3,5,8' those seeds (distinct, in [0, 2^63 - 1]); at most MAX_SEEDS of them.

    Raises:
        ConfigError: anything else.
    """
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds must be a count N (seeds 0..N-1) or a comma-separated list of seeds (got {text!r})") from None
    if max(numbers[0], len(numbers)) > MAX_SEEDS:
        raise ConfigError(f"--seeds names at most {MAX_SEEDS} seeds, one run directory each (got {text!r})")
    seeds = tuple(range(numbers[0])) if len(numbers) == 1 else tuple(numbers)
    if not seeds or any(not 0 <= seed <= MAX_SEED for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must name at least one seed, each once, in [0, 2^63 - 1] (got {text!r})")
    return seeds


def seed_run_dir(parent: str | Path, seed: int) -> Path:
    """The run directory of ``seed`` under ``parent`` (an algorithm's or row's folder, or a train parent)."""
    return Path(parent) / f"{SEED_DIR_PREFIX}{seed}"


def save_seeds(parent: str | Path, seeds: Sequence[int]) -> None:
    """Record ``seeds`` in ``parent/seeds.json``: it marks ``parent`` as a multi-seed parent."""
    write_json_atomic(Path(parent) / SEEDS_FILE, {"seeds": list(seeds)})


def load_seeds(parent: str | Path) -> tuple[int, ...] | None:
    """The seeds recorded in ``parent/seeds.json``, or None where there is none (a lone run or study).

    Raises:
        RunError: the file is unreadable or not a list of distinct seeds.
    """
    path = Path(parent) / SEEDS_FILE
    if not path.exists():
        return None
    try:
        seeds = json.loads(path.read_text())["seeds"]
        valid = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as error:
        raise RunError(f"{path}: unreadable ({type(error).__name__}); it should hold {{\"seeds\": [0, 1, ...]}}") from None
    if not valid or len(set(seeds)) != len(seeds):
        raise RunError(f"{path}: 'seeds' is not a list of distinct seeds in [0, 2^63 - 1]")
    return tuple(seeds)


def seed_runs(parent: str | Path) -> dict[str | None, dict[int, Path]]:
    """Every seed's run directory under the multi-seed ``parent``, by group (None for ``train --seeds``'s
    ``PARENT/seed-<s>/``; the folder name for ``PARENT/<group>/seed-<s>/``), then by seed.

    Raises:
        RunError: ``parent`` has no ``seeds.json``, no run of its seeds, or a group without the run of every seed.
    """
    parent = Path(parent)
    seeds = load_seeds(parent)
    if seeds is None:
        raise RunError(f"{parent}: not a multi-seed directory (no {SEEDS_FILE}); '--seeds N' on train, compare or reproduce makes one")
    if any(seed_run_dir(parent, seed).is_dir() for seed in seeds):
        groups: dict[str | None, Path] = {None: parent}
    else:
        groups = {child.name: child for child in sorted(parent.iterdir()) if any(seed_run_dir(child, seed).is_dir() for seed in seeds)}
    if not groups:
        raise RunError(f"{parent}: holds no run of its seeds {', '.join(map(str, seeds))} yet")
    for folder in groups.values():  # statistics over fewer seeds than recorded would pass for all of them
        missing = [seed for seed in seeds if not seed_run_dir(folder, seed).is_dir()]
        if missing:
            raise RunError(f"{folder}: {SEEDS_FILE} names seeds {', '.join(map(str, seeds))} but seed(s) {', '.join(map(str, missing))} have no run "
                           "yet; finish them with the same command and --resume")
    return {name: {seed: seed_run_dir(folder, seed) for seed in seeds} for name, folder in groups.items()}


@dataclass(frozen=True)
class AcrossSeeds:
    """One number over seeds: the per-seed ``values`` ``[n]`` by ``seeds``, their mean, the sample
    sd (ddof = 1) and the t-based 95% interval of the mean; sd and interval None for one seed."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    mean: float
    sd: float | None
    interval: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.values)

    def __str__(self) -> str:
        """'-95.3 ± 0.8 (sd over 4 seeds)', or '-95.3 (1 seed: no spread)'."""
        if self.sd is None:
            return f"{self.mean:.2f} (1 seed: no spread)"
        return f"{self.mean:.2f} ± {self.sd:.2f} (sd over {self.n} seeds)"

    @property
    def short(self) -> str:
        """'-95.31 ± 0.80' (mean ± sd), or '-95.31' for one seed: a table's cell."""
        return f"{self.mean:.2f}" if self.sd is None else f"{self.mean:.2f} ± {self.sd:.2f}"

    @property
    def interval_words(self) -> str:
        """'[-96.5, -94.1]', or 'none (1 seed)'."""
        return "none (1 seed)" if self.interval is None else f"[{self.interval[0]:.2f}, {self.interval[1]:.2f}]"

    @property
    def per_seed_words(self) -> str:
        """'0: -95.1, 1: -95.9, 2: -94.8'."""
        return ", ".join(f"{seed}: {value:.2f}" for seed, value in zip(self.seeds, self.values))

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "values": list(self.values), "mean": self.mean, "sd": self.sd,
                "interval": None if self.interval is None else list(self.interval), "confidence": CONFIDENCE}


def across_seeds(values: dict[int, float]) -> AcrossSeeds:
    """Mean, sd (ddof = 1) and the 95% interval mean ± t_{0.975, n-1} sd / sqrt(n) of seed -> value.

    Identical values give sd 0 and an interval of zero width.

    Raises:
        ValueError: no values.
    """
    if not values:
        raise ValueError("no seeds to summarise")
    seeds = tuple(values)
    x = np.array([values[seed] for seed in seeds], dtype=np.float64)
    mean = float(x.mean())
    if x.size == 1:
        return AcrossSeeds(seeds, tuple(x.tolist()), mean, None, None)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=x.size - 1)) * sd / math.sqrt(x.size)
    return AcrossSeeds(seeds, tuple(x.tolist()), mean, sd, (mean - half, mean + half))


@dataclass(frozen=True)
class SeedTest:
    """A test of first - second across seeds: the mean difference, its p-value (two-sided), t, degrees
    of freedom, whether it was paired by seed (else Welch's), and each side's number of seeds
    (``sizes``, equal where paired). ``p_value`` None: too few seeds, or no spread at all to test
    against (every difference, or both groups, constant)."""

    difference: float
    paired: bool
    statistic: float | None
    df: float | None
    p_value: float | None
    sizes: tuple[int, int]

    @property
    def name(self) -> str:
        return "paired t-test by seed" if self.paired else "Welch's t-test"

    @property
    def seeds_words(self) -> str:
        """'4 seeds' (paired, or equal sizes), '4 and 3 seeds' (Welch's of unequal groups)."""
        first, second = self.sizes
        return f"{first} seed{'s' * (first != 1)}" if first == second else f"{first} and {second} seeds"

    def to_dict(self) -> dict[str, Any]:
        return {"difference": self.difference, "test": self.name, "statistic": self.statistic, "df": self.df, "p_value": self.p_value,
                "seeds": list(self.sizes)}


def compare_across_seeds(first: AcrossSeeds, second: AcrossSeeds) -> SeedTest:
    """Test first - second: paired by seed (``scipy.stats.ttest_rel``) where both have the same seeds,
    else Welch's unequal-variance test (``scipy.stats.ttest_ind(equal_var=False)``)."""
    paired = sorted(first.seeds) == sorted(second.seeds)
    if paired:
        a = np.array([first.values[first.seeds.index(seed)] for seed in sorted(first.seeds)])
        b = np.array([second.values[second.seeds.index(seed)] for seed in sorted(first.seeds)])
    else:
        a, b = np.array(first.values), np.array(second.values)
    difference = float(a.mean() - b.mean())
    testable = (a.size > 1 and np.ptp(a - b) > 0) if paired else (a.size > 1 and b.size > 1 and (np.ptp(a) > 0 or np.ptp(b) > 0))
    if not testable:
        return SeedTest(difference, paired, None, None, None, (a.size, b.size))
    result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    return SeedTest(difference, paired, float(result.statistic), float(result.df), float(result.pvalue), (a.size, b.size))


def seed_test_words(test: SeedTest) -> str:
    """The test in words: 'significant across 4 seeds (paired t-test by seed, t = 5.10, p = 0.015)', 'within the
    spread of seeds (...)', or why there is no test."""
    if test.p_value is None:
        why = "one seed gives no spread to test against" if min(test.sizes) < 2 else "the seeds show no spread at all"
        return f"untested across seeds ({why})"
    verdict = "significant across seeds" if test.p_value < SIGNIFICANCE else "within the spread of seeds"
    return f"{verdict} ({test.name} over {test.seeds_words}, t = {test.statistic:.2f}, p = {test.p_value:.3g})"


def summary_file(split: str, k: int) -> str:
    """The name of ``evaluate PARENT``'s summary of test L_k over seeds: 'across-seeds-test-L1000.json'."""
    return f"across-seeds-{split}-L{k}.json"


def summarise_groups(values: dict[str | None, dict[int, float]]) -> tuple[dict[str | None, AcrossSeeds], list[tuple[str, str, SeedTest]]]:
    """Each group's :class:`AcrossSeeds` of seed -> value, and a test of every pair of groups (first
    minus second, in the order given; paired by seed where their seeds match)."""
    groups = {group: across_seeds(by_seed) for group, by_seed in values.items()}
    names = list(groups)
    tests = [(a, b, compare_across_seeds(groups[a], groups[b])) for index, a in enumerate(names) for b in names[index + 1:]]
    return groups, tests


def summary_dict(
    what: str, groups: dict[str | None, AcrossSeeds], tests: list[tuple[str, str, SeedTest]], bits: dict[str | None, AcrossSeeds] | None = None
) -> dict[str, Any]:
    """The JSON of a summary over seeds (group None, ``train --seeds``'s, is written as 'runs'); with
    ``bits``, each group's values in bits/dim too (``bits_per_dim``)."""
    return {
        "what": what,
        "groups": {group or "runs": summary.to_dict() for group, summary in groups.items()},
        "tests": [{"first": a, "second": b, **test.to_dict()} for a, b, test in tests],
        **({} if bits is None else {"bits_per_dim": {group or "runs": summary.to_dict() for group, summary in bits.items()}}),
    }


def summary_lines(
    what: str, groups: dict[str | None, AcrossSeeds], tests: list[tuple[str, str, SeedTest]], bits: dict[str | None, AcrossSeeds] | None = None
) -> list[str]:
    """What the command line prints: one line per group (mean ± sd, in bits/dim too where ``bits`` has
    them; 95% interval, per-seed values), one per test (the difference in bits/dim too)."""
    lines = []
    for group, summary in groups.items():
        name = "" if group is None else f"{group}: "
        lines.append(f"{name}{what} = {summary}; 95% interval {summary.interval_words}; per seed {summary.per_seed_words}"
                     + _bits_words(None if bits is None else bits[group]))
    for first, second, test in tests:
        in_bits = "" if bits is None else f" ({bits[first].mean - bits[second].mean:+.4f} bits/dim)"
        lines.append(f"{first} - {second}: {test.difference:+.2f} nats{in_bits}, {seed_test_words(test)}")
    return lines


def _bits_words(summary: AcrossSeeds | None) -> str:
    """'; in bits/dim 1.234 ± 0.002 (sd over seeds)', '; in bits/dim 1.234' for one seed, or '' without bits/dim."""
    if summary is None:
        return ""
    return f"; in bits/dim {summary.mean:.3f}" + ("" if summary.sd is None else f" ± {summary.sd:.3f} (sd over seeds)")


def summarise_rows(what: str, rows: dict[str | None, dict[int, dict[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """The summary over seeds of group -> seed -> evaluation row's ``bound`` (and its ``bound_bpd`` where
    every row has one: discrete data): its JSON (:func:`summary_dict`) and lines (:func:`summary_lines`)."""
    groups, tests = summarise_groups({group: {seed: row["bound"] for seed, row in by_seed.items()} for group, by_seed in rows.items()})
    bits = None
    if all(row.get("bound_bpd") is not None for by_seed in rows.values() for row in by_seed.values()):
        bits = {group: across_seeds({seed: row["bound_bpd"] for seed, row in by_seed.items()}) for group, by_seed in rows.items()}
    return summary_dict(what, groups, tests, bits), summary_lines(what, groups, tests, bits)


def final_row(run_dir: Path, split: str) -> dict[str, Any]:
    """The metrics row of ``run_dir``'s final ``split`` L_k: its ``selected`` row (the best checkpoint on
    the validation split) where it was trained with ``select_on``, else its last ``eval`` row (the last
    checkpoint), so that it is of the checkpoint ``evaluate`` reads by default.

    Raises:
        RunError: no such row yet.
    """
    selecting = ExperimentConfig.load(run_dir / CONFIG_FILE).train.select_on is not None
    kind = "selected" if selecting else "eval"
    rows = [row for row in read_metrics(run_dir / METRICS_FILE) if row.get("kind") == kind and row.get("split") == split]
    if not rows:
        what = f"selected (best-checkpoint) {split}" if selecting else split
        raise RunError(f"{run_dir}: no {what} evaluation in its {METRICS_FILE} yet; continue it with --resume")
    return rows[-1]


def checkpoint_words(rows: dict[int, dict[str, Any]]) -> str:
    """Which checkpoint seed -> final row is of, as ``evaluate`` words it: 'last', or 'best on valid L_5
    (epoch by seed 0: 3, 1: 4)'."""
    row = next(iter(rows.values()))
    if row.get("kind") != "selected":
        return "last"
    epochs = ", ".join(f"{seed}: {r['checkpoint_epoch']}" for seed, r in rows.items())
    return f"best on {row['selected_on']} (epoch by seed {epochs})"


def final_summary(parent: str | Path, split: str = "test") -> tuple[list[str], Path]:
    """``report PARENT`` of ``train --seeds``: every seed's final L_k of ``split`` (:func:`final_row`: of the
    best checkpoint where the runs selected one, else of the last), summarised over seeds
    (:func:`summary_lines`, after a line naming the checkpoint) and written, with the checkpoint, to
    ``parent/across-seeds-final-<split>-L<k>.json`` under ``parent``'s lock; returns the lines and the
    file. Reads saved metrics only.

    Raises:
        RunError: a seed's run has no such evaluation, the runs' k differ, or ``parent`` is locked.
    """
    parent = Path(parent)
    rows = {group: {seed: final_row(run_dir, split) for seed, run_dir in by_seed.items()} for group, by_seed in seed_runs(parent).items()}
    ks = {row["k"] for by_seed in rows.values() for row in by_seed.values()}
    if len(ks) != 1:
        raise RunError(f"{parent}: its seeds' final {split} evaluations have different k ({', '.join(map(str, sorted(ks)))})")
    k = ks.pop()
    what = f"final {split} L_{k}"
    summary, lines = summarise_rows(what, rows)
    checkpoints = {group: checkpoint_words(by_seed) for group, by_seed in rows.items()}
    path = parent / f"across-seeds-final-{split}-L{k}.json"
    with directory_lock(parent, "report"):
        write_json_atomic(path, {**summary, "checkpoints": {group or "runs": words for group, words in checkpoints.items()}})
    named = [f"{'' if group is None else f'{group}: '}checkpoint: {words}" for group, words in checkpoints.items()]
    return named + lines, path
