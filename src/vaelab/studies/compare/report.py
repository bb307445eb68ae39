"""Rebuild a study's figures and ``report.html`` from saved results only; never trains.

Reads ``compare.json``, each run's ``metrics.jsonl``, ``checkpoint.pt`` and ``bound_curve.json``;
what it computes from the checkpoints (posterior and decoder means; with several stochastic layers,
each layer's test KL from seeded draws) is cheap and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from vaelab import __version__
from vaelab.builders import load_run
from vaelab.config import LADDERS, ExperimentConfig
from vaelab.data import Dataset
from vaelab.data.user import looks_like_path
from vaelab.errors import RunError
from vaelab.evaluation.across_seeds import AcrossSeeds, across_seeds
from vaelab.evaluation.per_image import gaps_file, load_per_image
from vaelab.evaluation.units import BitsPerDim, experiment_bits
from vaelab.evaluation.protocol import (
    evaluation_images,
    model_likelihood,
    uses_binarization,
)
from vaelab.models import HelmholtzMachine
from vaelab.objectives.registry import surrogate_notes
from vaelab.runio import (
    BOUND_CURVE_FILE,
    CHECKPOINT_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    REPORT_FILE,
    directory_lock,
    make_directory,
    read_metrics,
    write_text_atomic,
)
from vaelab.studies.compare import analysis, figures
from vaelab.studies.compare.study import (
    CURVE_KS,
    Study,
    algorithm_run_dir,
    read_bound_curve,
)
from vaelab.studies.compare.summary import (
    ModelDescription,
    RunSummary,
    caveats,
    clipped_fraction,
    clipping_sentence,
    comparison_sentence,
    describe_model,
    display_name,
    evaluation_series,
    format_duration,
    paired_comparison_sentence,
    seeds_comparison_sentence,
    summarise_run,
)
from vaelab.studies.pages import png_data_uri, render_page

MANIFOLD_TICKS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # values of z marked on its axes
SAMPLE_GRID = (10, 10)  # rows, columns of prior samples
TINY_SAMPLE_GRID = (6, 6)  # the same for tiny images (8 x 8 digits): fewer, larger tiles
UNLABELLED_EXAMPLES = 10  # test images reconstructed when there are no classes to pick one of each
FIGURE_NAMES = ("training", "samples", "reconstructions", "latent", "bound_vs_k", "manifold")  # the files _figures may write
# What an unset (None) setting means, by field name, in the configuration table
UNSET_WORDS = {
    "encoder": "built-in",
    "decoder": "built-in",
    "prior_components": "the prior's default (10 for mixture, 500 for vamp; unused by the others)",
    "train_size": "all training images",
    "eval_train_size": "all training images",
}


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
    gaps: dict[str, str] | None = None  # the inference gaps of `vaelab evaluate --gaps` on its test images, where run


def build_report(study_dir: str | Path, data_dir: str | Path | None = None, trust_code: bool = False, per_seed_lines: bool = False) -> Report:
    """Write ``figures/*.png|pdf`` and a self-contained ``report.html`` into ``study_dir``.
    ``trust_code``: runs of user networks import and run the code they name (:func:`vaelab.builders.require_trust`).

    A study with seeds gives in its table each number's mean ± sd over seeds, the 95% interval of the
    test L_k and its per-seed values, and tests the algorithms' differences across seeds; the
    training figure draws the mean over seeds with a min-max band (``per_seed_lines``: and each
    seed's curve); the figures of models show those of the first seed.

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
        return _build_report(study_dir, study, data_dir, trust_code, per_seed_lines)


def _build_report(study_dir: Path, study: Study, data_dir: str | Path | None, trust_code: bool, per_seed_lines: bool = False) -> Report:
    seeds = study.seeds or (None,)
    config = study.run_config(study.algorithms[0], seeds[0])
    loaded = {(algorithm, seed): _load_run(study_dir, algorithm, data_dir, trust_code, seed) for algorithm, seed in study.runs}
    # display name -> seed -> run (seed None without seeds); the figures of models show the first seed's
    by_seed = {display_name(algorithm): {seed: loaded[algorithm, seed][0] for seed in seeds} for algorithm in study.algorithms}
    runs = {name: runs_of[seeds[0]] for name, runs_of in by_seed.items()}
    dataset = loaded[study.runs[0]][1]
    images, labels = evaluation_images(config, dataset, "test")
    seed_means = {name: {seed: analysis.posterior_means(run.model, images) for seed, run in runs_of.items()} for name, runs_of in by_seed.items()}
    means = {name: by_seed_means[seeds[0]] for name, by_seed_means in seed_means.items()}
    shown = _examples(labels)

    figures_dir = study_dir / FIGURES_DIR
    for path in (study_dir / REPORT_FILE, *(figures_dir / f"{name}{suffix}" for name in FIGURE_NAMES for suffix in (".png", ".pdf"))):
        if path.is_dir():  # found now, not after the figures before it were replaced
            raise RunError(f"{path}: is a directory; the report cannot be written there")
    make_directory(figures_dir, "figures folder", parents=False)
    first = next(iter(runs.values()))
    model = _describe(config, dataset, first.model.latent_dims)  # the prior, likelihood and latents every caption names
    bits = experiment_bits(config, dataset)  # None: no bits/dim (continuous data, grey Bernoulli targets)
    built, clipping = _figures(config, dataset, model, runs, images, means, shown, by_seed, per_seed_lines, bits)
    pngs = {name: figures.save_figure(figure, figures_dir / name) for name, figure in built.items()}

    if study.seeds is None:
        sentence = _comparison(study_dir, runs, config.train.eval_k, bits)
        rows = [_table_row(name, run, means[name], bits) for name, run in runs.items()]
    else:
        sentence = _seeds_comparison(study_dir, by_seed, seeds[0], config.train.eval_k, bits)
        rows = [_seeds_table_row(name, runs_of, seed_means[name], bits) for name, runs_of in by_seed.items()]
    layer_rows = _layer_rows(by_seed, seed_means, images, config) if len(config.model.latent_dims) > 1 else []
    sample_grid = _sample_grid(dataset.image_shape)
    html = render_page(
        REPORT_FILE,
        dataset_name=_dataset_name(dataset.name),
        names=list(runs),
        sentence=sentence,
        model=model,
        clipping=clipping,
        coverage=_grid_coverage(config, runs, dataset.image_shape) if "manifold" in pngs else None,
        notes=caveats(
            model.likelihood,
            config.data.binarization if uses_binarization(config, dataset) else None,
            first.model.latent_dim,
            dataset.data_dim,
            dataset.levels,
        ) + surrogate_notes(config.train, study.algorithms),
        rows=rows,
        layer_rows=layer_rows,
        layer_kl_samples=analysis.LAYER_KL_SAMPLES,
        gap_rows=[{"name": name, **run.gaps} for name, run in runs.items() if run.gaps],
        seeds=study.seeds,
        per_seed_lines=per_seed_lines,
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
        num_samples=sample_grid[0] * sample_grid[1],
        likelihood=model.entry,
        bits=bits,
        figures={name: png_data_uri(path) for name, path in pngs.items()},
        version=__version__,
    )
    report_path = study_dir / REPORT_FILE
    write_text_atomic(report_path, html)
    return Report(report_path, list(pngs.values()), sentence)


def _figures(
    config: ExperimentConfig,
    dataset: Dataset,
    model: ModelDescription,
    runs: dict[str, _Run],
    images: torch.Tensor,
    means: dict[str, torch.Tensor],
    shown: torch.Tensor,
    by_seed: dict[str, dict[int | None, _Run]],
    per_seed_lines: bool = False,
    bits: BitsPerDim | None = None,
) -> tuple[dict[str, Figure], dict[str, str]]:
    """Every figure of the report, by file name, and for the figures that draw Gaussian decoder
    means, a sentence saying how many were clipped (by file name; empty for discrete likelihoods, whose means stay in [0, 1]).

    Args:
        model: what the trained models are (prior, likelihood, latents), for titles and labels.
        runs: display name -> run (the first seed's), in the study's order.
        by_seed: display name -> seed -> run (one seed, None, without seeds): the training figure's curves.
        per_seed_lines: the training figure also draws each seed's curve.
        bits: the study's bits/dim, a second axis of the figures of L_k; None: nats alone.
        images: ``[N, D]`` the test images as evaluated (binarized where the data are grey and
            the likelihood Bernoulli).
        means: display name -> posterior means ``[N, latent_dim]`` of ``images``.
        shown: ``[n]`` indices of the test images to reconstruct.
    """
    image_shape, grey, labels = _drawn_shape(dataset), dataset.unit_images("test"), dataset.splits["test"].labels
    splits = [split for split in config.train.eval_splits if split in ("train", "test")]
    originals = {"test image": images[shown].numpy()}
    if not torch.equal(grey[shown], images[shown]):  # binarized for evaluation: show both
        originals = {"test image": grey[shown].numpy(), "as evaluated": images[shown].numpy()}
    sample_grid = _sample_grid(image_shape)
    samples = {
        # the same draws z ~ p(z) for every model
        name: analysis.prior_sample_means(run.model, sample_grid[0] * sample_grid[1], torch.Generator().manual_seed(config.seed))
        .reshape(*sample_grid, -1)
        .numpy()
        for name, run in runs.items()
    }
    reconstructions = {
        name: analysis.decoder_means(run.model, _decoded_latents(model, means[name][shown])).numpy() for name, run in runs.items()
    }
    clipped = {"samples": _clipped(model, samples), "reconstructions": _clipped(model, reconstructions)}
    built = {
        "training": figures.training_curves_figure(
            {name: {split: [evaluation_series(run.metrics, split) for run in runs_of.values()] for split in splits} for name, runs_of in by_seed.items()},
            config.train.eval_k,
            per_seed_lines,
            bits,
        ),
        "samples": figures.samples_figure(samples, image_shape, model.prior_title, clipped["samples"]),
        "reconstructions": figures.reconstructions_figure(
            {
                **originals,
                **(reconstructions if clipped["reconstructions"] is None else
                   {f"{name} ({share:.1%} clipped)": reconstructions[name] for name, share in clipped["reconstructions"].items()}),
            },
            image_shape,
            "the most probable $z$ under $q(z \\mid x)$" if model.latent == "bernoulli" else "$z = E_q[z \\mid x]$",
        ),
        "latent": figures.latent_figure(
            {name: analysis.plane_projection(means[name]) for name in runs},
            None if labels is None else labels.numpy(),
        ),
        "bound_vs_k": figures.bound_against_k_figure(
            {name: (run.curve["k"], run.curve["bound"], run.curve["bound_stderr"]) for name, run in runs.items()},
            next(iter(runs.values())).curve["num_images"],
            bits,
        ),
    }
    if config.model.latent_dims == (2,) and config.model.latent == "gaussian":  # Kingma & Welling's manifold figure
        size = _manifold_size(image_shape)
        grid = analysis.latent_grid(size)
        panels = {name: analysis.decoder_means(run.model, grid).numpy() for name, run in runs.items()}
        clipped["manifold"] = _clipped(model, panels)
        built["manifold"] = figures.manifold_figure(
            panels,
            {z: analysis.grid_position(z, size) for z in MANIFOLD_TICKS},
            image_shape,
            "$z = \\Phi^{-1}(u)$, $u$ uniform on the unit square"
            + ("" if model.uniform_grid else "\n(the quantiles of $N(0, I)$, not of this model's prior)"),
            clipped["manifold"],
        )
    sentences = {name: clipping_sentence(shares) for name, shares in clipped.items() if shares is not None}
    return built, sentences


def _comparison(study_dir: Path, runs: dict[str, _Run], k: int, bits: BitsPerDim | None) -> str:
    """The comparison sentence: on paired per-image differences where every run saved its final test
    L_k per image (:mod:`vaelab.evaluation.per_image`), else (studies trained before per-image files)
    on the runs' means alone."""
    bounds = {run.algorithm: run.summary.bound["test"] for run in runs.values()}
    paths = {run.algorithm: run.summary.bounds_files.get("test") for run in runs.values()}
    paths = {name: None if file is None else algorithm_run_dir(study_dir, name) / file for name, file in paths.items()}
    if any(path is None or not path.is_file() for path in paths.values()):
        return comparison_sentence(bounds, k, bits)
    per_image = {name: load_per_image(path) for name, path in paths.items()}
    return paired_comparison_sentence(bounds, {name: (arrays["image_index"], arrays["bound"]) for name, arrays in per_image.items()}, k, bits)


def _seeds_comparison(study_dir: Path, by_seed: dict[str, dict[int | None, _Run]], seed: int, k: int, bits: BitsPerDim | None) -> str:
    """The comparison sentence of a study with seeds (:func:`seeds_comparison_sentence`), with the
    per-image paired SE at ``seed``'s runs where every one saved its per-image test L_k."""
    bounds = {next(iter(runs_of.values())).algorithm: _over_seeds(runs_of, lambda summary: summary.bound["test"].mean) for runs_of in by_seed.values()}
    files = {run.algorithm: run.summary.bounds_files.get("test") for run in (runs_of[seed] for runs_of in by_seed.values())}
    paths = {name: None if file is None else algorithm_run_dir(study_dir, name, seed) / file for name, file in files.items()}
    per_image = None
    if all(path is not None and path.is_file() for path in paths.values()):
        per_image = {name: (arrays["image_index"], arrays["bound"]) for name, arrays in ((name, load_per_image(path)) for name, path in paths.items())}
    return seeds_comparison_sentence(bounds, per_image, seed, k, bits)


def _over_seeds(runs_of: dict[int | None, _Run], value) -> AcrossSeeds:
    """``value(summary)`` of each seed's run summarised over the seeds."""
    return across_seeds({seed: value(run.summary) for seed, run in runs_of.items()})


def _describe(config: ExperimentConfig, dataset: Dataset, latent_dims: tuple[int, ...]) -> ModelDescription:
    """The trained model in words: its likelihood is the config's, or the dataset's where the config
    says 'auto', whose registry entry gives every caption's words (the network, MLP, conv or the
    user's, says nothing about it); ``latent_dims`` are the model's flat widths per layer (a conv
    ladder's ``--latent-dim`` gives channels)."""
    likelihood = model_likelihood(config, dataset)
    ladder = config.model.architecture in LADDERS
    return describe_model(config.model.prior, likelihood, config.model.latent, latent_dims, config.model.prior_size, ladder)


def _dataset_name(name: str) -> str:
    """The dataset as a title names it: a registered name as it is, a path by its file or folder name."""
    return Path(name).name if looks_like_path(name) else name


def _clipped(model: ModelDescription, panels: dict[str, Any]) -> dict[str, float] | None:
    """Each panel's fraction of decoder means outside [0, 1]; None where they cannot leave it: the means of
    every family but a density's are probabilities or averages of levels in [0, 1]."""
    if model.entry.discrete:
        return None
    return {name: clipped_fraction(images) for name, images in panels.items()}


def _decoded_latents(model: ModelDescription, means: torch.Tensor) -> torch.Tensor:
    """The z a reconstruction decodes: the posterior mean E_q[z | x] for Gaussian latents; for binary
    ones the most probable z of the factorised q(z_1 | x) (each unit 1 where q(z_u = 1 | x) > 1/2),
    since the mean, a vector of probabilities, is no value the decoder was trained on."""
    if model.latent == "bernoulli":
        return (means > 0.5).to(means.dtype)
    return means


def _drawn_shape(dataset: Dataset) -> tuple[int, ...]:
    """How one example is drawn: ``(H, W)`` on the grey scale, ``(C, H, W)`` for colour images."""
    return (dataset.channels, *dataset.image_shape) if dataset.channels > 1 else dataset.image_shape


def _sample_grid(image_shape: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of prior samples: fewer for tiny images, so that each stays readable."""
    return SAMPLE_GRID if min(image_shape[-2:]) >= 16 else TINY_SAMPLE_GRID


def _grid_coverage(config: ExperimentConfig, runs: dict[str, _Run], image_shape: tuple[int, int]) -> dict[str, float]:
    """Display name -> the fraction of its prior's draws inside the manifold grid's square."""
    size = _manifold_size(image_shape)
    return {name: analysis.grid_coverage(run.model, size, torch.Generator().manual_seed(config.seed)) for name, run in runs.items()}


def _manifold_size(image_shape: tuple[int, int]) -> int:
    """Tiles per side of the latent-manifold grid: Kingma & Welling's 20 for MNIST-sized images, 10 for
    tiny ones (8 x 8 digits) so that every tile stays readable."""
    return 20 if min(image_shape[-2:]) >= 16 else 10


def _load_run(study_dir: Path, algorithm: str, data_dir: str | Path | None, trust_code: bool, seed: int | None = None) -> tuple[_Run, Dataset]:
    """One finished run of the study (``seed``'s, in a study with seeds): its model at the last checkpoint, metrics and saved curve."""
    directory = algorithm_run_dir(study_dir, algorithm, seed)
    if not (directory / CHECKPOINT_FILE).exists():
        raise RunError(f"{directory}: not trained yet; run the same 'vaelab compare' again to finish the study")
    _, model, dataset, checkpoint = load_run(directory, data_dir, trust_code=trust_code, checkpoint="last")  # as its curve
    curve = read_bound_curve(directory)
    if curve is None or curve["epoch"] != checkpoint["epoch"]:
        raise RunError(
            f"{directory}: no L_k curve ({BOUND_CURVE_FILE}) for its epoch {checkpoint['epoch']}; "
            "run the same 'vaelab compare' again to finish the study"
        )
    metrics = read_metrics(directory / METRICS_FILE)
    _check_metrics(directory / METRICS_FILE, metrics, checkpoint["epoch"])
    gaps = directory / gaps_file("test", checkpoint["epoch"])
    return _Run(algorithm, model, summarise_run(algorithm, metrics), metrics, curve, _gap_cells(gaps) if gaps.is_file() else None), dataset


GAP_COLUMNS = ("log_px", "elbo_encoder", "elbo_optimised", "approximation_gap", "amortization_gap")


def _gap_cells(path: Path) -> dict[str, str]:
    """Each of :data:`GAP_COLUMNS` of a run's per-image gaps file as 'mean ± standard error' over its
    images, and the number of images."""
    values = load_per_image(path)
    count = len(values["image_index"])
    cells = {name: f"{values[name].mean():.2f} ± {values[name].std(ddof=1) / count**0.5:.2f}" for name in GAP_COLUMNS}
    return {**cells, "num_images": str(count)}


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


def _table_row(name: str, run: _Run, means: torch.Tensor, bits: BitsPerDim | None = None) -> dict[str, Any]:
    """A table row of a run: its numbers in nats, the test L_k in bits/dim too where ``bits`` is given."""
    active, _ = analysis.active_units(means)
    summary = run.summary
    test = summary.bound["test"]
    return {
        "test_bpd": None if bits is None else f"{bits.of(test.mean):.3f} ± {bits.spread(test.stderr):.3f}",
        "name": name,
        "epochs": summary.epoch,
        "train_bound": summary.bound.get("train"),
        "test_bound": summary.bound["test"],
        "train_elbo": summary.elbo.get("train"),
        "test_elbo": summary.elbo["test"],
        "active_units": f"{active} / {means.shape[1]}",
        "k_hat_above": "—" if summary.k_hat_above.get("test") is None else f"{summary.k_hat_above['test']:.1%}",
        "wall_time": format_duration(summary.wall_seconds),
        "epoch_time": format_duration(summary.seconds_per_epoch),
    }


def _seeds_table_row(name: str, runs_of: dict[int, _Run], means: dict[int, torch.Tensor], bits: BitsPerDim | None = None) -> dict[str, Any]:
    """A table row over seeds: each number's mean ± sd over seeds, the test L_k's 95% interval and per-seed values;
    the test L_k's mean ± sd in bits/dim too where ``bits`` is given."""
    first = next(iter(runs_of.values())).summary

    def cell(value) -> str:
        return _over_seeds(runs_of, value).short

    test = _over_seeds(runs_of, lambda summary: summary.bound["test"].mean)
    k_hats = [run.summary.k_hat_above.get("test") for run in runs_of.values()]
    return {
        "test_bpd": None if bits is None else f"{bits.of(test.mean):.3f}" + ("" if test.sd is None else f" ± {bits.spread(test.sd):.3f}"),
        "name": name,
        "epochs": first.epoch,
        "train_bound": cell(lambda summary: summary.bound["train"].mean) if "train" in first.bound else None,
        "test_bound": test.short,
        "test_interval": test.interval_words,
        "test_per_seed": test.per_seed_words,
        "train_elbo": cell(lambda summary: summary.elbo["train"].mean) if "train" in first.elbo else None,
        "test_elbo": cell(lambda summary: summary.elbo["test"].mean),
        "active_units": f"{', '.join(str(analysis.active_units(seed_means)[0]) for seed_means in means.values())} / {next(iter(means.values())).shape[1]}",
        "k_hat_above": "—" if None in k_hats else f"{sum(k_hats) / len(k_hats):.1%}",
        "wall_time": format_duration(sum(run.summary.wall_seconds for run in runs_of.values()) / len(runs_of)),
        "epoch_time": format_duration(sum(run.summary.seconds_per_epoch for run in runs_of.values()) / len(runs_of)),
    }


def _layer_rows(
    by_seed: dict[str, dict[int | None, _Run]], seed_means: dict[str, dict[int | None, torch.Tensor]], images: torch.Tensor, config: ExperimentConfig
) -> list[dict[str, Any]]:
    """One row per algorithm of the per-layer table, for models of several stochastic layers: its
    name and, for each layer z_1, ..., z_L, the test KL in nats (:func:`analysis.layer_kls`; over
    seeds mean ± sd) and its active units 'a / D_l' (over seeds each seed's count, as the results table).

    Args:
        by_seed: display name -> seed -> run (one seed, None, without seeds).
        seed_means: display name -> seed -> posterior means ``[N, sum D_l]`` of ``images``.
        images: ``[N, D]`` the test images as evaluated.
        config: the study's; its seed seeds every run's draws z ~ q(z | x) alike.
    """
    dims = next(iter(next(iter(by_seed.values())).values())).model.latent_dims  # flat widths (a conv ladder's config holds channels)
    rows = []
    for name, runs_of in by_seed.items():
        kls = {seed: analysis.layer_kls(run.model, images, torch.Generator().manual_seed(config.seed)) for seed, run in runs_of.items()}
        active = [analysis.layer_active_units(means, dims) for means in seed_means[name].values()]
        layers = []
        for layer, dim in enumerate(dims):
            kl = across_seeds({seed: values[layer] for seed, values in kls.items()}).short  # one run: its value alone
            layers.append({"kl": kl, "active_units": f"{', '.join(str(counts[layer]) for counts in active)} / {dim}"})
        rows.append({"name": name, "layers": layers})
    return rows


def _config_rows(study: Study) -> list[tuple[str, Any]]:
    """(dotted name, value) of every shared setting, then the study's own."""
    rows = [("algorithms", ", ".join(study.algorithms))]
    for section, values in study.to_dict()["config"].items():
        if isinstance(values, dict):
            rows += [(f"{section}.{key}", _config_value(key, value)) for key, value in values.items()]
        else:
            rows.append((section, values))
    if study.seeds is not None:  # each run's seed is its own: config.seed is none of them
        rows = [(name, value) for name, value in rows if name != "seed"] + [("seeds", ", ".join(map(str, study.seeds)))]
    rows.append(("L_k curve images", "all test images" if study.curve_images is None else study.curve_images))
    return rows


def _config_value(key: str, value: Any) -> Any:
    """A setting as the table shows it: sequences joined, None in the words of :data:`UNSET_WORDS`."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return UNSET_WORDS.get(key, "none") if value is None else value


def _num_train_evaluated(metrics: list[dict[str, Any]]) -> int | None:
    rows = [row for row in metrics if row["kind"] == "eval" and row["split"] == "train"]
    return rows[-1]["num_images"] if rows else None
