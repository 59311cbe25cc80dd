"""Job and exposure states: one enum each and one transition table each.

``desinight.transitions.transition`` is the only writer of a job's state or an exposure's
status, and it checks these tables (``can_advance``/``predecessors``), so an illegal move (say
a completed job going back to pending because sacct lagged) is refused instead of silently
recorded. ``mermaid()`` renders the tables for docs/architecture.md.
"""

from __future__ import annotations

from enum import Enum


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
    # COMPLETED: adopted, its outputs already exist as recorded (resubmit --adopt)
    JobState.PLANNED: frozenset({JobState.HELD, JobState.SUBMITTED, JobState.DEP_FAILED,
                                 JobState.CANCELLED, JobState.COMPLETED}),
    JobState.HELD: frozenset({JobState.PLANNED, JobState.SUBMITTED, JobState.DEP_FAILED,
                              JobState.CANCELLED}),
    # PLANNED again: the intent never reached the backend ("submission lost", reconcile).
    JobState.SUBMITTED: frozenset({JobState.PENDING, JobState.RUNNING, JobState.PLANNED}) | _ENDS,
    JobState.PENDING: frozenset({JobState.RUNNING}) | _ENDS,
    JobState.RUNNING: frozenset({JobState.PENDING}) | _ENDS,  # PENDING again: requeued
    # A new attempt (resubmit) moves a final job back to planned/submitted.
    **{s: frozenset({JobState.PLANNED, JobState.SUBMITTED}) for s in RETRYABLE},
    # A completed job only changes when an operator explicitly reruns it.
    JobState.COMPLETED: frozenset({JobState.PLANNED}),
}
# UNKNOWN may still learn its real end (a late exit file, sacct catching up).
_TRANSITIONS[JobState.UNKNOWN] = _TRANSITIONS[JobState.UNKNOWN] | _ENDS | ACTIVE
# SLURM is the truth for how an attempt ended: an operator cancel that reached a job which had
# already ended is corrected to that end ("cancel too late: completed").
_TRANSITIONS[JobState.CANCELLED] = _TRANSITIONS[JobState.CANCELLED] | (
    _ENDS - {JobState.CANCELLED, JobState.DEP_FAILED, JobState.UNKNOWN})


def predecessors(new: JobState | str) -> frozenset[JobState]:
    """Every state a job may move to ``new`` from (the compare-and-set's ``WHERE state IN``)."""
    new = JobState(new)
    return frozenset(old for old, nxt in _TRANSITIONS.items() if new in nxt)


def can_advance(old: JobState, new: JobState) -> bool:
    return old == new or new in _TRANSITIONS[old]


class ExposureStatus(str, Enum):
    INGESTED = "ingested"        # in the DB, waiting to be planned
    PLANNED = "planned"          # its jobs exist
    QUARANTINED = "quarantined"  # bad input; see quarantine_reason; never planned

    def __str__(self) -> str:
        return self.value


_EXPOSURE_TRANSITIONS: dict[ExposureStatus, frozenset[ExposureStatus]] = {
    ExposureStatus.INGESTED: frozenset({ExposureStatus.PLANNED, ExposureStatus.QUARANTINED}),
    # The planner may still reject a planned exposure (a duplicate found later).
    ExposureStatus.PLANNED: frozenset({ExposureStatus.QUARANTINED}),
    # A quarantined exposure whose raw file was re-transferred and now reads well.
    ExposureStatus.QUARANTINED: frozenset({ExposureStatus.INGESTED}),
}


def can_move_exposure(old: ExposureStatus | str, new: ExposureStatus | str) -> bool:
    old, new = ExposureStatus(old), ExposureStatus(new)
    return old == new or new in _EXPOSURE_TRANSITIONS[old]


def exposure_predecessors(new: ExposureStatus | str) -> frozenset[ExposureStatus]:
    new = ExposureStatus(new)
    return frozenset(old for old, nxt in _EXPOSURE_TRANSITIONS.items() if new in nxt)


def mermaid() -> str:
    """Both tables as Mermaid state diagrams (docs/architecture.md embeds this text verbatim;
    a test checks the doc against it, so the picture cannot drift from the code)."""
    out = ["```mermaid", "stateDiagram-v2", "    direction LR"]
    out += [f"    {old.value} --> {new.value}" for old in JobState
            for new in sorted(_TRANSITIONS[old], key=list(JobState).index)]
    out += ["```", "", "```mermaid", "stateDiagram-v2", "    direction LR"]
    out += [f"    {old.value} --> {new.value}" for old in ExposureStatus
            for new in sorted(_EXPOSURE_TRANSITIONS[old], key=list(ExposureStatus).index)]
    out.append("```")
    return "\n".join(out) + "\n"


class ObsType(str, Enum):
    ZERO = "ZERO"
    DARK = "DARK"
    ARC = "ARC"
    FLAT = "FLAT"
    SCIENCE = "SCIENCE"

    def __str__(self) -> str:
        return self.value
