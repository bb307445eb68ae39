"""The ``vaelab`` command line: parse, build a config, call the library function the tests call.

Expected failures (:class:`~vaelab.errors.VaelabError`, bad options) print one line to stderr
and exit non-zero without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vaelab import __version__
from vaelab.config import (
    MATMUL_PRECISIONS,
    POSITIVE_INT,
    SEED,
    SPLITS,
    DataConfig,
    ExperimentConfig,
    Kind,
    ModelConfig,
    TrainConfig,
    list_of,
)
from vaelab.errors import ConfigError, Interrupted, VaelabError
from vaelab.threads import configure_threads

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, and which takes no abbreviated options
    (``compare --algorithm`` must not pass for ``--algorithms``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _argument_type(kind: Kind):
    """An argparse type for a config field's kind: parse the text, then check it as config would."""

    def parse(text: str):
        try:
            value = kind.parse(text)
        except ValueError:
            value = None
        if value is None or not kind.valid(value):
            raise argparse.ArgumentTypeError(f"must be {kind.description} (got {text!r})")
        return value

    return parse


positive_int = _argument_type(POSITIVE_INT)

_SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), (None, ExperimentConfig))


def _experiment_fields():
    """(section or None for the top level, dataclass field) for every config field that is an option."""
    for section, cls in _SECTIONS:
        for spec in dataclasses.fields(cls):
            if "kind" in spec.metadata:
                yield section, spec


def flag_of(spec: dataclasses.Field) -> str:
    """The command-line flag of a config field: its metadata's, else ``--field-name``."""
    return spec.metadata["flag"] or "--" + spec.name.replace("_", "-")


def _add_experiment_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One option per config field, with the field's kind, help and default (as recorded in config.json)."""
    from vaelab.objectives import OBJECTIVES

    # --dataset takes a name or a path: load_dataset answers an unknown one in one line
    dynamic_choices = {"algorithm": tuple(OBJECTIVES)}
    for _, spec in _experiment_fields():
        flag = flag_of(spec)
        if flag in exclude:
            continue
        kind: Kind = spec.metadata["kind"]
        default = spec.default
        shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, tuple) else default
        keywords = {"help": f"{spec.metadata['help']} (default: {shown})"}
        choices = kind.choices or dynamic_choices.get(spec.name)
        keywords.update({"choices": choices} if choices else {"type": _argument_type(kind)})
        parser.add_argument(flag, dest=spec.name, default=None, **keywords)
    parser.add_argument("--config", type=Path, help="JSON config file to start from; options given here override it")


def given_options(args: argparse.Namespace) -> list[str]:
    """The config fields set explicitly on the command line."""
    return [spec.name for _, spec in _experiment_fields() if getattr(args, spec.name, None) is not None]


def experiment_config(args: argparse.Namespace, algorithm: str | None = None) -> ExperimentConfig:
    """The config of ``--config`` (or the defaults) with every option given on the command line
    applied, and ``algorithm`` (when given) as ``train.algorithm``."""
    base = ExperimentConfig.load(args.config) if getattr(args, "config", None) else ExperimentConfig()
    updates: dict[str | None, dict] = {"data": {}, "model": {}, "train": {} if algorithm is None else {"algorithm": algorithm}, None: {}}
    for section, spec in _experiment_fields():
        value = getattr(args, spec.name, None)
        if value is not None:
            updates[section][spec.name] = value
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, **updates["data"]),
        model=dataclasses.replace(base.model, **updates["model"]),
        train=dataclasses.replace(base.train, **updates["train"]),
        **updates[None],
    )


