"""The homework's experiment in one call: train every algorithm alike, analyse each model, report.

Every algorithm is trained with the same seed, data, networks and budget through
:func:`vaelab.training.train` (the function behind ``vaelab train``), resuming from its
checkpoint, so a killed study continues where it stopped and a finished run is not retrained.
On a CPU the algorithms can train at once, one process each (``jobs``; :mod:`vaelab.jobs`).
The one costly analysis after training, test L_k for every k dividing 1000, is saved beside each
run and skipped when already saved for the same checkpoint epoch; where the last epoch's test
evaluation was L_1000 of every test image (the homework's protocol), it is read from that
evaluation's draws instead of drawn again. The report is then rebuilt from
saved results by :func:`vaelab.studies.compare.build_report`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vaelab.config import ExperimentConfig, config_differences
from vaelab.data import Dataset
from vaelab.errors import RunError
from vaelab.estimators.bounds import bound_curve, mean_and_standard_error
from vaelab.evaluation.per_image import load_per_image
from vaelab.evaluation.protocol import SPLIT_TAGS, evaluation_images, seeded_generator
from vaelab.jobs import processes_and_threads, run_jobs
from vaelab.models import HelmholtzMachine
from vaelab.models.networks import evaluation_mode
from vaelab.preflight import check_experiment
from vaelab.runio import (
    ACROSS_SEEDS_PATTERN,
    BOUND_CURVE_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_FILE,
    SEEDS_FILE,
    STUDY_FILE,
    directory_lock,
    make_directory,
    read_metrics,
    refuse_foreign_contents,
    run_files,
    write_json_atomic,
)
from vaelab.studies.compare.report import FIGURE_NAMES, Report, build_report
from vaelab.studies.compare.study import (
    CURVE_KS,
    Study,
    algorithm_run_dir,
    read_bound_curve,
)
from vaelab.training import train

# Fourth entry of the curve generator's seed: training's evaluations are seeded by
# (seed, epoch, split tag, k) with k >= 1, so 0 keeps the curve's samples apart from theirs.
CURVE_STREAM = 0


def compare(
    study: Study,
    study_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    tensorboard: bool = False,
    jobs: int | None = 1,
    threads: int | None = None,
    announce: Callable[[], None] | None = None,
    per_seed_lines: bool = False,
) -> Report | None:
    """Train (or continue) every algorithm of ``study`` in ``study_dir`` on ``device``, analyse,
    write the report and return it. ``tensorboard``: each run also logs under its ``tensorboard/``.

    ``jobs``: algorithms trained at once on a CPU, each in its own process with ``threads``
    threads (:mod:`vaelab.jobs`; None: one process per algorithm up to the usable CPUs, which
    share them out). 1 trains them one after the other in this process, as on a GPU and under
    torchrun always. The numbers do not depend on it beyond floating-point rounding, which
    depends on the thread count.

    ``study_dir`` is locked while the study runs (:func:`vaelab.runio.directory_lock`; a second
    ``compare`` or a ``report`` is refused in one line). A directory holding the same study is
    continued; one holding a study with another config is replaced only with ``overwrite``; one
    holding anything else is refused.

    Under torchrun every process trains (see :func:`vaelab.training.train`); rank 0 alone
    analyses and reports, and the other processes return None. ``announce``: called on rank 0 once
    every run's config and ``study_dir`` are accepted, before the first epoch (the command line's plan).

    With ``study.seeds``, every (algorithm, seed) is one run, ``study_dir/<algorithm>/seed-<s>/``,
    and all of them are the jobs; the report summarises over seeds (``per_seed_lines``: the
    training figure also draws each seed's curve).

    Raises:
        ConfigError: ``jobs`` above 1 with a device other than the CPU, or under torchrun.
        RunError: ``study_dir`` holds a study with a different configuration (the message names
            the differing keys) and ``overwrite`` is not given, holds files that are not a
            study, is in use, or cannot be written.
    """
    study_dir = Path(study_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun rank 0 alone checks, locks and writes
    for algorithm, seed in study.runs:  # every run's config, before the first epoch of the first run
        check_experiment(study.run_config(algorithm, seed))
    processes, threads = processes_and_threads(len(study.runs), jobs, threads, device)
    if main_process:
        _check_study_directory(study, study_dir, overwrite)
        make_directory(study_dir, "study directory")
    with directory_lock(study_dir, "compare") if main_process else contextlib.nullcontext():
        if main_process:
            _check_study_directory(study, study_dir, overwrite)  # again, now that no one else writes
            if overwrite:
                _clear_study(study, study_dir)
            study.save(study_dir)
            if announce is not None:
                announce()
        runs = study.runs
        layout = f"{study_dir}/<algorithm>" + ("" if study.seeds is None else "/seed-<s>")
        if processes > 1:
            tqdm.write(f"{len(runs)} runs ({' and '.join(study.algorithms)}{_seed_words(study)}), {processes} at once, "
                       f"one process of {threads} thread(s) each: {layout}")
            run_jobs(train_algorithm, [(study, study_dir, algorithm, data_dir, progress, device, tensorboard, seed) for algorithm, seed in runs],
                     processes, threads)
        else:
            for number, (algorithm, seed) in enumerate(runs, start=1):
                tqdm.write(f"{algorithm}{'' if seed is None else f' seed {seed}'} ({number}/{len(runs)}): {algorithm_run_dir(study_dir, algorithm, seed)}")
                main_process = train_algorithm(study, study_dir, algorithm, data_dir, progress, device, tensorboard, seed)
        # the study's networks are the caller's own (given to compare): consent to run them
        return build_report(study_dir, data_dir=data_dir, trust_code=True, per_seed_lines=per_seed_lines) if main_process else None


def _seed_words(study: Study) -> str:
    return "" if study.seeds is None else f", seeds {', '.join(map(str, study.seeds))}"


def train_algorithm(
    study: Study, study_dir: Path, algorithm: str, data_dir: str | Path | None, progress: bool, device: str, tensorboard: bool,
    seed: int | None = None,
) -> bool:
    """Train (or continue) ``algorithm``'s run of ``study`` (that of ``seed`` in a study with seeds) and save
    its L_k curve (:func:`save_bound_curve`); False in a torchrun process other than rank 0, which saves nothing."""
    config = study.run_config(algorithm, seed)
    result = train(
        config, algorithm_run_dir(study_dir, algorithm, seed), data_dir=data_dir, resume=True, progress=progress, device=device,
        tensorboard=tensorboard, curve_ks=CURVE_KS if _final_evaluation_gives_the_curve(config, study.curve_images) else (),
    )
    if not result.metrics:
        return False
    epoch = max(row["epoch"] for row in result.metrics if row["kind"] == "train")  # that of the checkpoint
    save_bound_curve(result.run_dir, config, result.model, result.dataset, epoch, study.curve_images, progress)
    return True


def _check_study_directory(study: Study, study_dir: Path, overwrite: bool) -> None:
    """Raise if ``study_dir`` is not a directory, holds files that are not a study, or holds a
    study whose shared config differs (only epochs may grow) and ``overwrite`` is not given."""
    if not study_dir.exists():
        return
    if not study_dir.is_dir():
        raise RunError(f"{study_dir}: exists and is not a directory; choose another --out")
    if not (study_dir / STUDY_FILE).exists():
        refuse_foreign_contents(study_dir, "study")
        return
    if overwrite:
        return
    saved = Study.load(study_dir)
    algorithm = study.algorithms[0]
    differences = [
        key for key in config_differences(saved.run_config(algorithm), study.run_config(algorithm)) if key != "train.epochs"
    ] + (["seeds"] if saved.seeds != study.seeds else [])
    if differences:
        raise RunError(
            f"{study_dir}: holds a study with a different config (differs in {', '.join(differences)}); "
            "pass --overwrite to replace it, or choose another --out"
        )


def _clear_study(study: Study, study_dir: Path) -> None:
    """Delete the files vaelab wrote into a study directory (its runs', those of the saved
    study's algorithms and of ``study``'s), and nothing else."""
    try:
        saved = Study.load(study_dir)
        runs = set(saved.runs)
    except RunError:  # an unreadable compare.json or seeds.json: it is replaced all the same
        runs = set()
    for algorithm, seed in runs | set(study.runs):
        run_dir = algorithm_run_dir(study_dir, algorithm, seed)
        if run_dir.is_dir():
            with directory_lock(run_dir, "compare --overwrite"):
                for path in run_files(run_dir):
                    path.unlink()
    figures = [study_dir / FIGURES_DIR / f"{name}{suffix}" for name in FIGURE_NAMES for suffix in (".png", ".pdf")]  # a user's own figures stay
    for path in [study_dir / STUDY_FILE, study_dir / SEEDS_FILE, study_dir / REPORT_FILE, *figures, *study_dir.glob(ACROSS_SEEDS_PATTERN)]:
        path.unlink(missing_ok=True)


def _final_evaluation_gives_the_curve(config: ExperimentConfig, curve_images: int | None) -> bool:
    """Whether the last epoch's test L_k draws exactly the curve's samples: 1000 per image, every test image."""
    return config.train.eval_k == max(CURVE_KS) and "test" in config.train.eval_splits and curve_images is None


def _curve_of_final_evaluation(run_dir: Path, epoch: int, num_images: int) -> dict[int, torch.Tensor] | None:
    """Per-image L_k ``[N]`` for every k in ``CURVE_KS`` from the per-image file of the test evaluation
    of ``epoch`` (written when training was given the curve's k), or None where there is none."""
    rows = [row for row in read_metrics(run_dir / METRICS_FILE)
            if row.get("kind") == "eval" and row.get("split") == "test" and row.get("epoch") == epoch and row.get("k") == max(CURVE_KS)]
    if not rows or not rows[-1].get("bounds_file") or not (run_dir / rows[-1]["bounds_file"]).exists():
        return None
    try:
        per_image = load_per_image(run_dir / rows[-1]["bounds_file"])
    except RunError:  # unreadable: the curve is drawn again, and the file is left as it is
        return None
    names = {k: "bound" if k == max(CURVE_KS) else f"bound_k{k}" for k in CURVE_KS}
    if any(name not in per_image or per_image[name].shape != (num_images,) for name in names.values()):
        return None
    return {k: torch.from_numpy(per_image[name]) for k, name in names.items()}


def save_bound_curve(
    run_dir: Path,
    config: ExperimentConfig,
    model: HelmholtzMachine,
    dataset: Dataset,
    epoch: int,
    curve_images: int | None,
    progress: bool = False,
) -> dict[str, Any]:
    """Test L_k for every k in ``CURVE_KS`` of ``model`` (the run's checkpoint of ``epoch``), saved as
    ``bound_curve.json``.

    Skipped (the saved values returned) when already saved for the same epoch and image count.
    One set of 1000 samples per image gives every k (:func:`vaelab.estimators.bounds.bound_curve`).
    Where the run's last test evaluation was L_1000 of every test image, trained with ``curve_ks``,
    the curve is read from its per-image file: the same draws, so its L_1000 is the metrics' test
    L_1000, and no second pass over the test set (about 20 s per model of the MNIST study). Otherwise
    the samples are drawn from a generator seeded by (seed, epoch, test tag, CURVE_STREAM).
    """
    saved = read_bound_curve(run_dir)
    if saved is not None and saved.get("epoch") == epoch and saved.get("curve_images") == curve_images:
        return saved
    images = curve_test_images(config, dataset, curve_images)
    per_image = _curve_of_final_evaluation(run_dir, epoch, images.shape[0]) if _final_evaluation_gives_the_curve(config, curve_images) else None
    if per_image is None:
        generator = seeded_generator(config.seed, epoch, SPLIT_TAGS["test"], CURVE_STREAM, device=next(model.parameters()).device)
        with evaluation_mode(model):  # train() hands the model back in train mode: no dropout, no BatchNorm statistics of test images
            per_image = bound_curve(
                model, images, CURVE_KS, generator, config.train.eval_batch_size, f"{config.train.algorithm} L_k curve" if progress else None
            )
    estimates = [mean_and_standard_error(per_image[k]) for k in CURVE_KS]
    curve = {
        "epoch": epoch,
        "curve_images": curve_images,
        "num_images": images.shape[0],
        "k": list(CURVE_KS),
        "bound": [mean for mean, _ in estimates],
        "bound_stderr": [stderr for _, stderr in estimates],
    }
    write_json_atomic(run_dir / BOUND_CURVE_FILE, curve)
    return curve


def curve_test_images(config: ExperimentConfig, dataset: Dataset, count: int | None) -> torch.Tensor:
    """The evaluation test images ``[N, D]``, or a fixed subset of ``count`` of them.

    The subset depends only on the data config, so every algorithm of a study gets the same one.
    """
    images, _ = evaluation_images(config, dataset, "test")
    if count is None or count >= images.shape[0]:
        return images
    keep = torch.randperm(images.shape[0], generator=seeded_generator(config.data.binarization_seed, SPLIT_TAGS["test"], count))
    return images[keep[:count]]
