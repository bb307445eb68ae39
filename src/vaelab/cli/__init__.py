"""The ``vaelab`` command line: the entry point, the parser and the registry of commands.

Each command is a :class:`~vaelab.cli.command.Command` in its own module: ``train``, ``evaluate``
and ``datasets`` here, each study's in ``vaelab/studies/<study>/command.py`` (found without being
named, so a new study is one folder); :func:`register_command` adds one at run time. A command
parses, calls the library function the tests call, and prints. Expected failures
(:class:`~vaelab.errors.VaelabError`, bad options) print one line to stderr and exit non-zero
without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import pkgutil
import signal
import sys
import threading
from collections.abc import Sequence

import vaelab.studies
from vaelab import __version__
from vaelab.cli.command import Command, set_threads
from vaelab.errors import Interrupted, VaelabError
from vaelab.threads import configure_threads

EXIT_ERROR = 1
EXIT_USAGE = 2

BUILT_IN = ("vaelab.cli.train", "vaelab.cli.evaluate", "vaelab.cli.datasets")


def _command_modules() -> list[str]:
    """The modules holding commands: the built-in ones, then ``command`` of every study package."""
    studies = [f"{vaelab.studies.__name__}.{info.name}.command" for info in pkgutil.iter_modules(vaelab.studies.__path__) if info.ispkg]
    return [*BUILT_IN, *(name for name in studies if importlib.util.find_spec(name) is not None)]


@functools.cache
def commands() -> dict[str, Command]:
    """Every command by name, from each command module's ``COMMANDS`` (importing them loads no
    torch: they import what they run when they run), and those registered since."""
    found = {}
    for module in _command_modules():
        for command in importlib.import_module(module).COMMANDS:
            found[command.name] = command
    return found


def register_command(command: Command) -> None:
    """Add ``command`` to ``vaelab`` (a study living outside the package, a test's toy command).

    Raises:
        ValueError: another command already has its name.
    """
    registered = commands()
    if registered.get(command.name, command) is not command:
        raise ValueError(f"vaelab already has a command {command.name!r}")
    registered[command.name] = command


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, and which takes no abbreviated options
    (``compare --algorithm`` must not pass for ``--algorithms``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand's name and help, with the arguments of ``command`` alone
    (building a subcommand's options imports the registries, and with them torch: ``vaelab --help``
    and ``vaelab --version`` stay light)."""
    parser = _Parser(prog="vaelab", description="Deep latent-variable models: wake-sleep, AEVB, IWAE and more, measured with the importance-weighted bound L_k.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, spec in commands().items():
        subparser = subparsers.add_parser(name, help=spec.help, description=spec.description)
        if name == command:
            spec.add_arguments(subparser)
    return parser


def _terminate(signum, frame):
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    configure_threads()  # before anything loads torch: OpenMP threads that wait sleep rather than spin
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and argv[0] in commands() else None)
    args = parser.parse_args(argv)
    command = commands()[args.command]
    # SIGTERM (Slurm, Kubernetes, `kill`) stops like Ctrl-C: one line, files intact; training
    # installs its own handler that first finishes the epoch's checkpoint.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        from vaelab.machine import flushing_subnormals  # loads torch on entry: after configure_threads

        # from before the first parallel op starts PyTorch's threads, so that they inherit it
        with flushing_subnormals():
            if getattr(args, "threads", None):
                set_threads(args.threads)
            return command.run(args)
    except VaelabError as error:
        print(f"vaelab {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"vaelab {args.command}: {what}; {command.after_interrupt}", file=sys.stderr)
        return 128 + signum
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["Command", "build_parser", "commands", "main", "register_command"]
