"""The one door for state changes: every write of ``job.state`` and ``exposure.status``.

``transition()`` checks the move against core/states.py's tables, writes it with
compare-and-set SQL (``UPDATE ... WHERE id IN (...) AND state = <the state just read>``, so a
move computed from a stale read cannot overwrite a newer one committed meanwhile, also under
PostgreSQL READ COMMITTED), reports what did not move, and appends one ``state_event`` row per
move (who, why, from where, on which host, when). The ORM paths (orchestrate, retry, rerun,
db/repo) and the bulk campaign path (db/bulk) all come through here; tests/test_one_door.py
reads the code and fails if anything else writes a state.

Creating a row in its first state (a job planned or held, an exposure ingested or
quarantined) is not a move and writes no event; every later change is.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from .core.errors import DesinightError
from .core.states import ExposureStatus, JobState, exposure_predecessors, predecessors
from .db.models import Attempt, Exposure, Job, JobExposure, StateEvent, utcnow

#: ids per statement: keeps each IN list under SQLite's bound-parameter limit at campaign scale
CHUNK = 5_000

#: moves a monitoring hook cares about (a job ended badly)
ALERT_STATES = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY,
                          JobState.NODE_FAIL, JobState.DEP_FAILED, JobState.UNKNOWN})


@dataclass(frozen=True)
class Move:
    """One move made: enough for an alert without another query."""

    kind: str                   # "job" or "exposure"
    id: int                     # job id or exposure row id
    key: str                    # job key, or the EXPID as text
    job_kind: str | None        # the job's kind (arc, science, ...); None for an exposure
    night: int
    expids: tuple[int, ...]
    attempt: int | None         # the job's latest attempt number when it moved
    old: str
    new: str
    reason: str | None
    actor: str
    #: the log of that attempt, for moves into ALERT_STATES (an alert names where to look)
    log: str | None = None

    @property
    def is_alert(self) -> bool:
        return self.kind == "job" and JobState(self.new) in ALERT_STATES


@dataclass
class Outcome:
    moved: list[Move] = field(default_factory=list)
    #: id -> why it did not move: the state it is in (not a legal predecessor, or not the one
    #: the caller expected), "changed meanwhile" (lost the compare-and-set) or "missing"
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def moved_ids(self) -> set[int]:
        return {m.id for m in self.moved}


#: called with every move after its event row is written, inside the caller's transaction
#: (a hook that must not fire for a rolled-back move should use the returned moves instead)
LISTENERS: list[Callable[[Move], None]] = []


def daemon_actor() -> str:
    return "daemon"


def operator_actor() -> str:
    """``operator:LOGIN``: the person at the terminal, for the history."""
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name (container without passwd entry)
        return "operator:unknown"


def campaign_actor(name: str) -> str:
    return f"campaign:{name}"


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


def transition(s: Session, ids: Iterable[int], to: JobState | ExposureStatus, reason: str | None
               | Mapping[int, str | None], actor: str, *, expect: Iterable[str] | None = None,
               set_reason: bool = False, values: Mapping[str, Any] | None = None,
               attempts: Mapping[int, int] | None = None,
               on_move: Callable[[Move], None] | None = None,
               now: datetime | None = None) -> Outcome:
    """Move the jobs (``to`` a JobState) or exposures (``to`` an ExposureStatus) with these
    row ids to ``to``.

    reason: why (one text, or one per id); written to the event and, with ``set_reason``, to
    ``job.reason``. expect: the states the caller read and decided on; a row in any other
    state (an operator's move committed meanwhile) is left alone. values: more columns set
    in the same UPDATE (``hold_reason``, ``quarantine_reason``...). attempts: job id ->
    attempt number for the event (default: the job's latest attempt). Rows already in ``to``
    are refused, not re-recorded."""
    is_job = isinstance(to, JobState)
    if not is_job and not isinstance(to, ExposureStatus):
        raise DesinightError(f"transition to {to!r}: not a job state or exposure status")
    table = Job if is_job else Exposure
    col = Job.state if is_job else Exposure.status
    legal = {st.value for st in (predecessors(to) if is_job else exposure_predecessors(to))}
    if expect is not None:
        legal &= {str(getattr(e, "value", e)) for e in expect}
    reasons = reason if isinstance(reason, Mapping) else None
    now = now or utcnow()
    host = socket.gethostname()
    out = Outcome()
    for chunk in _chunks(list(dict.fromkeys(ids))):
        if is_job:
            rows = s.execute(select(Job.id, Job.state, Job.production_id, Job.key, Job.kind,
                                    Job.night).where(Job.id.in_(chunk))).all()
        else:
            rows = s.execute(select(Exposure.id, Exposure.status, Exposure.production_id,
                                    Exposure.expid, Exposure.obstype, Exposure.night)
                             .where(Exposure.id.in_(chunk))).all()
        seen = {r[0]: r for r in rows}
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i in chunk:
            r = seen.get(i)
            if r is None:
                out.refused[i] = "missing"
            elif r[1] not in legal:
                out.refused[i] = r[1]
            else:
                why = reasons.get(i) if reasons is not None else reason
                groups.setdefault((r[1], why), []).append(i)
        moved: list[tuple[int, str, str | None]] = []
        for (old, why), group in groups.items():
            vals: dict[str, Any] = {col.key: to.value, **(values or {})}
            if set_reason:
                vals["reason"] = why
            got = set(s.scalars(update(table).where(table.id.in_(group), col == old)
                                .values(**vals).returning(table.id)
                                .execution_options(synchronize_session=False)))
            for i in group:
                if i not in got:
                    out.refused[i] = "changed meanwhile"
                    continue
                moved.append((i, old, why))
                obj = s.identity_map.get(identity_key(table, i))
                if obj is not None:   # keep loaded objects true to the row, without a reload
                    for k, v in vals.items():
                        set_committed_value(obj, k, v)
        if not moved:
            continue
        mids = [i for i, _, _ in moved]
        expids: dict[int, list[int]] = {}
        numbers: dict[int, int] = {}
        if is_job:
            for jid, e in s.execute(select(JobExposure.job_id, JobExposure.expid)
                                    .where(JobExposure.job_id.in_(mids))):
                expids.setdefault(jid, []).append(e)
            numbers = dict(s.execute(select(Attempt.job_id, func.max(Attempt.number))
                                     .where(Attempt.job_id.in_(mids)).group_by(Attempt.job_id)).all())
            numbers.update(attempts or {})
        logs: dict[int, str | None] = {}
        if is_job and to in ALERT_STATES:   # only failures carry their log: cheap at scale
            for jid, number, path in s.execute(select(Attempt.job_id, Attempt.number,
                                                      Attempt.log_path)
                                               .where(Attempt.job_id.in_(mids))):
                if number == numbers.get(jid):
                    logs[jid] = path
        events = []
        for i, old, why in moved:
            r = seen[i]
            m = Move("job" if is_job else "exposure", i, r[3] if is_job else str(r[3]),
                     r[4] if is_job else None, r[5],
                     tuple(sorted(expids.get(i, ()))) if is_job else (r[3],),
                     numbers.get(i), old, to.value, why, actor, logs.get(i))
            out.moved.append(m)
            events.append({"production_id": r[2], "job_id": i if is_job else None,
                           "exposure_id": None if is_job else i, "attempt": m.attempt,
                           "from_state": old, "to_state": to.value, "reason": why,
                           "actor": actor, "host": host, "at": now})
        # Core executemany on the table: the ORM's bulk path costs ~4x as much per row here;
        # a campaign's thousands go by COPY on PostgreSQL (one INSERT per row there otherwise).
        if len(events) >= 1000:
            from .db.copyrows import insert_rows
            insert_rows(s, StateEvent, events)
        else:
            s.execute(insert(StateEvent.__table__), events)
    for m in out.moved:
        if on_move is not None:
            on_move(m)
        for listener in LISTENERS:
            listener(m)
    return out


def move_job(s: Session, job: Job, to: JobState, reason: str | None, actor: str, *,
             expect: Iterable[str] | None = None, set_reason: bool = False,
             values: Mapping[str, Any] | None = None, attempt: int | None = None,
             on_move: Callable[[Move], None] | None = None) -> bool:
    """One job (an ORM object): True if it moved. ``expect`` defaults to the state the
    object holds, i.e. the state this session read (the compare-and-set's point)."""
    out = transition(s, [job.id], to, reason, actor,
                     expect=[job.state] if expect is None else expect, set_reason=set_reason,
                     values=values, attempts={job.id: attempt} if attempt else None,
                     on_move=on_move)
    return bool(out.moved)

