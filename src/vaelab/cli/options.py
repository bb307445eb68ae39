"""Options from data: one command-line option per field of a settings dataclass (the experiment
config's, evaluate's), typed and checked by the field's :class:`~vaelab.config.Kind`, with its help
and default; the options every command shares; and a config built back from the parsed options.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vaelab.config import POSITIVE_INT, DataConfig, ExperimentConfig, Kind, ModelConfig, TrainConfig
from vaelab.errors import ConfigError


def argument_type(kind: Kind):
    """An argparse type for a field's kind: parse the text, then check it as the dataclass would."""

    def parse(text: str):
        try:
            value = kind.parse(text)
        except ValueError:
            value = None
        if value is None or not kind.valid(value):
            raise argparse.ArgumentTypeError(f"must be {kind.description} (got {text!r})")
        return value

    return parse


positive_int = argument_type(POSITIVE_INT)


def flag_of(spec: dataclasses.Field) -> str:
    """The command-line flag of a field: its metadata's, else ``--field-name``."""
    return spec.metadata["flag"] or "--" + spec.name.replace("_", "-")


def _shown(spec: dataclasses.Field) -> str | None:
    """The '(default: ...)' text of a field's help: its metadata's ``shown`` where set ('' or
    absent: the default itself; None: the help states it)."""
    shown = spec.metadata.get("shown", "")
    if shown != "":
        return shown
    default = spec.default
    return "none" if default is None else ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


def add_field_options(
    parser: argparse.ArgumentParser, fields: Iterable[dataclasses.Field], choices: Mapping[str, Sequence[str]] | None = None
) -> None:
    """One option per field with a kind, defaulting to None so that the dataclass supplies the
    default (and an option given is told from one left out). ``choices``: the names a field takes
    that only a registry knows (e.g. the algorithms)."""
    choices = choices or {}
    for spec in fields:
        kind: Kind = spec.metadata["kind"]
        shown = _shown(spec)
        keywords: dict[str, Any] = {"help": spec.metadata["help"] + ("" if shown is None else f" (default: {shown})")}
        if isinstance(spec.default, bool):
            keywords["action"] = "store_true"
        elif kind.choices or spec.name in choices:
            keywords["choices"] = kind.choices or choices[spec.name]
        else:
            keywords.update(type=argument_type(kind), metavar=spec.metadata.get("metavar"))
        parser.add_argument(flag_of(spec), dest=spec.name, default=None, **keywords)


def settings_from(args: argparse.Namespace, cls: type):
    """An instance of the settings dataclass ``cls`` with the options given on the command line
    (the others at their defaults); the dataclass checks it."""
    return cls(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(cls) if getattr(args, spec.name, None) is not None})


_SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), (None, ExperimentConfig))


def experiment_fields():
    """(section or None for the top level, dataclass field) for every config field that is an option."""
    for section, cls in _SECTIONS:
        for spec in dataclasses.fields(cls):
            if "kind" in spec.metadata:
                yield section, spec


def add_experiment_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One option per config field, with the field's kind, help and default (as recorded in config.json)."""
    from vaelab.objectives import OBJECTIVES

    # --dataset takes a name or a path: load_dataset answers an unknown one in one line
    fields = [spec for _, spec in experiment_fields() if flag_of(spec) not in exclude]
    add_field_options(parser, fields, {"algorithm": tuple(OBJECTIVES)})
    parser.add_argument("--config", type=Path, help="JSON config file to start from; options given here override it")


def given_options(args: argparse.Namespace) -> list[str]:
    """The config fields set explicitly on the command line."""
    return [spec.name for _, spec in experiment_fields() if getattr(args, spec.name, None) is not None]


def experiment_config(args: argparse.Namespace, algorithm: str | None = None) -> ExperimentConfig:
    """The config of ``--config`` (or the defaults) with every option given on the command line
    applied, and ``algorithm`` (when given) as ``train.algorithm``."""
    base = ExperimentConfig.load(args.config) if getattr(args, "config", None) else ExperimentConfig()
    updates: dict[str | None, dict] = {"data": {}, "model": {}, "train": {} if algorithm is None else {"algorithm": algorithm}, None: {}}
    for section, spec in experiment_fields():
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


def refuse_unread_options(args: argparse.Namespace, algorithms: Sequence[str]) -> None:
    """Refuse, in one line, an option given on the command line that none of ``algorithms`` reads
    (e.g. ``--groups`` with ``--algorithm iwae``): it would silently do nothing. The rule is the
    objective registry's; whether the config can train is the library's to check
    (:func:`vaelab.preflight.check_experiment`)."""
    from vaelab.objectives.registry import readers, unread_options

    flags = {spec.name: flag_of(spec) for _, spec in experiment_fields()}
    for option in unread_options(given_options(args), algorithms):
        raise ConfigError(f"{flags[option]} applies to {' and '.join(readers(option))} only, not to {', '.join(algorithms)}")


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="folder holding the datasets (default: $VAELAB_DATA, else the user cache)")


def add_common(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --no-progress, --device and --threads: the options of every command that computes."""
    add_data_dir(parser)
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress bars (the plan and every evaluation line still print; bars are drawn on a terminal only)",
    )
    parser.add_argument("--device", default="auto", help="auto (a CUDA device if there is one, else the CPU), cpu, cuda or cuda:<index> (default: auto)")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads of this process (default: PyTorch's, one per core); on a shared machine 1 per process is often fastest",
    )


def add_trust_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code", action="store_true",
        help="run the user networks (encoder/decoder modules) that a saved config or run names: they are imported, so their "
             "code runs. A network given by --encoder/--decoder on the command line (train, compare) is your own and needs no "
             "consent; the other of the pair, named by the file, still does",
    )


def check_trust(args: argparse.Namespace, config: ExperimentConfig) -> None:
    """Networks named by a config file (--config, or the run's own on --resume) run only with
    --trust-code; named on the command line, they are the user's own. Checked per network: an
    --encoder of one's own does not vouch for the file's decoder."""
    if getattr(args, "config", None):
        from vaelab.builders import require_trust

        own = [field for field in ("encoder", "decoder") if getattr(args, field, None) is not None]
        require_trust(config, args.config, args.trust_code, own)


def add_jobs(parser: argparse.ArgumentParser, what: str) -> None:
    """--jobs: how many of ``what`` (e.g. 'algorithms') train at once on the CPU."""
    parser.add_argument(
        "--jobs", type=positive_int,
        help=f"{what} trained at once on the CPU, one process each with --threads threads (default: one per {what[:-1]} up to "
             "the CPUs, which they share out; 1: one after the other in this process, as on a GPU)",
    )


def _seeds(text: str) -> tuple[int, ...]:
    from vaelab.evaluation.across_seeds import parse_seeds

    try:
        return parse_seeds(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--seeds ")) from None


def add_seeds(parser: argparse.ArgumentParser, layout: str) -> None:
    """--seeds: one complete run per seed, in ``layout`` (e.g. 'OUT/seed-<s>/')."""
    parser.add_argument(
        "--seeds", type=_seeds, metavar="N|S,S,...",
        help=f"one run per seed, everything else alike: N (seeds 0..N-1) or a comma-separated list of seeds; each run in {layout}, "
             "OUT/seeds.json records them, and evaluate and report take OUT (default: one run with --seed)",
    )


def refuse_seed_with_seeds(args: argparse.Namespace) -> None:
    """--seeds sets every run's seed: a --seed beside it would be silently ignored."""
    if getattr(args, "seeds", None) is not None and getattr(args, "seed", None) is not None:
        raise ConfigError("--seeds sets each run's seed: leave --seed out")
