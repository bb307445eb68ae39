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
    add_seeds,
    add_trust_code,
    argument_type,
    check_trust,
    experiment_config,
    positive_int,
    refuse_seed_with_seeds,
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
    add_seeds(parser, "OUT/<algorithm>/seed-<s>/")
    add_per_seed_lines(parser)
    add_jobs(parser, "runs")
    add_common(parser)
    add_trust_code(parser)


def add_per_seed_lines(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-seed-lines", action="store_true", help="with seeds, the training figure also draws each seed's curve (default: mean and min-max band)")


def run_compare(args: argparse.Namespace) -> int:
    from vaelab.studies.compare.run import compare
    from vaelab.studies.compare.study import Study

    refuse_seed_with_seeds(args)
    config = experiment_config(args, algorithm=args.algorithms[0])
    check_trust(args, config)
    refuse_unread_options(args, args.algorithms)
    study = Study(args.algorithms, config, args.curve_images, args.seeds)
    report = compare(
        study, args.out, data_dir=args.data_dir, progress=not args.no_progress, device=args.device, overwrite=args.overwrite,
        tensorboard=args.tensorboard, jobs=args.jobs, threads=args.threads, announce=announcer(args, config, args.algorithms),
        per_seed_lines=args.per_seed_lines,
    )
    if report is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    return print_report(report)


def print_report(report) -> int:
    print(report.sentence)
    print(f"report written to {report.html}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", type=Path, help="study directory written by 'vaelab compare', or the parent of 'vaelab train --seeds'")
    add_per_seed_lines(parser)
    add_data_dir(parser)
    add_trust_code(parser)


def run_report(args: argparse.Namespace) -> int:
    from vaelab.runio import SEEDS_FILE, STUDY_FILE
    from vaelab.studies.compare.report import build_report

    if (args.study_dir / SEEDS_FILE).is_file() and not (args.study_dir / STUDY_FILE).exists():
        from vaelab.evaluation.across_seeds import final_summary

        lines, path = final_summary(args.study_dir)
        print("\n".join(lines))
        print(f"written to {path}")
        return 0
    return print_report(build_report(args.study_dir, data_dir=args.data_dir, trust_code=args.trust_code, per_seed_lines=args.per_seed_lines))


COMMANDS = (
    Command(
        "compare",
        "train several algorithms alike and report on them",
        "The wake-sleep against AEVB comparison of Kingma & Welling (2013, Auto-encoding variational Bayes) in one command: train every algorithm of --algorithms "
        "with the same seed, data, networks and budget (one run directory each, DIR/<algorithm>/; with --seeds, one per seed, "
        "DIR/<algorithm>/seed-<s>/), then write figures and DIR/report.html. Run it again to continue a killed study.",
        add_compare_arguments,
        run_compare,
        "every finished epoch is saved (run the same command again to continue the study)",
    ),
    Command(
        "report",
        "rebuild a study's figures and report",
        "Rebuild the figures and report.html of a study written by 'vaelab compare', from its saved results; never trains. "
        "Given the parent of 'vaelab train --seeds', print and save the final test L_k summarised across seeds.",
        add_report_arguments,
        run_report,
        "the previous figures and report are intact (run it again)",
    ),
)