def check_experiment(args: argparse.Namespace, config: ExperimentConfig, algorithms: Sequence[str]) -> None:
    """Refuse, in one line, a configuration one of ``algorithms`` cannot train, and an option given
    on the command line that none of them reads (e.g. ``--groups`` with ``--algorithm iwae``).
    Both rules are the objective registry's."""
    from vaelab.objectives.registry import check_config, readers, unread_options
    from vaelab.preflight import check_before_training

    for algorithm in algorithms:
        run_config = dataclasses.replace(config, train=dataclasses.replace(config.train, algorithm=algorithm))
        check_config(run_config)
        check_before_training(run_config)  # the dataset exists, its splits, sizes against memory
    flags = {spec.name: flag_of(spec) for _, spec in _experiment_fields()}
    for option in unread_options(given_options(args), algorithms):
        raise ConfigError(f"{flags[option]} applies to {' and '.join(readers(option))} only, not to {', '.join(algorithms)}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", help="auto (a CUDA device if there is one, else the CPU), cpu, cuda or cuda:<index> (default: auto)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads of this process (default: PyTorch's, one per core); on a shared machine 1 per process is often fastest",
    )


def _add_train_arguments(train: argparse.ArgumentParser) -> None:
    _add_experiment_options(train)
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint; alone, with the run's recorded config")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out (its checkpoint, metrics and config are deleted)")
    train.add_argument("--tensorboard", action="store_true", help="also log scalars and image grids under <out>/tensorboard (needs tensorboard)")
    _add_common(train)


def _add_evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("run_dir", type=Path, help="run directory written by 'vaelab train'")
    evaluate.add_argument(
        "--k", type=positive_int,
        help="importance samples of L_k (default: 1000); with --estimator ais or --bdmc, the AIS chains per image M (default: 16)",
    )
    evaluate.add_argument(
        "--estimator", choices=("iwae", "ais"), default="iwae",
        help="iwae: L_k with the Pareto k-hat of each image's weights; ais: annealed importance sampling from q(z|x) to "
        "p(z|x) with HMC (Gaussian latents; T = 0 and M = 1 is L_1) (default: iwae)",
    )
    evaluate.add_argument(
        "--steps", type=_steps_list,
        help="AIS intermediate distributions T; with --bdmc a comma-separated list, one sandwich each (default: 100)",
    )
    evaluate.add_argument(
        "--bdmc", type=positive_int, metavar="N",
        help="bidirectional Monte Carlo on N images simulated from the model: forward AIS (lower bound) and reverse AIS "
        "from the simulated z (upper bound) per T of --steps, and the sandwich width",
    )
    evaluate.add_argument(
        "--ais-start", choices=("proposal", "prior"), default="proposal",
        help="AIS's first distribution: q(z|x), or p(z) (needs more steps, but does not inherit q's blind spots) (default: proposal)",
    )
    evaluate.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default: test)")
    evaluate.add_argument(
        "--exact",
        action="store_true",
        help="2-D latents only: exact log p(x) by quadrature and its gap to L_k for k = 1, 10, 100, 1000, 5000 (ignores --k); "
        "writes exact-<split>.json into the run",
    )
    evaluate.add_argument("--images", type=positive_int, help="evaluate the first N images of the split only (default: all)")
    evaluate.add_argument(
        "--precision",
        choices=MATMUL_PRECISIONS,
        default="fp32",
        help="matmul precision of L_k (not --exact): bf16 is about 1.4x faster on CPUs with AVX512-BF16 and moved L_k by "
        "0.02 nats on a trained MNIST model; the row records it (default: fp32)",
    )
    _add_common(evaluate)


