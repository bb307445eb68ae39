"""User-facing errors.

Every expected failure (bad data file, bad option, missing dataset, refused resume) raises a
subclass of :class:`VaelabError`. The CLI prints its message as one line and exits non-zero,
without a traceback; anything else is a bug and keeps its traceback.
"""


class VaelabError(Exception):
    """An expected failure whose message is shown to the user as one line."""


class DataError(VaelabError):
    """A dataset file is missing, corrupt, truncated or inconsistent."""


class ConfigError(VaelabError):
    """A configuration value or command-line option is invalid."""


class RunError(VaelabError):
    """A run directory cannot be created, resumed or read."""


class Interrupted(KeyboardInterrupt):
    """A stop asked for by SIGINT or SIGTERM (``signum``); the CLI exits with 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def one_line(error: BaseException, limit: int = 300, typed: bool = False) -> str:
    """``error``'s message as one line of at most ``limit`` characters, the detail of a one-line
    error about a failure raised elsewhere: its first line or, where that line only introduces
    what follows (ends in ':', as PyTorch's "Error(s) in loading state_dict for M:"), the next two
    joined; its type name when it has no message. ``typed``: 'Type: line'."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[1:3]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text[:limit]}" if typed else text[:limit]
