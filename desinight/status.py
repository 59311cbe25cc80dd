"""What `desinight status` shows, as plain data (the ``--json`` schema, version 1).

Aggregates are computed in SQL so the answer stays fast on a database holding a survey.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .core.states import BROKEN, ExposureStatus, JobState
from .db import repo
from .db.models import Attempt, Exposure, Job, JobExposure, Night, Production, Rejection

SCHEMA_VERSION = 1


def latest_night(s: Session, prod: Production) -> int | None:
    return s.scalar(select(func.max(Night.night)).where(Night.production_id == prod.id))


def collect(s: Session, prod: Production, night: int | None = None, expid: int | None = None,
            now: datetime | None = None) -> dict:
    if expid is not None:
        night = repo.get_exposure(s, prod, expid).night
    if night is None:
        night = latest_night(s, prod)
    nights = _nights(s, prod)
    out: dict = {"schema": SCHEMA_VERSION, "production": prod.name, "redux_dir": prod.redux_dir,
                 "night": night, "nights": nights, "exposures": [], "jobs": [], "failures": [],
                 "rejections": [], "health": _health(s, prod, now)}
    if night is None:
        return out
    exps = s.scalars(select(Exposure).where(Exposure.production_id == prod.id,
                                            Exposure.night == night).order_by(Exposure.expid)).all()
    jobs = s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)
                     .order_by(Job.id)).all()
    cover = defaultdict(list)
    for job_id, e in s.execute(select(JobExposure.job_id, JobExposure.expid).join(Job).where(
            Job.production_id == prod.id, Job.night == night)):
        cover[job_id].append(e)
    last_att = _last_attempts(s, [j.id for j in jobs])
    per_exp: dict[int, dict[str, str]] = defaultdict(dict)
    for j in jobs:
        for e in cover[j.id]:
            per_exp[e][j.kind] = j.state
        att = last_att.get(j.id)
        out["jobs"].append({
            "id": j.id, "key": j.key, "kind": j.kind, "state": j.state, "tileid": j.tileid,
            "expids": sorted(cover[j.id]), "cameras": j.cameras, "reason": j.reason or j.hold_reason,
            "attempts": att.number if att else 0,
            "backend_id": att.backend_id if att else None,
            "started_at": _iso(att.started_at) if att else None,
            "ended_at": _iso(att.ended_at) if att else None,
            "log": att.log_path if att else None})
        if JobState(j.state) in BROKEN or j.state == JobState.HELD.value:
            out["failures"].append({"job": j.key, "id": j.id, "kind": j.kind, "state": j.state,
                                    "reason": j.reason or j.hold_reason,
                                    "log": att.log_path if att else None})
    for e in exps:
        if expid is not None and e.expid != expid:
            continue
        out["exposures"].append({
            "expid": e.expid, "night": e.night, "obstype": e.obstype, "tileid": e.tileid,
            "exptime": e.exptime, "cameras": e.cameras, "bad_cameras": e.bad_cameras,
            "status": e.status, "reason": e.quarantine_reason, "jobs": per_exp.get(e.expid, {}),
            "arrived_at": _iso(e.arrived_at)})
        if e.status == ExposureStatus.QUARANTINED.value:
            out["failures"].append({"exposure": e.expid, "state": "quarantined",
                                    "reason": e.quarantine_reason, "kind": "exposure"})
    for r in s.scalars(select(Rejection).where(Rejection.production_id == prod.id,
                                               Rejection.night == night)):
        out["rejections"].append({"path": r.path, "reason": r.reason})
        out["failures"].append({"path": r.path, "state": "rejected", "reason": r.reason,
                                "kind": "file"})
    return out


def _nights(s: Session, prod: Production) -> list[dict]:
    by_night: dict[int, dict] = {}
    for n, closed in s.execute(select(Night.night, Night.closed).where(
            Night.production_id == prod.id)):
        by_night[n] = {"night": n, "closed": closed, "exposures": {}, "jobs": {}}
    for n, obstype, count in s.execute(select(Exposure.night, Exposure.obstype, func.count())
                                       .where(Exposure.production_id == prod.id)
                                       .group_by(Exposure.night, Exposure.obstype)):
        by_night.setdefault(n, {"night": n, "closed": False, "exposures": {}, "jobs": {}})
        by_night[n]["exposures"][obstype] = count
    for n, state, count in s.execute(select(Job.night, Job.state, func.count())
                                     .where(Job.production_id == prod.id)
                                     .group_by(Job.night, Job.state)):
        by_night.setdefault(n, {"night": n, "closed": False, "exposures": {}, "jobs": {}})
        by_night[n]["jobs"][state] = count
    return [by_night[n] for n in sorted(by_night)]


def _last_attempts(s: Session, job_ids: list[int]) -> dict[int, Attempt]:
    if not job_ids:
        return {}
    out: dict[int, Attempt] = {}
    for att in s.scalars(select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.number)):
        out[att.job_id] = att
    return out


def _health(s: Session, prod: Production, now: datetime | None) -> dict:
    st = repo.service_state(s, prod)
    return {k: (st[k].value if k in st else None)
            for k in ("last_poll", "last_ingest", "backend_error", "daemon_pid", "daemon_started")}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
