"""Rebuild a study's figures and ``report.html`` from saved results only; never trains.

Reads ``compare.json``, each run's ``metrics.jsonl``, ``checkpoint.pt`` and ``bound_curve.json``;
what it computes from the checkpoints (posterior and decoder means) is cheap and deterministic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import torch
from matplotlib.figure import Figure

from vaelab import __version__
from vaelab.config import ExperimentConfig
from vaelab.data import Dataset
from vaelab.errors import RunError
from vaelab.evaluation.evaluate import load_run
from vaelab.models import DiagonalGaussianLayer, HelmholtzMachine
from vaelab.studies.compare import analysis, figures
from vaelab.studies.compare.summary import (
    RunSummary,
    caveats,
    comparison_sentence,
    display_name,
    evaluation_series,
    format_duration,
    summarise_run,
)
from vaelab.runio import CHECKPOINT_FILE, METRICS_FILE, directory_lock, read_metrics, write_text_atomic
from vaelab.studies.compare.study import (
    BOUND_CURVE_FILE,
    CURVE_KS,
    FIGURES_DIR,
    REPORT_FILE,
    Study,
    algorithm_run_dir,
    read_bound_curve,
)
from vaelab.training import evaluation_images, uses_binarization

MANIFOLD_TICKS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # values of z marked on its axes
SAMPLE_GRID = (10, 10)  # rows, columns of prior samples
UNLABELLED_EXAMPLES = 10  # test images reconstructed when there are no classes to pick one of each
FIGURE_NAMES = ("training", "samples", "reconstructions", "latent", "bound_vs_k", "manifold")  # the files _figures may write


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote: the HTML file, the figures' PNGs, and the comparison sentence."""

    html: Path
    figures: list[Path]
    sentence: str


@dataclass(frozen=True)
class _Run:
    algorithm: str
    model: HelmholtzMachine
    summary: RunSummary
    metrics: list[dict[str, Any]]
    curve: dict[str, Any]


def build_report(study_dir: str | Path, data_dir: str | Path | None = None) -> Report:
    """Write ``figures/*.png|pdf`` and a self-contained ``report.html`` into ``study_dir``.

    Holds the study's lock: refused in one line while ``vaelab compare`` runs there (its
    report would be rebuilt from runs still training). Every file is replaced atomically, so a
    killed report leaves the previous figures and page whole.

    Raises:
        RunError: ``study_dir`` is not a study, is in use, or one of its runs is unfinished (no
            checkpoint, or no L_k curve for its last epoch: run the same ``vaelab compare`` again).
    """
    study_dir = Path(study_dir)
    study = Study.load(study_dir)
    with directory_lock(study_dir, "report"):
        return _build_report(study_dir, study, data_dir)


def _build_report(study_dir: Path, study: Study, data_dir: str | Path | None) -> Report:
    config = study.run_config(study.algorithms[0])
    loaded = [_load_run(study_dir, algorithm, data_dir) for algorithm in study.algorithms]
    runs = {display_name(run.algorithm): run for run, _ in loaded}
    dataset = loaded[0][1]
    images, labels = evaluation_images(config, dataset, "test")
    means = {name: analysis.posterior_means(run.model, images) for name, run in runs.items()}
    shown = _examples(labels)

    figures_dir = study_dir / FIGURES_DIR
    for path in (study_dir / REPORT_FILE, *(figures_dir / f"{name}{suffix}" for name in FIGURE_NAMES for suffix in (".png", ".pdf"))):
        if path.is_dir():  # found now, not after the figures before it were replaced
            raise RunError(f"{path}: is a directory; the report cannot be written there")
    try:
        figures_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise RunError(f"{figures_dir}: cannot create the figures folder ({error.strerror})") from None
    built = _figures(config, dataset, runs, images, means, shown)
    pngs = {name: figures.save_figure(figure, figures_dir / name) for name, figure in built.items()}

    first = next(iter(runs.values()))
    sentence = comparison_sentence({run.algorithm: run.summary.bound["test"] for run in runs.values()}, config.train.eval_k)
    gaussian = isinstance(first.model.generative, DiagonalGaussianLayer)
    html = _template().render(
        names=list(runs),
        sentence=sentence,
        notes=caveats(
            "gaussian" if gaussian else "bernoulli",
            config.data.binarization if uses_binarization(config, dataset) else None,
            config.model.total_latent_dim,
        ),
        rows=[_table_row(name, run, means[name]) for name, run in runs.items()],
        k=config.train.eval_k,
        config=config,
        config_rows=_config_rows(study),
        dataset=dataset,
        binarized=uses_binarization(config, dataset),
        num_test=images.shape[0],
        num_train_evaluated=_num_train_evaluated(first.metrics),
        curve=first.curve,
        curve_ks=", ".join(map(str, CURVE_KS)),
        num_shown=len(shown),
        labelled=labels is not None,
        manifold_size=_manifold_size(dataset.image_shape),
        num_samples=SAMPLE_GRID[0] * SAMPLE_GRID[1],
        gaussian=gaussian,
        figures={name: _data_uri(path) for name, path in pngs.items()},
        version=__version__,
    )
    report_path = study_dir / REPORT_FILE
    write_text_atomic(report_path, html)
    return Report(report_path, list(pngs.values()), sentence)


