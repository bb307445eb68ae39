"""``vaelab bounds``: the study's command, found by :mod:`vaelab.cli`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vaelab.cli.command import Command
from vaelab.cli.options import add_data_dir, add_trust_code, argument_type
from vaelab.config import SEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--run", type=Path, help="a trained run with a 2-D latent (default: train a small AEVB model on digits into OUT/digits-run)")
    parser.add_argument("--quick", action="store_true", help="k up to 1000, 3 repetitions, few points and epochs: a smoke test in seconds")
    parser.add_argument("--seed", type=argument_type(SEED), default=0, help="seed of the models, data and samples (default: 0)")
    add_data_dir(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_trust_code(parser)


def run(args: argparse.Namespace) -> int:
    from vaelab.studies.bounds.run import QUICK, StudySettings, summary_lines
    from vaelab.studies.bounds.study import bounds_study

    settings = dataclasses.replace(QUICK if args.quick else StudySettings(), seed=args.seed)
    results, page = bounds_study(args.out, args.run, settings, data_dir=args.data_dir, progress=not args.no_progress, trust_code=args.trust_code)
    print("\n".join(summary_lines(results)))
    print(f"page written to {page}")
    return 0


COMMANDS = (
    Command(
        "bounds",
        "L_k against k beside exact log p(x), and the counterexample with unbounded weights",
        "The importance-weighted bound L_k of Burda, Grosse & Salakhutdinov (2015) against exact log p(x): L_k against k on "
        "tractable models and a trained 2-D model, and proposals for which L_k stalls below log p(x). Writes bounds.json, figures (PNG, PDF) "
        "and bounds.html into --out.",
        add_arguments,
        run,
        "run the same command again (its training run continues from its checkpoint)",
    ),
)
