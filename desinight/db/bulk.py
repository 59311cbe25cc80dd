"""Bulk inserts for campaign-sized writes: ``COPY`` on PostgreSQL, Core ``INSERT`` with
executemany on SQLite, no ORM objects.

One path for a night's plan (``repo.save_plan``) and a campaign (~100,000 jobs, ~250,000
edges) alike: a few statements per table (jobs, then ``SELECT key, id`` to learn the new ids,
then job-exposure links and edges). Same session, same transaction as the caller's. State
moves (exposures planned or quarantined) go through ``desinight.transitions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from ..core.errors import NotFound
from ..core.planner import PlannedJob
from ..core.states import ExposureStatus, JobState
from .models import Exposure, Job, JobEdge, JobExposure, Night, Production, utcnow

from .copyrows import insert_rows as _insert_rows

# The one writer of states sits above db/ (it needs only db.models, so no import cycle).
from ..transitions import transition  # noqa: E402

#: rows per executemany batch: bounds the memory of one statement's parameter list
CHUNK = 20_000


def _chunks(rows: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(rows), n):
        yield rows[i:i + n]


def insert_nights(s: Session, prod: Production, nights: Iterable[int], closed: bool = True) -> int:
    """Add Night rows not there yet; returns how many were added."""
    have = set(s.scalars(select(Night.night).where(Night.production_id == prod.id)))
    now = utcnow()
    rows = [{"production_id": prod.id, "night": n, "closed": closed, "created_at": now}
            for n in sorted(set(nights) - have)]
    for chunk in _chunks(rows):
        s.execute(insert(Night), list(chunk))
    return len(rows)


def insert_exposures(s: Session, prod: Production, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert exposure rows (dicts of Exposure columns, without id/production_id)."""
    now = utcnow()
    full = [{"arrived_at": None, "exptime": None, "program": None, "seqnum": None,
             "seqtot": None, "quarantine_reason": None, "tileid": None, "cameras": "",
             "bad_cameras": "", **r, "production_id": prod.id, "ingested_at": now} for r in rows]
    _insert_rows(s, Exposure, full)
    return len(full)


def save_jobs(s: Session, prod: Production, jobs: Sequence[PlannedJob],
              resources: Mapping[str, Mapping[str, Any]], actor: str,
              campaign: str | None = None) -> int:
    """Insert planned jobs with their exposure links and edges; returns the number of jobs.

    The one path by which jobs enter the database (a night's plan through
    ``repo.save_plan``, a campaign's through ``campaign.enqueue``). Parents may be new (in
    ``jobs``) or already in the database (any night). Exposures covered by a new job move from
    ingested to planned (through ``transitions``, with an event each)."""
    if not jobs:
        return 0
    now = utcnow()
    new_ids = _allocate_ids(s, len(jobs))
    rows = [{**({"id": new_ids[n]} if new_ids else {}),
             "production_id": prod.id, "key": pj.key, "kind": pj.kind, "night": pj.night,
             "tileid": pj.tileid, "cameras": ",".join(pj.cameras), "calib_night": pj.calib_night,
             "calib_nights": pj.calib_nights,
             # creation, not a move: a new job starts planned, or held with its reason
             "state": (JobState.HELD if pj.hold_reason else JobState.PLANNED).value,
             "hold_reason": pj.hold_reason, "reason": None,
             "resources": dict(resources.get(pj.key) or resources.get(pj.kind, {})),
             "campaign": campaign,
             "created_at": now, "updated_at": now} for n, pj in enumerate(jobs)]
    _insert_rows(s, Job, rows)
    del rows
    if new_ids:
        # ids known before the insert: only parents saved earlier (other nights, an earlier
        # batch) are looked up, not every new job by its key
        ids = {pj.key: i for pj, i in zip(jobs, new_ids)}
        ids.update(key_ids(s, prod, {d for pj in jobs for d in pj.deps} - ids.keys()))
    else:
        # One query per chunk of keys for every id we need: the new jobs and all their parents.
        ids = key_ids(s, prod, {pj.key for pj in jobs} | {d for pj in jobs for d in pj.deps})
    links = [{"job_id": ids[pj.key], "expid": e} for pj in jobs for e in set(pj.expids)]
    _insert_rows(s, JobExposure, links)
    del links
    edges = [{"parent_id": parent, "child_id": ids[pj.key]}
             for pj in jobs for parent in parent_ids(ids, pj, pj.deps)]
    _insert_rows(s, JobEdge, edges)
    expids = sorted({e for pj in jobs for e in pj.expids})
    waiting = [i for chunk in _chunks(expids) for i in s.scalars(
        select(Exposure.id).where(Exposure.production_id == prod.id, in_(s, Exposure.expid, chunk),
                                  Exposure.status == ExposureStatus.INGESTED.value))]
    transition(s, waiting, ExposureStatus.PLANNED, "jobs planned", actor)
    return len(jobs)


def _allocate_ids(s: Session, n: int) -> list[int] | None:
    """``n`` new job ids from PostgreSQL's sequence in one statement (ascending), so that
    links and edges need no ``SELECT key, id`` of the jobs just copied in (1.2 s of a
    300-night save, most of it psycopg expanding 5,000-key IN lists). None on SQLite, where
    the insert-then-select path is cheap and the rowid is the id."""
    if s.connection().dialect.name != "postgresql":
        return None
    return list(s.scalars(text(
        "SELECT nextval(pg_get_serial_sequence('job', 'id')) FROM generate_series(1, :n) "
        "ORDER BY 1"), {"n": n}))


