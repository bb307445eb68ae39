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