def _steps_list(text: str) -> tuple[int, ...]:
    """'10,100,1000' -> (10, 100, 1000): AIS step counts, each a non-negative integer."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"must be non-negative integers separated by commas (got {text!r})")
    return values


def _add_datasets_arguments(datasets: argparse.ArgumentParser) -> None:
    datasets.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")


def _run_train(args: argparse.Namespace) -> int:
    from vaelab.runio import CONFIG_FILE, check_run_directory
    from vaelab.training import train

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.resume and args.config is None and (args.out / CONFIG_FILE).is_file():
        args.config = args.out / CONFIG_FILE  # the run's recorded config; options given beside --resume must agree with it
    config = experiment_config(args)
    check_experiment(args, config, (config.train.algorithm,))
    warn_if_bf16_is_slow_here(config.train.precision, args.device)
    if not args.no_progress and _main_process():
        check_run_directory(args.out, resume=args.resume, overwrite=args.overwrite)  # refuse before announcing the plan
        print(plan(config, (config.train.algorithm,), args.out))
    result = train(
        config, args.out, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
        device=args.device, tensorboard=args.tensorboard,
    )
    if not result.metrics:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    if args.no_progress:  # with progress, training printed every evaluation as it came
        evaluations = [row for row in result.metrics if row.get("kind") == "eval"]
        for row in evaluations[-len(config.train.eval_splits):]:
            print(f"epoch {row['epoch']}: {row['split']} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats")
    print(f"run written to {result.run_dir}")
    return 0


def warn_if_bf16_is_slow_here(precision: str, device: str) -> None:
    """Say on stderr when ``precision`` is bf16 on a CPU where oneDNN has no bfloat16 kernels (no
    AVX-512): the products then run several times slower than in fp32 (8.5x for an AEVB training
    epoch on an AVX2 CPU, benchmarks/run.py). A warning, not an error: the numbers are valid."""
    if precision != "bf16" or not _main_process():
        return
    import torch

    from vaelab.models.backend import ONEDNN_LINEAR_BF16

    if (device == "cpu" or (device == "auto" and not torch.cuda.is_available())) and not ONEDNN_LINEAR_BF16:
        print(
            f"vaelab: warning: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bfloat16 kernels: --precision bf16 "
            "runs several times slower than fp32 here (8.5x in a training benchmark on an AVX2 CPU)",
            file=sys.stderr,
        )


def _main_process() -> bool:
    """False in a torchrun process other than rank 0 (which alone announces and reports)."""
    return os.environ.get("RANK", "0") == "0"


def plan(config: ExperimentConfig, algorithms: Sequence[str], out: Path) -> str:
    """One line saying what a training command will do before it starts: algorithms, data,
    epochs, evaluations and where it writes."""
    train = config.train
    evaluations = len({*range(train.eval_every, train.epochs + 1, train.eval_every), train.epochs})
    return (
        f"{' and '.join(algorithms)} on {config.data.dataset}: {train.epochs} epochs of batch {train.batch_size}; "
        f"L_{train.eval_k} on {', '.join(train.eval_splits)} at {evaluations} epoch(s); writing {out} "
        "(a progress bar per epoch shows its time left)"
    )


def _run_evaluate(args: argparse.Namespace) -> int:
    from vaelab.evaluation.evaluate import evaluate_run

    if args.exact:
        from vaelab.evaluation.exact import evaluate_exact, exact_file, summary_lines

        print("\n".join(summary_lines(evaluate_exact(args.run_dir, args.split, data_dir=args.data_dir, device=args.device, num_images=args.images, progress=not args.no_progress))))
        print(f"written to {exact_file(args.run_dir, args.split)}")
        return 0
    if args.bdmc is not None or args.estimator == "ais":
        return _run_ais(args)
    if args.steps is not None or args.ais_start != "proposal":
        raise ConfigError("--steps and --ais-start apply to --estimator ais and --bdmc only")
    warn_if_bf16_is_slow_here(args.precision, args.device)
    row = evaluate_run(
        args.run_dir, args.k or 1000, args.split, data_dir=args.data_dir, device=args.device, num_images=args.images,
        precision=args.precision, progress=not args.no_progress,
    )
    print(
        f"{row['split']} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats "
        f"(ELBO {row['elbo']:.3f}; {row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
        + k_hat_words(row)
    )
    return 0


def k_hat_words(row: dict) -> str:
    """'; Pareto k-hat > 0.7 on 3.0% of images (mean 0.41)', or '' where k < 25 gave no k-hat."""
    if row.get("k_hat_above") is None:
        return ""
    mean = "" if row.get("k_hat_mean") is None else f" (mean {row['k_hat_mean']:.2f})"
    return f"; Pareto k-hat > 0.7 on {row['k_hat_above']:.1%} of images{mean}"


AIS_DEFAULT_CHAINS = 16
AIS_DEFAULT_STEPS = 100


def _run_ais(args: argparse.Namespace) -> int:
    from vaelab.evaluation.evaluate import evaluate_ais_run, evaluate_bdmc_run

    if args.precision != "fp32":
        raise ConfigError("--precision applies to L_k only, not to --estimator ais or --bdmc")
    chains = args.k or AIS_DEFAULT_CHAINS
    steps = args.steps or (AIS_DEFAULT_STEPS,)
    common = {"data_dir": args.data_dir, "device": args.device, "start": args.ais_start, "progress": not args.no_progress}
    if args.bdmc is not None:
        if args.images is not None:
            raise ConfigError("--bdmc simulates its own images: --images does not apply")
        for row in evaluate_bdmc_run(args.run_dir, args.bdmc, steps, chains, **common):
            print(
                f"BDMC T={row['steps']} M={row['chains']} on {row['num_images']} simulated images: "
                f"lower {row['lower']:.3f} ± {row['lower_stderr']:.3f}, upper {row['upper']:.3f} ± {row['upper_stderr']:.3f} nats; "
                f"width mean {row['width_mean']:.3f}, max {row['width_max']:.3f} nats ({row['eval_seconds']:.1f} s)"
            )
        return 0
    if len(steps) != 1:
        raise ConfigError("--estimator ais takes one --steps T (a list is for --bdmc)")
    row = evaluate_ais_run(args.run_dir, steps[0], chains, args.split, num_images=args.images, **common)
    acceptance = "" if row["acceptance"] is None else f", acceptance {row['acceptance']:.2f}"
    print(
        f"{row['split']} AIS log p(x) = {row['log_px']:.3f} ± {row['log_px_stderr']:.3f} nats "
        f"(T={row['steps']}, M={row['chains']}{acceptance}, {row['decoder_passes']} decoder passes per image; "
        f"{row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
    )
    return 0


def _add_bounds_arguments(bounds: argparse.ArgumentParser) -> None:
    bounds.add_argument("--out", type=Path, required=True, help="output directory")
    bounds.add_argument("--run", type=Path, help="a trained run with a 2-D latent (default: train a small AEVB model on digits into OUT/digits-run)")
    bounds.add_argument("--quick", action="store_true", help="k up to 1000, 3 repetitions, few points and epochs: a smoke test in seconds")
    bounds.add_argument("--seed", type=_argument_type(SEED), default=0, help="seed of the models, data and samples (default: 0)")
    bounds.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")
    bounds.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_bounds(args: argparse.Namespace) -> int:
    from vaelab.runio import directory_lock, make_directory
    from vaelab.studies.bounds.figures import write_figures
    from vaelab.studies.bounds.page import write_page
    from vaelab.studies.bounds.run import QUICK, StudySettings, run_study, summary_lines

    settings = dataclasses.replace(QUICK if args.quick else StudySettings(), seed=args.seed)
    make_directory(args.out, "output directory")
    with directory_lock(args.out, "bounds"):  # results, figures and page: one writer at a time
        results = run_study(args.out, args.run, settings, data_dir=args.data_dir, progress=not args.no_progress)
        write_figures(results, args.out)
        page = write_page(args.out)
    print("\n".join(summary_lines(results)))
    print(f"page written to {page}")
    return 0


def _run_datasets(args: argparse.Namespace) -> int:
    from vaelab.data import dataset_status, resolve_data_dir

    print(f"data folder: {resolve_data_dir(args.data_dir)}")
    for status in dataset_status(args.data_dir):
        print(f"{status.name:16} {'available' if status.available else 'missing'}")
        for file in status.files:
            mark = "ok" if file.matches else ("missing" if not file.present else "CHECKSUM MISMATCH")
            print(f"  {file.path:48} {mark:18} {file.sha256 or ''}")
    return 0


def _add_compare_arguments(compare: argparse.ArgumentParser) -> None:
    from vaelab.objectives import OBJECTIVES

    compare.add_argument(
        "--algorithms", type=_argument_type(list_of(tuple(OBJECTIVES))), default=("wake-sleep", "aevb"),
        help="comma-separated algorithms to compare (default: wake-sleep,aevb)",
    )
    _add_experiment_options(compare, exclude=("--algorithm",))
    compare.add_argument("--curve-images", type=positive_int, help="test images for the L_k-against-k figure, a fixed subset (default: all)")
    compare.add_argument("--out", type=Path, required=True, help="study directory")
    compare.add_argument("--overwrite", action="store_true", help="replace a study in --out that has another config (its runs, figures and report are deleted)")
    compare.add_argument("--tensorboard", action="store_true", help="each run also logs scalars and image grids under <run>/tensorboard (needs tensorboard)")
    _add_jobs(compare, "algorithms")
    _add_common(compare)


def _add_jobs(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--jobs", type=positive_int,
        help=f"{what} trained at once on the CPU, one process each with --threads threads (default: one per {what[:-1]} up to "
             "the CPUs, which they share out; 1: one after the other in this process, as on a GPU)",
    )


def _run_compare(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.run import compare
    from vaelab.studies.compare.study import Study

    config = experiment_config(args, algorithm=args.algorithms[0])
    check_experiment(args, config, args.algorithms)
    warn_if_bf16_is_slow_here(config.train.precision, args.device)
    study = Study(args.algorithms, config, args.curve_images)
    if not args.no_progress and _main_process():
        print(plan(config, args.algorithms, args.out))
    report = compare(
        study, args.out, data_dir=args.data_dir, progress=not args.no_progress, device=args.device, overwrite=args.overwrite,
        tensorboard=args.tensorboard, jobs=args.jobs, threads=args.threads,
    )
    if report is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    return _print_report(report)


def _print_report(report) -> int:
    print(report.sentence)
    print(f"report written to {report.html}")
    return 0


def _add_report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("study_dir", type=Path, help="study directory written by 'vaelab compare'")
    report.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")


def _run_report(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.report import build_report

    report = build_report(args.study_dir, data_dir=args.data_dir)
    return _print_report(report)


def _add_reproduce_arguments(reproduce: argparse.ArgumentParser) -> None:
    from vaelab.studies.reproduce.presets import BUDGETS

    reproduce.add_argument("preset", nargs="?", help="preset to reproduce ('--list' shows them)")
    reproduce.add_argument("--list", action="store_true", help="one line per preset: name, paper, table, published values")
    reproduce.add_argument(
        "--budget", choices=BUDGETS, default="smoke",
        help="full: the published protocol; reduced: a stated fraction of it (e.g. 364 of 3,280 epochs); smoke: seconds (default: smoke)",
    )
    reproduce.add_argument("--rows", type=_argument_type(Kind("a comma-separated list of row names", lambda t: tuple(t.split(",")), bool)),
                           help="comma-separated rows of the preset's table to run (default: all)")
    reproduce.add_argument("--out", type=Path, help="reproduction directory (one run directory per row)")
    _add_jobs(reproduce, "rows")
    _add_common(reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from vaelab.studies.reproduce.presets import get_preset, list_lines

    if args.list:
        print("\n".join(list_lines()))
        return 0
    if args.preset is None or args.out is None:
        raise ConfigError("give a preset and --out DIR (or --list)")
    from vaelab.studies.reproduce.run import reproduce

    report = reproduce(get_preset(args.preset), args.budget, args.out, rows=args.rows, data_dir=args.data_dir,
                       progress=not args.no_progress, device=args.device, jobs=args.jobs, threads=args.threads)
    print("\n".join(report.lines))
    print(f"report written to {report.markdown}")
    return 0


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, its description, its arguments, what runs it, and what to
    tell the user after an interrupt (only ``train`` has --resume)."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    after_interrupt: str  # what an interrupted run left, and how to go on


COMMANDS = {
    "train": Command(
        "train one model",
        "Train one model; writes config.json, environment.json, metrics.jsonl and checkpoint.pt into --out.",
        _add_train_arguments,
        _run_train,
        "the last checkpoint is intact (continue with --resume)",
    ),
    "evaluate": Command(
        "estimate L_k, or log p(x) by AIS, of a trained run",
        "Estimate L_k (with the Pareto k-hat of each image's weights), or log p(x) by annealed importance sampling, "
        "of a run's last checkpoint, or the BDMC sandwich on simulated images; prints mean and standard error, appends "
        "them to the run's metrics and writes the per-image values beside them (bounds-*.npz).",
        _add_evaluate_arguments,
        _run_evaluate,
        "nothing was written (evaluation has nothing to resume: run it again)",
    ),
    "bounds": Command(
        "L_k against k beside exact log p(x), and the counterexample with unbounded weights",
        "Sections 1.4 and 1.5 of the original homework as experiments: L_k against k beside exact log p(x) on tractable models "
        "and a trained 2-D model, and proposals for which L_k stalls below log p(x). Writes bounds.json, figures (PNG, PDF) "
        "and bounds.html into --out.",
        _add_bounds_arguments,
        _run_bounds,
        "run the same command again (its training run continues from its checkpoint)",
    ),
    "datasets": Command(
        "list datasets and their local files",
        "List every dataset, whether its files are present locally, and their sha256.",
        _add_datasets_arguments,
        _run_datasets,
        "nothing was changed",
    ),
    "compare": Command(
        "train several algorithms alike and report on them",
        "The wake-sleep against AEVB study of the original homework in one command: train every algorithm of --algorithms "
        "with the same seed, data, networks and budget (one run directory each, DIR/<algorithm>/), then write figures and "
        "DIR/report.html. Run it again to continue a killed study.",
        _add_compare_arguments,
        _run_compare,
        "every finished epoch is saved (run the same command again to continue the study)",
    ),
    "reproduce": Command(
        "reproduce a published table: measured beside published",
        "Train each row of a published table with the paper's protocol (one run directory per row, DIR/<row>/) under "
        "--budget, measure the published L_k and write DIR/report.md: measured beside published, the gap in nats, "
        "whether it lies in the band, and the learning curve so far. Run it again to continue a killed reproduction.",
        _add_reproduce_arguments,
        _run_reproduce,
        "every finished epoch is saved (run the same command again to continue the reproduction)",
    ),
    "report": Command(
        "rebuild a study's figures and report",
        "Rebuild the figures and report.html of a study written by 'vaelab compare', from its saved results; never trains.",
        _add_report_arguments,
        _run_report,
        "the previous figures and report are intact (run it again)",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand's name and help, with the arguments of ``command`` alone
    (building a subcommand's options imports the registries, and with them torch: ``vaelab --help``
    and ``vaelab --version`` stay light)."""
    parser = _Parser(prog="vaelab", description="Deep latent-variable models: wake-sleep, AEVB, IWAE and more, measured with the importance-weighted bound L_k.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, spec in COMMANDS.items():
        subparser = commands.add_parser(name, help=spec.help, description=spec.description)
        if name == command:
            spec.add_arguments(subparser)
    return parser


MAX_THREADS_PER_CORE = 8  # beyond this, threads only cost memory (a stack each) and switching


def _set_threads(threads: int) -> None:
    """``torch.set_num_threads``, after refusing counts no machine could use (``--threads 1000000``
    would reserve a stack per thread and end in the allocator's traceback)."""
    import torch

    cores = os.cpu_count() or 1
    if threads > MAX_THREADS_PER_CORE * cores:
        raise ConfigError(f"--threads {threads} is more than {MAX_THREADS_PER_CORE} per core of this machine's {cores}")
    torch.set_num_threads(threads)


def _terminate(signum, frame):
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    configure_threads()  # before anything loads torch: OpenMP threads that wait sleep rather than spin
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    # SIGTERM (Slurm, Kubernetes, `kill`) stops like Ctrl-C: one line, files intact; training
    # installs its own handler that first finishes the epoch's checkpoint.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        from vaelab.models.backend import flushing_subnormals  # loads torch: after configure_threads

        # from before the first parallel op starts PyTorch's threads, so that they inherit it
        with flushing_subnormals():
            if getattr(args, "threads", None):
                _set_threads(args.threads)
            return COMMANDS[args.command].run(args)
    except VaelabError as error:
        print(f"vaelab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"vaelab {args.command}: {what}; {COMMANDS[args.command].after_interrupt}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
