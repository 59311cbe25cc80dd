"""Job and exposure states: one enum each and one transition table.

``advance()`` is the only way a job's state changes, so an illegal move (say a completed
job going back to pending because sacct lagged) is refused instead of silently recorded.
"""

from __future__ import annotations

from enum import Enum

from .errors import InvalidTransition


class JobState(str, Enum):
    PLANNED = "planned"          # in the DB, not yet handed to a backend
    HELD = "held"                # cannot be submitted yet (e.g. missing calibrations); see hold_reason
    SUBMITTED = "submitted"      # outbox intent recorded / sbatch called; backend id may be pending
    PENDING = "pending"          # queued in the backend
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    DEP_FAILED = "dep_failed"    # an upstream job failed; this one never ran
    UNKNOWN = "unknown"          # the backend lost track (purged, no exit file)

    def __str__(self) -> str:  # so f-strings and tables show "failed", not "JobState.FAILED"
        return self.value


ACTIVE = frozenset({JobState.SUBMITTED, JobState.PENDING, JobState.RUNNING})
#: states a resubmission may retry
RETRYABLE = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY,
                       JobState.NODE_FAIL, JobState.DEP_FAILED, JobState.CANCELLED,
                       JobState.UNKNOWN})
#: states after which the job will not change without a human (or resubmit)
FINAL = frozenset({JobState.COMPLETED}) | RETRYABLE
#: a dependent of a job in one of these states can never run
BROKEN = RETRYABLE

_ENDS = FINAL
_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PLANNED: frozenset({JobState.HELD, JobState.SUBMITTED, JobState.DEP_FAILED,
                                 JobState.CANCELLED}),
    JobState.HELD: frozenset({JobState.PLANNED, JobState.SUBMITTED, JobState.DEP_FAILED,
                              JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset({JobState.PENDING, JobState.RUNNING}) | _ENDS,
    JobState.PENDING: frozenset({JobState.RUNNING}) | _ENDS,
    JobState.RUNNING: frozenset({JobState.PENDING}) | _ENDS,  # PENDING again: requeued
    # A new attempt (resubmit) moves a final job back to planned/submitted.
    **{s: frozenset({JobState.PLANNED, JobState.SUBMITTED}) for s in RETRYABLE},
    # A completed job only changes when an operator explicitly reruns it.
    JobState.COMPLETED: frozenset({JobState.PLANNED}),
}
# UNKNOWN may still learn its real end (a late exit file, sacct catching up).
_TRANSITIONS[JobState.UNKNOWN] = _TRANSITIONS[JobState.UNKNOWN] | _ENDS | ACTIVE


def can_advance(old: JobState, new: JobState) -> bool:
    return old == new or new in _TRANSITIONS[old]


def advance(old: JobState | str, new: JobState | str) -> JobState:
    """Return ``new`` if moving from ``old`` is legal, else raise :class:`InvalidTransition`."""
    old, new = JobState(old), JobState(new)
    if not can_advance(old, new):
        raise InvalidTransition(f"job state cannot go from {old} to {new}")
    return new


class ExposureStatus(str, Enum):
    INGESTED = "ingested"        # in the DB, waiting to be planned
    PLANNED = "planned"          # its jobs exist
    QUARANTINED = "quarantined"  # bad input; see quarantine_reason; never planned

    def __str__(self) -> str:
        return self.value


class ObsType(str, Enum):
    ZERO = "ZERO"
    DARK = "DARK"
    ARC = "ARC"
    FLAT = "FLAT"
    SCIENCE = "SCIENCE"

    def __str__(self) -> str:
        return self.value
