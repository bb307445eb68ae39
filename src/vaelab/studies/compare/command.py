"""``vaelab compare`` and ``vaelab report``: the study's commands, found by :mod:`vaelab.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli.command import Command, announcer
from vaelab.cli.options import (
    add_common,
    add_data_dir,
    add_experiment_options,
    add_jobs,
    add_trust_code,
    argument_type,
    check_trust,
    experiment_config,
    positive_int,
    refuse_unread_options,
)
from vaelab.config import list_of


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    from vaelab.objectives import OBJECTIVES

    parser.add_argument(
        "--algorithms", type=argument_type(list_of(tuple(OBJECTIVES))), default=("wake-sleep", "aevb"),
        help="comma-separated algorithms to compare (default: wake-sleep,aevb)",
    )
    add_experiment_options(parser, exclude=("--algorithm",))
    parser.add_argument("--curve-images", type=positive_int, help="test images for the L_k-against-k figure, a fixed subset (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="study directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a study in --out that has another config (its runs, figures and report are deleted)")
    parser.add_argument("--tensorboard", action="store_true", help="each run also logs scalars and image grids under <run>/tensorboard (needs tensorboard)")
    add_jobs(parser, "algorithms")
    add_common(parser)
    add_trust_code(parser)


def run_compare(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.run import compare
    from vaelab.studies.compare.study import Study

    config = experiment_config(args, algorithm=args.algorithms[0])
    check_trust(args, config)
    refuse_unread_options(args, args.algorithms)
    study = Study(args.algorithms, config, args.curve_images)
    report = compare(
        study, args.out, data_dir=args.data_dir, progress=not args.no_progress, device=args.device, overwrite=args.overwrite,
        tensorboard=args.tensorboard, jobs=args.jobs, threads=args.threads, announce=announcer(args, config, args.algorithms),
    )
    if report is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    return print_report(report)


def print_report(report) -> int:
    print(report.sentence)
    print(f"report written to {report.html}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", type=Path, help="study directory written by 'vaelab compare'")
    add_data_dir(parser)
    add_trust_code(parser)


def run_report(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.report import build_report

    return print_report(build_report(args.study_dir, data_dir=args.data_dir, trust_code=args.trust_code))


COMMANDS = (
    Command(
        "compare",
        "train several algorithms alike and report on them",
        "The wake-sleep against AEVB study of the original homework in one command: train every algorithm of --algorithms "
        "with the same seed, data, networks and budget (one run directory each, DIR/<algorithm>/), then write figures and "
        "DIR/report.html. Run it again to continue a killed study.",
        add_compare_arguments,
        run_compare,
        "every finished epoch is saved (run the same command again to continue the study)",
    ),
    Command(
        "report",
        "rebuild a study's figures and report",
        "Rebuild the figures and report.html of a study written by 'vaelab compare', from its saved results; never trains.",
        add_report_arguments,
        run_report,
        "the previous figures and report are intact (run it again)",
    ),
)