def _figures(
    config: ExperimentConfig,
    dataset: Dataset,
    runs: dict[str, _Run],
    images: torch.Tensor,
    means: dict[str, torch.Tensor],
    shown: torch.Tensor,
) -> dict[str, Figure]:
    """Every figure of the report, by file name.

    Args:
        runs: display name -> run, in the study's order.
        images: ``[N, D]`` the test images as evaluated (binarized where the data are grey and
            the likelihood Bernoulli).
        means: display name -> posterior means ``[N, latent_dim]`` of ``images``.
        shown: ``[n]`` indices of the test images to reconstruct.
    """
    image_shape, grey, labels = dataset.image_shape, dataset.splits["test"].images, dataset.splits["test"].labels
    splits = [split for split in config.train.eval_splits if split in ("train", "test")]
    originals = {"test image": images[shown].numpy()}
    if not torch.equal(grey[shown], images[shown]):  # binarized for evaluation: show both
        originals = {"test image": grey[shown].numpy(), "as evaluated": images[shown].numpy()}
    num_samples = SAMPLE_GRID[0] * SAMPLE_GRID[1]
    built = {
        "training": figures.training_curves_figure(
            {name: {split: evaluation_series(run.metrics, split) for split in splits} for name, run in runs.items()},
            config.train.eval_k,
        ),
        "samples": figures.samples_figure(
            {
                # the same draws z ~ p(z) for every model
                name: analysis.prior_sample_means(run.model, num_samples, torch.Generator().manual_seed(config.seed))
                .reshape(*SAMPLE_GRID, -1)
                .numpy()
                for name, run in runs.items()
            },
            image_shape,
        ),
        "reconstructions": figures.reconstructions_figure(
            {
                **originals,
                **{name: analysis.decoder_means(run.model, means[name][shown]).numpy() for name, run in runs.items()},
            },
            image_shape,
        ),
        "latent": figures.latent_figure(
            {name: analysis.plane_projection(means[name]) for name in runs},
            None if labels is None else labels.numpy(),
        ),
        "bound_vs_k": figures.bound_against_k_figure(
            {name: (run.curve["k"], run.curve["bound"], run.curve["bound_stderr"]) for name, run in runs.items()},
            next(iter(runs.values())).curve["num_images"],
        ),
    }
    if config.model.latent_dims == (2,) and config.model.latent == "gaussian":  # the seed's manifold figure
        size = _manifold_size(image_shape)
        grid = analysis.latent_grid(size)
        built["manifold"] = figures.manifold_figure(
            {name: analysis.decoder_means(run.model, grid).numpy() for name, run in runs.items()},
            {z: analysis.grid_position(z, size) for z in MANIFOLD_TICKS},
            image_shape,
        )
    return built


def _manifold_size(image_shape: tuple[int, int]) -> int:
    """Tiles per side of the latent-manifold grid: Kingma & Welling's 20 for MNIST-sized images, 12 for
    tiny ones (8 x 8 digits) so that every tile stays readable."""
    return 20 if min(image_shape) >= 16 else 12


