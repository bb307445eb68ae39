"""``vaelab reproduce``: the study's command, found by :mod:`vaelab.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli.command import Command
from vaelab.cli.options import add_common, add_jobs, add_seeds, argument_type
from vaelab.config import Kind
from vaelab.errors import ConfigError

ROWS = Kind("a comma-separated list of row names", lambda text: tuple(text.split(",")), bool)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vaelab.studies.reproduce.presets import BUDGETS

    parser.add_argument("preset", nargs="?", help="preset to reproduce ('--list' shows them)")
    parser.add_argument("--list", action="store_true", help="one line per preset: name, paper, table, published values")
    parser.add_argument(
        "--budget", choices=BUDGETS, default="smoke",
        help="full: the published protocol; reduced: a stated fraction of it (e.g. 364 of 3,280 epochs); smoke: seconds (default: smoke)",
    )
    parser.add_argument("--rows", type=argument_type(ROWS), help="comma-separated rows of the preset's table to run (default: all)")
    parser.add_argument("--out", type=Path, help="reproduction directory (one run directory per row)")
    add_seeds(parser, "OUT/<row>/seed-<s>/")
    add_jobs(parser, "runs")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    from vaelab.studies.reproduce.presets import get_preset, list_lines

    if args.list:
        print("\n".join(list_lines()))
        return 0
    if args.preset is None or args.out is None:
        raise ConfigError("give a preset and --out DIR (or --list)")
    from vaelab.studies.reproduce.run import reproduce

    report = reproduce(get_preset(args.preset), args.budget, args.out, rows=args.rows, data_dir=args.data_dir,
                       progress=not args.no_progress, device=args.device, jobs=args.jobs, threads=args.threads, seeds=args.seeds)
    print("\n".join(report.lines))
    print(f"report written to {report.markdown}")
    return 0


COMMANDS = (
    Command(
        "reproduce",
        "reproduce a published table: measured beside published",
        "Train each row of a published table with the paper's protocol (one run directory per row, DIR/<row>/; with --seeds, "
        "one per row and seed, DIR/<row>/seed-<s>/) under "
        "--budget, measure the published L_k and write DIR/report.md: measured beside published, the gap in nats, "
        "whether it lies in the band, and the learning curve so far. Run it again to continue a killed reproduction.",
        add_arguments,
        run,
        "every finished epoch is saved (run the same command again to continue the reproduction)",
    ),
)
