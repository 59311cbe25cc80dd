"""The ``Backend`` protocol every batch system implements, and the values it trades in.

The daemon only ever talks to this protocol, so the local backend (embedded default) and
the SLURM backend are interchangeable and share one contract test suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from ..core.states import JobState


@dataclass(frozen=True)
class Resources:
    """What one job asks of the batch system (per-kind defaults merged with config)."""

    nodes: int = 1
    ntasks: int = 1
    cpus_per_task: int = 1
    time_minutes: int = 30
    mem_mb: int | None = None
    account: str | None = None
    qos: str | None = None
    partition: str | None = None
    constraint: str | None = None
    gres: str | None = None            # e.g. "gpu:4" for GPU kinds
    reservation: str | None = None
    #: nodes this job must not run on (sbatch --exclude): set after a NODE_FAIL (learn.py)
    exclude: str | None = None

    @property
    def cpus(self) -> int:
        return self.ntasks * self.cpus_per_task


@dataclass(frozen=True)
class SubmitRequest:
    """One attempt of one job, ready to hand to a backend."""

    name: str                  # batch job name, e.g. "dn-prod-42-psfnight"
    tag: str                   # production tag put in the comment; one query finds all its jobs
    comment: str               # "<tag>:<job id>:<attempt number>"; used to reconcile lost submissions
    script: Path               # the rendered batch script, already on disk
    attempt_dir: Path          # where the log and exit record of this attempt go
    log: Path                  # stdout+stderr of the job
    depends_on: tuple[str, ...] = ()   # backend ids that must COMPLETE first (afterok)
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class BackendJob:
    """What a backend knows about one of its jobs at poll time."""

    backend_id: str
    state: JobState
    exit_code: int | None = None
    reason: str | None = None       # e.g. "DependencyNeverSatisfied", "CANCELLED by 0"
    start: datetime | None = None
    end: datetime | None = None
    node: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can and cannot do, declared by it, so callers never test its name."""

    #: its view may lag the truth (sacct catching up after sbatch): an attempt it does not
    #: know yet is not lost, and one it forgot may still have ended well; wait before judging
    can_lag: bool = True


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities
    #: why the last poll answered only in part (e.g. sacct down, squeue alone); None: fully
    poll_warning: str | None

    def submit(self, req: SubmitRequest) -> str:
        """Submit; return the backend id. Raises ``BackendError`` if the system refused."""

    def poll(self, ids: Sequence[str]) -> dict[str, BackendJob]:
        """State of the given ids, in as few system calls as possible. Unknown ids are absent."""

    def cancel(self, ids: Sequence[str]) -> None:
        """Cancel queued or running jobs; ids already ended are ignored."""

    def count_user_jobs(self) -> int:
        """All of this user's jobs queued or running in the system (every production and
        submitter), in one call: the queue ceiling ``desinight.max_user_jobs``."""

    def find(self, tag: str) -> dict[str, str]:
        """Jobs of this production still known to the system: {comment: backend id}.

        Used after a crash to find submissions whose id was never recorded (outbox reconcile).
        """
