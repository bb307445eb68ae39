"""``vaelab train``: one model into a run directory, its options generated from the config's fields."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli.command import Command, announcer
from vaelab.cli.options import (
    add_common,
    add_experiment_options,
    add_jobs,
    add_seeds,
    add_trust_code,
    check_trust,
    experiment_config,
    refuse_seed_with_seeds,
    refuse_unread_options,
)
from vaelab.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_experiment_options(parser)
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint; alone, with the run's recorded config")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out (its checkpoint, metrics and config are deleted)")
    parser.add_argument("--tensorboard", action="store_true", help="also log scalars and image grids under <out>/tensorboard (needs tensorboard)")
    add_seeds(parser, "OUT/seed-<s>/")
    add_jobs(parser, "seeds")
    add_common(parser)
    add_trust_code(parser)


def run(args: argparse.Namespace) -> int:
    from vaelab.evaluation.across_seeds import seed_run_dir
    from vaelab.runio import CONFIG_FILE, is_vaelab_run
    from vaelab.seeds import train_seeds
    from vaelab.training import train

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.jobs is not None and args.seeds is None:
        raise ConfigError("--jobs trains the seeds of --seeds at once: give --seeds, or leave --jobs out")
    refuse_seed_with_seeds(args)
    recorded = args.out if args.seeds is None else seed_run_dir(args.out, args.seeds[0])
    if args.resume and args.config is None and is_vaelab_run(recorded) and (recorded / CONFIG_FILE).is_file():
        args.config = recorded / CONFIG_FILE  # the run's recorded config; options given beside --resume must agree with it
    config = experiment_config(args)
    check_trust(args, config)
    refuse_unread_options(args, (config.train.algorithm,))
    if args.seeds is not None:
        train_seeds(
            config, args.seeds, args.out, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
            device=args.device, tensorboard=args.tensorboard, jobs=args.jobs, threads=args.threads,
            announce=announcer(args, config, (config.train.algorithm,)),
        )
        print(f"{len(args.seeds)} runs written to {args.out}/seed-<s> (seeds {', '.join(map(str, args.seeds))}); "
              f"'vaelab evaluate {args.out}' summarises them across seeds")
        return 0
    result = train(
        config, args.out, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
        device=args.device, tensorboard=args.tensorboard, announce=announcer(args, config, (config.train.algorithm,)),
    )
    if not result.metrics:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    print(f"run written to {result.run_dir}")
    return 0


COMMANDS = (
    Command(
        "train",
        "train one model",
        "Train one model; writes config.json, environment.json, metrics.jsonl and checkpoint.pt into --out "
        "(with --seeds, one such run per seed in --out/seed-<s>/).",
        add_arguments,
        run,
        "the last checkpoint is intact (continue with --resume)",
    ),
)
