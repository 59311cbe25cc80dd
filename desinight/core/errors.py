"""The one exception family. The CLI turns these into one clear line and an exit code."""


class DesinightError(Exception):
    """Base class; ``str(err)`` is the one-line message shown to the operator."""

    exit_code = 1


class ConfigError(DesinightError):
    exit_code = 2


class NotFound(DesinightError):
    exit_code = 3


class BadExposure(DesinightError):
    """An exposure that cannot be ingested; the message becomes its quarantine reason."""


class BackendError(DesinightError):
    """The batch system refused or failed a call (sbatch/sacct down, bad reply)."""

    exit_code = 4
