"""``vaelab`` and ``python -m vaelab``: the command line, with a Ctrl-C that comes before it has
loaded (while Python imports it and torch) answered in one line like any other."""

import signal
import sys


def main() -> int:
    try:
        from vaelab.cli import main as command_line

        return command_line()
    except KeyboardInterrupt:  # an interrupt the command line did not answer itself: it was still loading
        print("vaelab: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT  # as the command line answers a Ctrl-C (130)


if __name__ == "__main__":  # not when a spawned job process imports it (vaelab.jobs)
    sys.exit(main())
