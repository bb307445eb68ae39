"""The ``vaelab`` command line: parse, build a config, call the library function the tests call.

Expected failures (:class:`~vaelab.errors.VaelabError`, bad options) print one line to stderr
and exit non-zero without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from vaelab.config import (
    ACTIVATIONS,
    BINARIZATIONS,
    DEFAULT_PRIOR_COMPONENTS,
    KL_ESTIMATORS,
    LATENTS,
    LIKELIHOODS,
    MATMUL_PRECISIONS,
    PRIORS,
    RWS_PHI_UPDATES,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
)
from vaelab.errors import ConfigError, Interrupted, VaelabError

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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (got {text!r})")
    return value


def number_in(low: float, high: float, closed: bool):
    """An argparse type: a float in [low, high] (``closed``) or (low, high)."""
    interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (low <= value <= high if closed else low < value < high):
            raise argparse.ArgumentTypeError(f"must be a number in {interval} (got {text!r})")
        return value

    return parse


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers such as 512 or 200,200 (got {text!r})")
    return values


def name_list(choices: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(choices)} (got {text!r})")
        return names

    return parse


# (flag, config section, field, argparse keywords): each becomes an option of `train` (and `compare`).
def _experiment_options():
    from vaelab.data import DATASET_NAMES
    from vaelab.objectives import OBJECTIVES

    return [
        ("--dataset", "data", "dataset", {"choices": DATASET_NAMES, "help": "dataset by name"}),
        ("--binarization", "data", "binarization", {"choices": BINARIZATIONS, "help": "how grey pixels become Bernoulli targets for training; 'none' is not a normalised likelihood"}),
        ("--binarization-seed", "data", "binarization_seed", {"type": non_negative_int, "help": "seed of the fixed binarization of evaluation splits"}),
        ("--latent-dim", "model", "latent_dim", {"type": int_list, "help": "dimension of z, or one per stochastic layer from x up, e.g. 100,50"}),
        ("--latent", "model", "latent", {"choices": LATENTS, "help": "type of the latents; bernoulli needs --prior bernoulli"}),
        ("--hidden", "model", "hidden", {"type": int_list, "help": "hidden widths of the x <-> z_1 networks, e.g. 512 or 200,200"}),
        ("--upper-hidden", "model", "upper_hidden", {"type": int_list, "help": "hidden widths of the networks between stochastic layers"}),
        ("--activation", "model", "activation", {"choices": ACTIVATIONS, "help": "hidden activation"}),
        ("--likelihood", "model", "likelihood", {"choices": LIKELIHOODS, "help": "p(x|z); 'auto' takes the dataset's"}),
        ("--prior", "model", "prior", {"choices": PRIORS, "help": "p(z) of the top stochastic layer"}),
        ("--prior-components", "model", "prior_components", {"type": positive_int, "help": "components of the mixture or pseudo-inputs of the vamp prior; none: 10 and 500"}),
        ("--algorithm", "train", "algorithm", {"choices": tuple(OBJECTIVES), "help": "learning algorithm"}),
        ("--num-samples", "train", "num_samples", {"type": positive_int, "help": "samples per datapoint: m of aevb and wake-sleep, k of the L_k objectives"}),
        ("--kl", "train", "kl", {"choices": KL_ESTIMATORS, "help": "aevb's KL term: closed form or the Monte Carlo estimator"}),
        ("--rws-phi", "train", "rws_phi", {"choices": RWS_PHI_UPDATES, "help": "rws's phi update: wake-phi, sleep-phi or their average"}),
        ("--groups", "train", "groups", {"type": positive_int, "help": "miwae and piwae: M groups of --num-samples samples each"}),
        ("--ciwae-beta", "train", "ciwae_beta", {"type": number_in(0, 1, closed=True), "help": "ciwae: weight of the ELBO against L_k"}),
        ("--epochs", "train", "epochs", {"type": positive_int, "help": "training epochs"}),
        ("--batch-size", "train", "batch_size", {"type": positive_int, "help": "minibatch size"}),
        ("--lr", "train", "learning_rate", {"type": number_in(0, 1, closed=False), "help": "Adam learning rate"}),
        ("--precision", "train", "precision", {"choices": MATMUL_PRECISIONS, "help": "matmul precision of the training steps (evaluations stay fp32): "
         "bf16 trains 1.2-2.2x faster on CPUs with AVX512-BF16 (README: Benchmarks)"}),
        ("--eval-every", "train", "eval_every", {"type": positive_int, "help": "evaluate L_k every this many epochs (and at the last)"}),
        ("--eval-k", "train", "eval_k", {"type": positive_int, "help": "k of the L_k evaluations"}),
        ("--eval-splits", "train", "eval_splits", {"type": name_list(("train", "valid", "test")), "help": "comma-separated splits to evaluate"}),
        ("--eval-train-size", "train", "eval_train_size", {"type": positive_int, "help": "evaluate the train split on a fixed subset of this many images (default: all)"}),
        ("--seed", None, "seed", {"type": non_negative_int, "help": "seed of initialisation, minibatches and sampling"}),
    ]


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _default(section: str | None, field: str):
    cls = _SECTIONS[section] if section else ExperimentConfig
    return next(f for f in dataclasses.fields(cls) if f.name == field).default


def _add_experiment_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    for flag, section, field, keywords in _experiment_options():
        if flag in exclude:
            continue
        default = _default(section, field)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        keywords = {**keywords, "help": f"{keywords['help']} (default: {shown})"}
        parser.add_argument(flag, dest=field, default=None, **keywords)
    parser.add_argument("--config", type=Path, help="JSON config file to start from; options given here override it")


def experiment_config(args: argparse.Namespace, algorithm: str | None = None) -> ExperimentConfig:
    """The config of ``--config`` (or the defaults) with every option given on the command line
    applied, and ``algorithm`` (when given) as ``train.algorithm``."""
    base = ExperimentConfig.load(args.config) if getattr(args, "config", None) else ExperimentConfig()
    updates: dict[str, dict] = {"data": {}, "model": {}, "train": {} if algorithm is None else {"algorithm": algorithm}}
    seed = base.seed
    for _, section, field, _ in _experiment_options():
        value = getattr(args, field, None)
        if value is None:
            continue
        if section is None:
            seed = value
        else:
            updates[section][field] = value
    return ExperimentConfig(
        data=dataclasses.replace(base.data, **updates["data"]),
        model=dataclasses.replace(base.model, **updates["model"]),
        train=dataclasses.replace(base.train, **updates["train"]),
        seed=seed,
    )


def refuse_unused_options(args: argparse.Namespace, config: ExperimentConfig, algorithms: Sequence[str]) -> None:
    """Raise ConfigError for an option given on the command line that none of ``algorithms``
    (nor ``config``'s prior) would read, e.g. ``--groups`` with ``--algorithm iwae``."""
    from vaelab.objectives import OBJECTIVES

    flags = {field: flag for flag, _, field, _ in _experiment_options()}
    for field in sorted({option for objective in OBJECTIVES.values() for option in objective.options}):
        readers = [name for name, objective in OBJECTIVES.items() if field in objective.options]
        if getattr(args, field, None) is not None and not set(readers) & set(algorithms):
            raise ConfigError(f"{flags[field]} applies to {' and '.join(readers)} only, not to {', '.join(algorithms)}")
    if getattr(args, "prior_components", None) is not None and config.model.prior not in DEFAULT_PRIOR_COMPONENTS:
        raise ConfigError(f"--prior-components applies to the {' and '.join(DEFAULT_PRIOR_COMPONENTS)} priors only, not to {config.model.prior}")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--device", default="auto", help="auto (a CUDA device if there is one, else the CPU), cpu, cuda or cuda:<index> (default: auto)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads of this process (default: PyTorch's, one per core); on a shared machine 1 per process is often fastest",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Deep latent-variable models: wake-sleep, AEVB and the importance-weighted bound L_k.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train one model", description="Train one model; writes config.json, environment.json, metrics.jsonl and checkpoint.pt into --out.")
    _add_experiment_options(train)
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint; alone, with the run's recorded config")
    train.add_argument("--overwrite", action="store_true", help="replace the run in --out (its checkpoint, metrics and config are deleted)")
    _add_common(train)

    evaluate = commands.add_parser("evaluate", help="estimate L_k of a trained run", description="Estimate L_k of a run's last checkpoint; prints mean and standard error and appends them to the run's metrics.")
    evaluate.add_argument("run_dir", type=Path, help="run directory written by 'vaelab train'")
    evaluate.add_argument("--k", type=positive_int, default=1000, help="number of importance samples (default: 1000)")
    evaluate.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split to evaluate (default: test)")
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

    _add_bounds_parser(commands)

    datasets = commands.add_parser("datasets", help="list datasets and their local files", description="List every dataset, whether its files are present locally, and their sha256.")
    datasets.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")
    _add_compare_parser(commands)
    _add_report_parser(commands)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    from vaelab.runio import CONFIG_FILE
    from vaelab.training import train

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.resume and args.config is None and (args.out / CONFIG_FILE).is_file():
        args.config = args.out / CONFIG_FILE  # the run's recorded config; options given beside --resume must agree with it
    config = experiment_config(args)
    refuse_unused_options(args, config, (config.train.algorithm,))
    result = train(
        config, args.out, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress, device=args.device
    )
    if not result.metrics:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    evaluations = [row for row in result.metrics if row.get("kind") == "eval"]
    for row in evaluations[-len(config.train.eval_splits):]:
        print(f"epoch {row['epoch']}: {row['split']} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats")
    print(f"run written to {result.run_dir}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from vaelab.evaluation.evaluate import evaluate_run

    if args.exact:
        from vaelab.evaluation.exact import evaluate_exact, exact_file, summary_lines

        print("\n".join(summary_lines(evaluate_exact(args.run_dir, args.split, data_dir=args.data_dir, device=args.device, num_images=args.images))))
        print(f"written to {exact_file(args.run_dir, args.split)}")
        return 0
    row = evaluate_run(args.run_dir, args.k, args.split, data_dir=args.data_dir, device=args.device, num_images=args.images, precision=args.precision)
    print(
        f"{row['split']} L_{row['k']} = {row['bound']:.3f} ± {row['bound_stderr']:.3f} nats "
        f"(ELBO {row['elbo']:.3f}; {row['num_images']} images, epoch {row['epoch']}, {row['eval_seconds']:.1f} s)"
    )
    return 0


def _add_bounds_parser(commands) -> None:
    bounds = commands.add_parser(
        "bounds",
        help="L_k against k beside exact log p(x), and the counterexample with unbounded weights",
        description="The seed's sections 1.4 and 1.5 as experiments: L_k against k beside exact log p(x) on tractable models and a "
        "trained 2-D model, and proposals for which L_k stalls below log p(x). Writes bounds.json, figures (PNG, PDF) and bounds.html into --out.",
    )
    bounds.add_argument("--out", type=Path, required=True, help="output directory")
    bounds.add_argument("--run", type=Path, help="a trained run with a 2-D latent (default: train a small AEVB model on digits into OUT/digits-run)")
    bounds.add_argument("--quick", action="store_true", help="k up to 1000, 3 repetitions, few points and epochs: a smoke test in seconds")
    bounds.add_argument("--seed", type=non_negative_int, default=0, help="seed of the models, data and samples (default: 0)")
    bounds.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")
    bounds.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_bounds(args: argparse.Namespace) -> int:
    from vaelab.studies.bounds.figures import write_figures
    from vaelab.studies.bounds.page import write_page
    from vaelab.studies.bounds.run import QUICK, StudySettings, run_study, summary_lines

    settings = dataclasses.replace(QUICK if args.quick else StudySettings(), seed=args.seed)
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


def _add_compare_parser(commands) -> None:
    from vaelab.objectives import OBJECTIVES

    compare = commands.add_parser(
        "compare",
        help="train several algorithms alike and report on them",
        description="The seed's study in one command: train every algorithm of --algorithms with the same seed, data, "
        "networks and budget (one run directory each, DIR/<algorithm>/), then write figures and DIR/report.html. "
        "Run it again to continue a killed study.",
    )
    compare.add_argument(
        "--algorithms", type=name_list(tuple(OBJECTIVES)), default=("wake-sleep", "aevb"),
        help="comma-separated algorithms to compare (default: wake-sleep,aevb)",
    )
    _add_experiment_options(compare, exclude=("--algorithm",))
    compare.add_argument("--curve-images", type=positive_int, help="test images for the L_k-against-k figure, a fixed subset (default: all)")
    compare.add_argument("--out", type=Path, required=True, help="study directory")
    compare.add_argument("--overwrite", action="store_true", help="replace a study in --out that has another config (its runs, figures and report are deleted)")
    _add_common(compare)


def _run_compare(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.run import compare
    from vaelab.studies.compare.study import Study

    config = experiment_config(args, algorithm=args.algorithms[0])
    refuse_unused_options(args, config, args.algorithms)
    study = Study(args.algorithms, config, args.curve_images)
    report = compare(study, args.out, data_dir=args.data_dir, progress=not args.no_progress, device=args.device, overwrite=args.overwrite)
    if report is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    return _print_report(report)


def _print_report(report) -> int:
    print(report.sentence)
    print(f"report written to {report.html}")
    return 0


def _add_report_parser(commands) -> None:
    report = commands.add_parser(
        "report",
        help="rebuild a study's figures and report",
        description="Rebuild the figures and report.html of a study written by 'vaelab compare', from its saved results; never trains.",
    )
    report.add_argument("study_dir", type=Path, help="study directory written by 'vaelab compare'")
    report.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")


def _run_report(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.report import build_report

    report = build_report(args.study_dir, data_dir=args.data_dir)
    return _print_report(report)


COMMANDS = {
    "train": _run_train,
    "evaluate": _run_evaluate,
    "datasets": _run_datasets,
    "compare": _run_compare,
    "report": _run_report,
    "bounds": _run_bounds,
}


# What to do after an interrupted command: only `train` has --resume.
_AFTER_INTERRUPT = {
    "train": "the last checkpoint is intact (continue with --resume)",
    "compare": "every finished epoch is saved (run the same command again to continue the study)",
    "evaluate": "nothing was written (evaluation has nothing to resume: run it again)",
    "report": "the previous figures and report are intact (run it again)",
    "bounds": "run the same command again (its training run continues from its checkpoint)",
    "datasets": "nothing was changed",
}


MAX_THREADS_PER_CORE = 8  # beyond this, threads only cost memory (a stack each) and switching


def _set_threads(threads: int) -> None:
    """``torch.set_num_threads``, after refusing counts no machine could use (``--threads 1000000``
    would reserve a stack per thread and end in the allocator's traceback)."""
    import os

    import torch

    cores = os.cpu_count() or 1
    if threads > MAX_THREADS_PER_CORE * cores:
        raise ConfigError(f"--threads {threads} is more than {MAX_THREADS_PER_CORE} per core of this machine's {cores}")
    torch.set_num_threads(threads)


def _terminate(signum, frame):
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM (Slurm, Kubernetes, `kill`) stops like Ctrl-C: one line, files intact; training
    # installs its own handler that first finishes the epoch's checkpoint.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        if getattr(args, "threads", None):
            _set_threads(args.threads)
        return COMMANDS[args.command](args)
    except VaelabError as error:
        print(f"vaelab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"vaelab {args.command}: {what}; {_AFTER_INTERRUPT[args.command]}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
