"""Files of a comparison study: several algorithms trained alike, one run directory each.

A study directory holds:

- ``compare.json``: the algorithms and the configuration they share (every field but
  ``train.algorithm``), so that ``vaelab report`` knows what belongs to the study;
- ``<algorithm>/``: one run directory per algorithm (see :mod:`vaelab.runio`), plus
  ``bound_curve.json``, the test L_k for every k dividing 1000 at the run's last checkpoint;
  with seeds (``compare --seeds``), ``<algorithm>/seed-<s>/`` holds the run of each seed instead,
  and ``seeds.json`` records the seeds (:mod:`vaelab.evaluation.across_seeds`): grouped by
  algorithm, so that ``<algorithm>/`` is that algorithm's seeds, as ``train --seeds`` writes them;
- ``figures/`` and ``report.html``, rebuilt from the files above by :func:`vaelab.studies.compare.build_report`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.config import ExperimentConfig
from vaelab.errors import ConfigError, RunError
from vaelab.evaluation.across_seeds import load_seeds, save_seeds, seed_run_dir
from vaelab.objectives.registry import check_config, get_objective
from vaelab.runio import BOUND_CURVE_FILE, STUDY_FILE, write_json_atomic

# The k of the L_k-against-k curve: every divisor of 1000 in a 1-2-5 progression, so one set of
# 1000 samples per image gives all of them (vaelab.estimators.bounds.bound_curve).
CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class Study:
    """The algorithms of a study and the configuration they share.

    ``config.train.algorithm`` is ignored: each algorithm's run uses :meth:`run_config`.
    ``curve_images``: test images for the L_k-against-k curve (a fixed subset; None: all).
    ``seeds``: one run per seed and algorithm, each with ``seed`` replaced (None: one run each
    with ``config.seed``; see :func:`algorithm_run_dir`).
    """

    algorithms: tuple[str, ...]
    config: ExperimentConfig
    curve_images: int | None = None
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        if not self.algorithms:
            raise ConfigError("a study needs at least one algorithm")
        for algorithm in self.algorithms:
            get_objective(algorithm)  # an unknown name: one line listing the known ones
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ConfigError(f"each algorithm may appear once (got {', '.join(self.algorithms)})")
        for algorithm in self.algorithms:  # each algorithm must be able to train the shared model
            check_config(self.run_config(algorithm))
        if "test" not in self.config.train.eval_splits:
            raise ConfigError("a study compares test L_k: eval splits must include 'test'")
        if self.config.train.select_on is not None:  # its curves, figures and report are all of the last checkpoint
            raise ConfigError("compare reports every algorithm at its last checkpoint after the same budget: leave out --select-on and "
                              "--patience (select checkpoints per run with 'vaelab train --select-on')")
        if self.seeds is not None:
            object.__setattr__(self, "seeds", tuple(self.seeds))
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"a study's seeds must be distinct, at least one (got {list(self.seeds)})")
        if self.curve_images is not None and not (isinstance(self.curve_images, int) and self.curve_images > 0):
            raise ConfigError(f"curve_images must be a positive integer (got {self.curve_images!r})")

    def run_config(self, algorithm: str, seed: int | None = None) -> ExperimentConfig:
        """The shared configuration with ``train.algorithm`` set to ``algorithm`` (and ``seed``, where given)."""
        config = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, algorithm=algorithm))
        return config if seed is None else dataclasses.replace(config, seed=seed)

    @property
    def runs(self) -> list[tuple[str, int | None]]:
        """(algorithm, seed) of every run, algorithm by algorithm; seed None without seeds."""
        return [(algorithm, seed) for algorithm in self.algorithms for seed in (self.seeds or (None,))]

    def to_dict(self) -> dict[str, Any]:
        shared = self.config.to_dict()
        del shared["train"]["algorithm"]
        return {"algorithms": list(self.algorithms), "config": shared, "curve_images": self.curve_images}

    def save(self, study_dir: Path) -> None:
        """``compare.json`` (as without seeds), and ``seeds.json`` with seeds."""
        write_json_atomic(Path(study_dir) / STUDY_FILE, self.to_dict())
        if self.seeds is not None:
            save_seeds(study_dir, self.seeds)

    @classmethod
    def load(cls, study_dir: str | Path) -> Study:
        path = Path(study_dir) / STUDY_FILE
        if not path.is_file():
            raise RunError(f"{study_dir}: not a vaelab study (no {STUDY_FILE}); 'vaelab compare --out DIR' makes one")
        seeds = load_seeds(study_dir)
        try:
            values = json.loads(path.read_text())
            algorithms = tuple(values["algorithms"])
            # none: the default algorithm stands in, and the study itself refuses the empty list (not an IndexError here)
            first = {"algorithm": algorithms[0]} if algorithms else {}
            shared = {**values["config"], "train": {**values["config"]["train"], **first}}
            return cls(algorithms, ExperimentConfig.from_dict(shared), values["curve_images"], seeds)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError, IndexError, ValueError, ConfigError) as error:
            raise RunError(f"{path}: not a valid study file ({type(error).__name__}: {str(error)[:200]})") from None


def algorithm_run_dir(study_dir: str | Path, algorithm: str, seed: int | None = None) -> Path:
    """The run directory of ``algorithm`` inside a study: ``<algorithm>/``, or ``<algorithm>/seed-<s>/`` for ``seed``."""
    folder = Path(study_dir) / algorithm
    return folder if seed is None else seed_run_dir(folder, seed)


def read_bound_curve(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved L_k-against-k curve of a run (see :func:`vaelab.studies.compare.run.save_bound_curve`), or None."""
    path = Path(run_dir) / BOUND_CURVE_FILE
    if not path.exists():
        return None
    try:
        curve = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RunError(f"{path}: unreadable ({type(error).__name__}); delete it and run the same 'vaelab compare' again to recompute it") from None
    problem = _bound_curve_problem(curve)
    if problem:
        raise RunError(f"{path}: not an L_k curve ({problem}); delete it and run the same 'vaelab compare' again to recompute it")
    return curve


def _bound_curve_problem(curve: Any) -> str | None:
    """What is wrong with a parsed ``bound_curve.json``, or None."""
    if not isinstance(curve, dict):
        return f"a JSON {type(curve).__name__}, not an object"
    for key in ("epoch", "num_images"):
        value = curve.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {value!r}, not a non-negative integer"
    images = curve.get("curve_images")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images <= 0):
        return f"curve_images is {images!r}, not a positive integer or null"
    if curve.get("k") != list(CURVE_KS):
        return f"k is not {list(CURVE_KS)}"
    for key in ("bound", "bound_stderr"):
        values = curve.get(key)
        if not isinstance(values, list) or len(values) != len(CURVE_KS) or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in values
        ):
            return f"{key} is not a list of {len(CURVE_KS)} numbers"
    return None
