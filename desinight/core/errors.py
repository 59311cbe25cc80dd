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


class DatabaseError(DesinightError):
    """The database cannot be reached, opened or written (URL passwords never shown)."""

    exit_code = 6


class FilesystemError(DesinightError):
    """A file or directory desinight needs cannot be read or written (permissions, full disk)."""

    exit_code = 7


#: The exit codes every command uses (docs/operator-guide.md "Exit codes" lists the same).
EXIT_CODES = {
    0: "success",
    1: "the operation failed (e.g. jobs failed, a command refused)",
    2: "configuration or usage error",
    3: "not found (night, exposure, job)",
    4: "batch system error (sbatch/sacct/squeue/scancel)",
    5: ("the night had problems: jobs did not complete, or exposures were quarantined, "
        "rejected or cannot complete (the rest was done)"),
    6: "database error",
    7: "filesystem error (permission, full disk, missing directory)",
    130: "interrupted (Ctrl-C)",
}
class JobsFailed(DesinightError):
    """`ingest --wait` / `demo` ran to the end but jobs did not complete: scripts see it."""

    exit_code = 5