def _load_run(study_dir: Path, algorithm: str, data_dir: str | Path | None) -> tuple[_Run, Dataset]:
    """One finished run of the study: its model at the last checkpoint, metrics and saved curve."""
    directory = algorithm_run_dir(study_dir, algorithm)
    if not (directory / CHECKPOINT_FILE).exists():
        raise RunError(f"{directory}: not trained yet; run the same 'vaelab compare' again to finish the study")
    _, model, dataset, checkpoint = load_run(directory, data_dir)
    curve = read_bound_curve(directory)
    if curve is None or curve["epoch"] != checkpoint["epoch"]:
        raise RunError(
            f"{directory}: no L_k curve ({BOUND_CURVE_FILE}) for its epoch {checkpoint['epoch']}; "
            "run the same 'vaelab compare' again to finish the study"
        )
    metrics = read_metrics(directory / METRICS_FILE)
    _check_metrics(directory / METRICS_FILE, metrics, checkpoint["epoch"])
    return _Run(algorithm, model, summarise_run(algorithm, metrics), metrics, curve), dataset


# The numbers the report reads from each kind of row (vaelab.studies.compare.summary.summarise_run).
_REPORTED = {"train": ("wall_seconds", "epoch_seconds", "bound"), "eval": ("wall_seconds", "k", "bound", "bound_stderr", "elbo", "elbo_stderr", "num_images")}


def _check_metrics(path: Path, rows: list[dict[str, Any]], epoch: int) -> None:
    """Raise RunError unless every training and evaluation row holds the numbers the report
    reads, and epoch ``epoch`` (the checkpoint's) has its training row and test evaluation."""
    for number, row in enumerate(rows, start=1):
        missing = [key for key in _REPORTED.get(row["kind"], ()) if not isinstance(row.get(key), (int, float))]
        if missing or (row["kind"] in _REPORTED and not isinstance(row.get("split"), str)):
            raise RunError(f"{path}: row {number} ({row['kind']}) lacks {', '.join(missing) or 'split'}")
    done = {(row["kind"], row["split"]) for row in rows if row["epoch"] == epoch and row["kind"] in _REPORTED}
    if not {("train", "train"), ("eval", "test")} <= done:
        raise RunError(
            f"{path}: no training row and test evaluation for epoch {epoch} (that of its checkpoint); the run's metrics were lost or replaced"
        )


def _examples(labels: torch.Tensor | None) -> torch.Tensor:
    """Indices of the test images to reconstruct: the first of each class, else the first few."""
    if labels is None:
        return torch.arange(UNLABELLED_EXAMPLES)
    return torch.stack([torch.nonzero(labels == label)[0, 0] for label in labels.unique()])


def _table_row(name: str, run: _Run, means: torch.Tensor) -> dict[str, Any]:
    active, _ = analysis.active_units(means)
    summary = run.summary
    return {
        "name": name,
        "epochs": summary.epoch,
        "train_bound": summary.bound.get("train"),
        "test_bound": summary.bound["test"],
        "train_elbo": summary.elbo.get("train"),
        "test_elbo": summary.elbo["test"],
        "active_units": f"{active} / {means.shape[1]}",
        "wall_time": format_duration(summary.wall_seconds),
        "epoch_time": format_duration(summary.seconds_per_epoch),
    }


def _config_rows(study: Study) -> list[tuple[str, Any]]:
    """(dotted name, value) of every shared setting, then the study's own."""
    rows = [("algorithms", ", ".join(study.algorithms))]
    for section, values in study.to_dict()["config"].items():
        if isinstance(values, dict):
            rows += [(f"{section}.{key}", _config_value(value)) for key, value in values.items()]
        else:
            rows.append((section, values))
    rows.append(("L_k curve images", "all test images" if study.curve_images is None else study.curve_images))
    return rows


def _config_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "all" if value is None else value


def _num_train_evaluated(metrics: list[dict[str, Any]]) -> int | None:
    rows = [row for row in metrics if row["kind"] == "eval" and row["split"] == "train"]
    return rows[-1]["num_images"] if rows else None


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("vaelab", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(REPORT_FILE)
