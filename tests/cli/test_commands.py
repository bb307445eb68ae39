"""The command registry: commands found without being named (a new study is one folder), added at
run time, evaluate's options generated from its settings, and a config checked once per command."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path

import pytest
from conftest import run_main

import vaelab.studies
from vaelab.cli import Command, build_parser, commands, main, register_command
from vaelab.evaluation.settings import AIS_DEFAULT_CHAINS, AIS_DEFAULT_STEPS, LK_DEFAULT_K, EvaluateSettings
from vaelab.estimators.ais import AISSettings

pytestmark = pytest.mark.e2e


def _add_toy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--times", type=int, default=1)


def _run_toy(args: argparse.Namespace) -> int:
    if args.times < 0:
        from vaelab.errors import ConfigError

        raise ConfigError("--times must not be negative")
    print("toy " * args.times)
    return 3


TOY = Command("toy", "a toy study", "A study that prints its name.", _add_toy_arguments, _run_toy, "nothing was written")


@pytest.fixture
def toy_command():
    """``vaelab toy``, registered for one test and removed after it."""
    register_command(TOY)
    yield TOY
    del commands()[TOY.name]


def test_a_command_registered_at_run_time_runs_like_the_built_in_ones(toy_command, capsys):
    assert main(["toy", "--times", "2"]) == 3
    assert capsys.readouterr().out == "toy toy \n"
    assert "a toy study" in build_parser().format_help()
    assert main(["toy", "--times", "-1"]) == 1  # an expected failure: one line, no traceback
    assert capsys.readouterr().err == "vaelab toy: error: --times must not be negative\n"
    status, err = run_main(["toy", "--times", "x"], capsys)
    assert status == 2 and "invalid int value" in err


def test_a_name_is_registered_once(toy_command):
    register_command(toy_command)  # the same command again: nothing changes
    with pytest.raises(ValueError, match="already has a command 'toy'"):
        register_command(dataclasses.replace(toy_command, help="another"))
    with pytest.raises(ValueError, match="already has a command 'train'"):
        register_command(dataclasses.replace(toy_command, name="train"))


def test_each_study_brings_its_own_commands():
    found = commands()
    assert list(found)[:3] == ["train", "evaluate", "datasets"]
    owners = {name: command.run.__module__ for name, command in found.items()}
    assert owners["compare"] == owners["report"] == "vaelab.studies.compare.command"
    assert owners["bounds"] == "vaelab.studies.bounds.command" and owners["reproduce"] == "vaelab.studies.reproduce.command"


def test_only_a_studys_command_module_knows_the_command_line():
    """A study's run, figures and page are library code that the CLI calls: they import nothing of
    it, not even inside a function (its ``command`` module is the CLI's part of the study)."""
    for path in Path(vaelab.studies.__file__).parent.rglob("*.py"):
        if path.name == "command.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("vaelab.cli"), f"{path} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("vaelab.cli") for alias in node.names), path


