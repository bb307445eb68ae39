"""``vaelab evaluate``: L_k, AIS, BDMC or exact log p(x) of a saved run, its options generated from
:class:`~vaelab.evaluation.settings.EvaluateSettings` as train's are from the config."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vaelab.cli.command import Command, warn_if_bf16_is_slow_here
from vaelab.cli.options import add_common, add_field_options, add_trust_code, settings_from
from vaelab.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vaelab.evaluation.settings import EvaluateSettings

    parser.add_argument("run_dir", type=Path, help="run directory written by 'vaelab train', or the parent of a multi-seed command (--seeds): every seed's run, then the summary across seeds")
    add_field_options(parser, dataclasses.fields(EvaluateSettings))
    add_common(parser)
    add_trust_code(parser)


def run(args: argparse.Namespace) -> int:
    from vaelab.evaluation import lines
    from vaelab.evaluation.evaluate import evaluate_ais_run, evaluate_bdmc_run, evaluate_run
    from vaelab.evaluation.settings import EvaluateSettings
    from vaelab.runio import SEEDS_FILE

    settings = settings_from(args, EvaluateSettings)
    common = {"data_dir": args.data_dir, "device": args.device, "progress": not args.no_progress, "trust_code": args.trust_code}
    chosen = {"checkpoint": settings.checkpoint}
    if (args.run_dir / SEEDS_FILE).is_file():
        return _run_seeds(args, settings, {**common, **chosen})
    if settings.exact:
        from vaelab.evaluation.exact import evaluate_exact, exact_file, summary_lines

        result = evaluate_exact(args.run_dir, settings.split, num_images=settings.images, **common, **chosen)
        print("\n".join(summary_lines(result)))
        print(f"written to {exact_file(args.run_dir, settings.split)}, per image to {args.run_dir / result['bounds_file']}")
    elif settings.gaps:
        from vaelab.estimators.ais import AISSettings
        from vaelab.evaluation.gaps import GapSettings, evaluate_gaps_run, gap_lines
        from vaelab.evaluation.settings import LK_DEFAULT_K

        gap_settings = GapSettings(settings.k or LK_DEFAULT_K, settings.gap_steps, settings.gap_lr, ais=AISSettings(steps=settings.ais_steps[0], start=settings.ais_start))
        result = evaluate_gaps_run(args.run_dir, settings.images, gap_settings, settings.split, **common, **chosen)
        print("\n".join(gap_lines(result)))
        print(f"per image written to {args.run_dir / result['file']}")
    elif settings.bdmc is not None:
        for row in evaluate_bdmc_run(args.run_dir, settings.bdmc, settings.ais_steps, settings.samples, start=settings.ais_start, **common, **chosen):
            print(lines.bdmc_line(row) + checkpoint_words(row, settings.checkpoint))
    elif settings.annealed:
        row = evaluate_ais_run(
            args.run_dir, settings.ais_steps[0], settings.samples, settings.split, num_images=settings.images, start=settings.ais_start,
            **common, **chosen,
        )
        print(lines.ais_line(row) + checkpoint_words(row, settings.checkpoint))
    else:
        warn_if_bf16_is_slow_here(settings.precision, args.device)
        row = evaluate_run(
            args.run_dir, settings.samples, settings.split, num_images=settings.images, precision=settings.precision, **common, **chosen
        )
        print(lines.bound_line(row) + checkpoint_words(row, settings.checkpoint))
    return 0


def checkpoint_words(row: dict, chosen: str | None) -> str:
    """Which checkpoint a printed evaluation is of: the best (e.g. '; checkpoint: best on valid L_1000'),
    or the last where ``--checkpoint last`` chose it (said of any other run's rows without words)."""
    if row["checkpoint"] == "best":
        return f"; checkpoint: best on {row['selected_on']}"
    return "; checkpoint: last" if chosen == "last" else ""


def _run_seeds(args: argparse.Namespace, settings, common: dict) -> int:
    """L_k of every seed's run under a multi-seed parent, and the summary across seeds."""
    from vaelab.evaluation.across_seeds import summary_file
    from vaelab.evaluation.evaluate import evaluate_seeds

    if settings.exact or settings.bdmc is not None or settings.annealed or settings.gaps:
        raise ConfigError(f"{args.run_dir}: a multi-seed parent is evaluated by L_k alone; give one seed's run (seed-<s>/) for AIS, BDMC, exact or gaps")
    warn_if_bf16_is_slow_here(settings.precision, args.device)
    print("\n".join(evaluate_seeds(args.run_dir, settings.samples, settings.split, num_images=settings.images, precision=settings.precision, **common)))
    print(f"written to {args.run_dir / summary_file(settings.split, settings.samples)}")
    return 0


COMMANDS = (
    Command(
        "evaluate",
        "estimate L_k, or log p(x) by AIS, of a trained run",
        "Estimate L_k (with the Pareto k-hat of each image's weights), or log p(x) by annealed importance sampling, "
        "of a run's checkpoint (the best on the valid split where it was trained with --select-on, else the last; "
        "--checkpoint chooses), or the BDMC sandwich on simulated images; prints mean and standard error, appends "
        "them to the run's metrics and writes the per-image values beside them (bounds-*.npz).",
        add_arguments,
        run,
        "nothing was written (evaluation has nothing to resume: run it again)",
    ),
)