#: new jobs from which a save refreshes PostgreSQL's statistics before its commit
ANALYZE_AFTER = 10_000


def analyze(s: Session) -> None:
    """Fresh planner statistics for the tables a campaign just grew (PostgreSQL only).

    Without them the first `status` after a 790,000-job save plans its per-night counts on
    the empty tables' estimates, until autovacuum gets round to it. ANALYZE samples (30,000
    rows a table), so it costs well under a second at any size."""
    if s.connection().dialect.name == "postgresql":
        s.execute(text("ANALYZE job, job_edge, job_exposure, exposure, state_event, night"))


def key_ids(s: Session, prod: Production, keys: Iterable[str]) -> dict[str, int]:
    """{job key: id} of the given keys that exist."""
    keys = sorted(set(keys))
    out: dict[str, int] = {}
    for chunk in _chunks(keys, 5_000):
        out.update(s.execute(select(Job.key, Job.id).where(
            Job.production_id == prod.id, in_(s, Job.key, chunk))).all())
    return out


def in_(s: Session, col, values: Sequence[Any]):  # noqa: ANN001, ANN201 - a SQL condition
    """``col IN values``; on PostgreSQL as ``col = ANY(:array)``: one bound array instead of
    thousands of parameters, which psycopg spends ~0.1 s rewriting per 5,000-value list."""
    if s.connection().dialect.name != "postgresql":
        return col.in_(values)
    from sqlalchemy import any_, bindparam
    from sqlalchemy.dialects.postgresql import ARRAY
    return col == any_(bindparam(None, list(values), type_=ARRAY(col.type), unique=True))


def parent_ids(ids: Mapping[str, int], pj: PlannedJob, deps: Iterable[str]) -> list[int]:
    """The ids of ``pj``'s parents; a parent the planner named but nobody saved is a bug."""
    out = []
    for dep in dict.fromkeys(deps):
        if dep not in ids:
            raise NotFound(f"planner bug: parent {dep} of {pj.key} is not in the database")
        out.append(ids[dep])
    return out


def quarantine(s: Session, prod: Production, reasons: Mapping[int, str], actor: str) -> None:
    """Mark exposures the planner rejected (duplicate EXPID, unknown OBSTYPE) as quarantined."""
    if not reasons:
        return
    by_id = dict(s.execute(select(Exposure.id, Exposure.expid).where(
        Exposure.production_id == prod.id, Exposure.expid.in_(list(reasons)))).all())
    why = {i: reasons[e] for i, e in by_id.items()}
    for i, r in why.items():
        transition(s, [i], ExposureStatus.QUARANTINED, r, actor,
                   values={"quarantine_reason": r})


# --- proposed for orchestrate at campaign scale (see docs/campaigns.md, "Known limits") ----------
def ready_job_ids(s: Session, prod: Production, limit: int | None = None) -> list[int]:
    """Ids of PLANNED jobs whose every parent is completed, or queued with a backend id, in
    one SQL query (oldest first, at most ``limit``): what ``orchestrate._ready`` computes by
    loading every planned job and its parents, which costs ~15 s at 79,000 planned jobs."""
    from sqlalchemy import and_, exists, not_, or_
    from sqlalchemy.orm import aliased

    from ..core.states import ACTIVE
    from .models import Attempt
    parent = aliased(Job)
    active = [st.value for st in ACTIVE]
    queued_with_id = exists().where(Attempt.job_id == parent.id, Attempt.state.in_(active),
                                    Attempt.backend_id.is_not(None))
    blocking = (select(JobEdge.child_id).join(parent, parent.id == JobEdge.parent_id)
                .where(JobEdge.child_id == Job.id,
                       not_(or_(parent.state == JobState.COMPLETED.value,
                                and_(parent.state.in_(active), queued_with_id)))))
    q = (select(Job.id).where(Job.production_id == prod.id, Job.state == JobState.PLANNED.value,
                              ~exists(blocking)).order_by(Job.id))
    if limit is not None:
        q = q.limit(limit)
    return list(s.scalars(q))


def broken_waiting(s: Session, prod: Production) -> list[tuple[int, str, str, str | None]]:
    """(child id, parent key, parent state, parent reason) for waiting jobs (planned/held)
    with a broken parent, in one query: what ``orchestrate._settle_dep_failed`` finds by
    loading every waiting job with its parents (~16 s per pass at 79,000 planned jobs)."""
    from sqlalchemy.orm import aliased

    from ..core.states import BROKEN
    parent = aliased(Job)
    return [tuple(r) for r in s.execute(
        select(Job.id, parent.key, parent.state, parent.reason)
        .join(JobEdge, JobEdge.child_id == Job.id).join(parent, parent.id == JobEdge.parent_id)
        .where(Job.production_id == prod.id,
               Job.state.in_([JobState.PLANNED.value, JobState.HELD.value]),
               parent.state.in_([st.value for st in BROKEN])))]
