"""``vaelab`` and ``python -m vaelab``: the command line, with a Ctrl-C that comes before it has
loaded (while Python imports it and torch) answered in one line like any other."""

import os
import signal
import sys


def main() -> int:
    try:
        from vaelab.cli import main as command_line

        code = command_line()
    except KeyboardInterrupt:  # an interrupt the command line did not answer itself: it was still loading
        print("vaelab: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT  # as the command line answers a Ctrl-C (130)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_torchrun_process(code)
    return code


def _leave_torchrun_process(code: int | None) -> None:
    """End a torchrun process now that its command is done and its files are closed, without the
    interpreter's finalisation: there, gloo's threads of torch 2.13 still held after
    ``destroy_process_group`` abort the process ("terminate called without an active exception",
    SIGABRT) in about 1 run of 10 on 2 CPU cores, and torchrun reports a finished run as failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # not when a spawned job process imports it (vaelab.jobs)
    sys.exit(main())