@pytest.fixture
def new_study_folder(tmp_path, monkeypatch):
    """A study package ``vaelab.studies.tiny`` in a folder of its own, with a ``command`` module."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "__init__.py").write_text('"""A study added as one folder."""\n')
    (folder / "command.py").write_text(
        "from vaelab.cli.command import Command\n\n"
        "def run(args):\n    print('tiny ran on', args.out)\n    return 0\n\n"
        "COMMANDS = (Command('tiny', 'a tiny study', 'A tiny study.', lambda parser: parser.add_argument('--out'), run, 'nothing'),)\n"
    )
    monkeypatch.setattr(vaelab.studies, "__path__", [*vaelab.studies.__path__, str(tmp_path)])
    commands.cache_clear()
    yield
    commands.cache_clear()
    for name in ("vaelab.studies.tiny", "vaelab.studies.tiny.command"):
        sys.modules.pop(name, None)


def test_a_new_study_is_one_folder(new_study_folder, capsys):
    assert main(["tiny", "--out", "here"]) == 0
    assert capsys.readouterr().out == "tiny ran on here\n"


def test_evaluate_options_are_its_settings_fields(capsys, monkeypatch):
    from vaelab.cli.options import settings_from

    monkeypatch.setenv("COLUMNS", "200")  # the help's lines unwrapped

    parser = build_parser("evaluate")
    assert settings_from(parser.parse_args(["evaluate", "run"]), EvaluateSettings) == EvaluateSettings()
    given = ["--k", "3", "--estimator", "ais", "--steps", "5", "--ais-start", "prior", "--split", "valid", "--images", "4", "--exact", "--gaps", "--gap-steps", "7", "--gap-lr", "0.5"]
    settings = settings_from(parser.parse_args(["evaluate", "run", *given, "--bdmc", "2", "--precision", "bf16", "--checkpoint", "last"]), EvaluateSettings)
    assert dataclasses.asdict(settings) == {
        "k": 3, "estimator": "ais", "steps": (5,), "bdmc": 2, "ais_start": "prior", "split": "valid", "exact": True, "images": 4,
        "precision": "bf16", "checkpoint": "last", "gaps": True, "gap_steps": 7, "gap_lr": 0.5,
    }  # one option per field (--exact reads none of the others, so they pass)
    # the defaults are the estimators', stated once
    assert (AIS_DEFAULT_STEPS, AIS_DEFAULT_CHAINS) == (AISSettings().steps, AISSettings().chains)
    assert EvaluateSettings().samples == LK_DEFAULT_K and EvaluateSettings(estimator="ais").samples == AIS_DEFAULT_CHAINS
    assert EvaluateSettings(bdmc=5, k=3).samples == 3 and EvaluateSettings(bdmc=5).ais_steps == (AIS_DEFAULT_STEPS,)
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert f"(default: {AIS_DEFAULT_STEPS})" in help_text and "(default: all)" in help_text and "--bdmc N" in help_text


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"steps": (5,)}, "--steps and --ais-start apply to --estimator ais and --bdmc only"),
        ({"ais_start": "prior"}, "--steps and --ais-start apply to --estimator ais and --bdmc only"),
        ({"estimator": "ais", "precision": "bf16"}, "--precision applies to L_k only"),
        ({"estimator": "ais", "steps": (1, 2)}, "takes one --steps T"),
        ({"bdmc": 5, "images": 3}, "--images does not apply"),
        ({"k": 0}, "k must be a positive integer"),
        ({"steps": (-1,), "estimator": "ais"}, "steps must be non-negative integers"),
    ],
)
def test_evaluate_settings_refuse_what_the_estimator_does_not_read(settings, message):
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        EvaluateSettings(**settings)


def test_evaluate_refuses_its_options_before_reading_the_run(tmp_path, capsys):
    status, err = run_main(["evaluate", str(tmp_path / "nothing"), "--estimator", "ais", "--steps", "1,2"], capsys)
    assert status == 1 and err == "vaelab evaluate: error: --estimator ais takes one --steps T (a list is for --bdmc)\n"
    status, err = run_main(["evaluate", str(tmp_path / "nothing"), "--steps", "1,x"], capsys)
    assert status == 2 and "--steps: must be non-negative integers separated by commas (got '1,x')" in err


def test_train_checks_its_config_once_and_announces_the_plan_after(tmp_path, monkeypatch, capsys):
    from vaelab import preflight

    checks = []
    measure = preflight.available_memory
    monkeypatch.setattr(preflight, "available_memory", lambda: checks.append(1) or measure())
    monkeypatch.setenv("VAELAB_OFFLINE", "1")
    run = tmp_path / "run"
    # progress on (the plan is printed) but no bars: the plan goes to stdout, the bars to stderr
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--eval-k", "2", "--out", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(checks) == 1, "the config is checked once, by train()"
    assert out[0].startswith("aevb on digits: 1 epochs of batch") and out[-1] == f"run written to {run}"
