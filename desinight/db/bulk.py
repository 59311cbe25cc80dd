"""Bulk inserts for campaign-sized writes: Core ``INSERT`` with executemany, no ORM objects.

``repo.save_plan`` builds one ORM object per job and per job-exposure link, which is right
for a night (~100 jobs) and too slow for a campaign (~100,000 jobs, ~250,000 edges). These
functions write the same rows in a few statements per table: jobs, then one ``SELECT key,
id`` to learn the new ids, then job-exposure links and edges. Same session, same transaction
as the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from ..core.errors import NotFound
from ..core.planner import PlannedJob
from ..core.states import ExposureStatus, JobState
from .models import Exposure, Job, JobEdge, JobExposure, Night, Production, utcnow

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
    for chunk in _chunks(full):
        s.execute(insert(Exposure), list(chunk))
    return len(full)


def save_jobs(s: Session, prod: Production, jobs: Sequence[PlannedJob],
              resources: Mapping[str, Mapping[str, Any]], campaign: str | None = None) -> int:
    """Insert planned jobs with their exposure links and edges; returns the number of jobs.

    Parents may be new (in ``jobs``) or already in the database (any night). Exposures
    covered by a new job move from ingested to planned."""
    if not jobs:
        return 0
    now = utcnow()
    rows = [{"production_id": prod.id, "key": pj.key, "kind": pj.kind, "night": pj.night,
             "tileid": pj.tileid, "cameras": ",".join(pj.cameras), "calib_night": pj.calib_night,
             "state": (JobState.HELD if pj.hold_reason else JobState.PLANNED).value,
             "hold_reason": pj.hold_reason, "reason": None,
             "resources": dict(resources.get(pj.kind, {})), "campaign": campaign,
             "created_at": now, "updated_at": now} for pj in jobs]
    for chunk in _chunks(rows):
        s.execute(insert(Job), list(chunk))
    del rows
    # One query for every id we need: the new jobs and all their parents.
    ids: dict[str, int] = dict(s.execute(select(Job.key, Job.id).where(
        Job.production_id == prod.id)).all())
    links = [{"job_id": ids[pj.key], "expid": e} for pj in jobs for e in set(pj.expids)]
    for chunk in _chunks(links):
        s.execute(insert(JobExposure), list(chunk))
    del links
    edges = []
    for pj in jobs:
        child = ids[pj.key]
        for dep in dict.fromkeys(pj.deps):
            if dep not in ids:
                raise NotFound(f"planner bug: parent {dep} of {pj.key} is not in the database")
            edges.append({"parent_id": ids[dep], "child_id": child})
    for chunk in _chunks(edges):
        s.execute(insert(JobEdge), list(chunk))
    planned = select(JobExposure.expid).join(Job, Job.id == JobExposure.job_id).where(
        Job.production_id == prod.id)
    s.execute(update(Exposure).where(Exposure.production_id == prod.id,
                                     Exposure.status == ExposureStatus.INGESTED.value,
                                     Exposure.expid.in_(planned))
              .values(status=ExposureStatus.PLANNED.value).execution_options(
                  synchronize_session=False))
    return len(jobs)


def quarantine(s: Session, prod: Production, reasons: Mapping[int, str]) -> None:
    """Mark exposures the planner rejected (duplicate EXPID, unknown OBSTYPE) as quarantined."""
    for expid, reason in reasons.items():
        s.execute(update(Exposure).where(Exposure.production_id == prod.id,
                                         Exposure.expid == expid,
                                         Exposure.status != ExposureStatus.QUARANTINED.value)
                  .values(status=ExposureStatus.QUARANTINED.value, quarantine_reason=reason)
                  .execution_options(synchronize_session=False))
