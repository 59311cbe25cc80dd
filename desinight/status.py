"""What `desinight status` shows, as plain data (the ``--json`` schema, version 1).

Aggregates are computed in SQL so the answer stays fast on a database holding a survey.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .core.states import ACTIVE, BROKEN, ExposureStatus, JobState
from .db import repo, stats
from .db.models import (Attempt, Exposure, Job, JobExposure, Night, Production, Rejection, Sighting,
                        utcnow)

SCHEMA_VERSION = 1


def latest_night(s: Session, prod: Production) -> int | None:
    return s.scalar(select(func.max(Night.night)).where(Night.production_id == prod.id))


def collect(s: Session, prod: Production, night: int | None = None, expid: int | None = None,
            night_range: tuple[int, int] | None = None, failed_only: bool = False,
            now: datetime | None = None, stale_s: float | None = None,
            recent: int | None = None) -> dict:
    """The status document. One night (default: the latest) in detail, or a range of nights
    summarised with all their failures. ``recent``: the nights list holds only the latest
    ``recent`` nights of the selection (and the detailed night), ``earlier`` sums up the rest:
    a production of 10,000 nights answers as fast as one of ten."""
    if expid is not None:
        night = repo.get_exposure(s, prod, expid).night
    if night is None and night_range is None:
        night = latest_night(s, prod)
    lo, hi = night_range if night_range else (night, night)
    out: dict = {"schema": SCHEMA_VERSION, "production": prod.name, "redux_dir": prod.redux_dir,
                 "night": night, "range": list(night_range) if night_range else None,
                 "nights": [], "earlier": None, "exposures": [], "jobs": [],
                 "failures": _failures(s, prod, lo, hi) if lo is not None else [],
                 "rejections": [], "health": _health(s, prod, now, stale_s),
                 "unfinished": _unfinished(s, prod, lo, hi, now) if night_range else []}
    out["nights"], out["earlier"] = _nights(s, prod, night_range, recent, night)
    if night is None:
        out["unfinished"] = _unfinished(s, prod, 0, 99999999, now)   # odd dirs before any night
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
        if failed_only and not _is_failure(j.state):
            continue
        att = last_att.get(j.id)
        out["jobs"].append({
            "id": j.id, "key": j.key, "kind": j.kind, "state": j.state, "tileid": j.tileid,
            "expids": sorted(cover[j.id]), "cameras": j.cameras, "reason": j.reason or j.hold_reason,
            "attempts": att.number if att else 0,
            "backend_id": att.backend_id if att else None,
            "started_at": _iso(att.started_at) if att else None,
            "ended_at": _iso(att.ended_at) if att else None,
            "log": att.log_path if att else None})
    for e in exps:
        if expid is not None and e.expid != expid:
            continue
        steps = per_exp.get(e.expid, {})
        if failed_only and e.status != ExposureStatus.QUARANTINED.value and not any(
                _is_failure(st) for st in steps.values()):
            continue
        out["exposures"].append({
            "expid": e.expid, "night": e.night, "obstype": e.obstype, "tileid": e.tileid,
            "exptime": e.exptime, "cameras": e.cameras, "bad_cameras": e.bad_cameras,
            "status": e.status, "progress": exposure_progress(e.status, steps),
            "reason": e.quarantine_reason, "jobs": steps, "laststep": e.laststep,
            "arrived_at": _iso(e.arrived_at)})
    out["rejections"] = [{"path": r.path, "reason": r.reason} for r in s.scalars(
        select(Rejection).where(Rejection.production_id == prod.id, Rejection.night == night))]
    out["unfinished"] = _unfinished(s, prod, night, night, now)
    if expid is not None:
        mine = {j["key"] for j in out["jobs"] if expid in j["expids"]}
        out["jobs"] = [j for j in out["jobs"] if j["key"] in mine]
        out["failures"] = [f for f in out["failures"] if f.get("job") in mine
                           or f.get("exposure") == expid]
    return out


def exposure_progress(status: str, steps: dict[str, str]) -> str:
    """Where an exposure's processing stands, from the states of the jobs covering it:
    quarantined, waiting (no jobs yet), failed, held, processing, done or planned."""
    if status == ExposureStatus.QUARANTINED.value:
        return "quarantined"
    if not steps:
        return "waiting"
    states = {JobState(st) for st in steps.values()}
    if states & BROKEN:
        return "failed"
    if JobState.HELD in states:
        return "held"
    if states == {JobState.COMPLETED}:
        return "done"
    if states & (ACTIVE | {JobState.COMPLETED}):
        return "processing"
    return "planned"


def _is_failure(state: str) -> bool:
    return state == JobState.HELD.value or JobState(state) in BROKEN


def _failures(s: Session, prod: Production, lo: int, hi: int) -> list[dict]:
    """Failed/held jobs, quarantined exposures and rejected files of nights lo..hi."""
    out = []
    bad_states = [st.value for st in BROKEN] + [JobState.HELD.value]
    jobs = s.scalars(select(Job).where(Job.production_id == prod.id, Job.night.between(lo, hi),
                                       Job.state.in_(bad_states)).order_by(Job.night, Job.id)).all()
    last_att = _last_attempts(s, [j.id for j in jobs])
    for j in jobs:
        att = last_att.get(j.id)
        out.append({"kind": j.kind, "job": j.key, "id": j.id, "night": j.night, "state": j.state,
                    "reason": j.reason or j.hold_reason, "log": att.log_path if att else None})
    for e in s.scalars(select(Exposure).where(
            Exposure.production_id == prod.id, Exposure.night.between(lo, hi),
            Exposure.status == ExposureStatus.QUARANTINED.value).order_by(Exposure.expid)):
        out.append({"kind": "exposure", "exposure": e.expid, "night": e.night,
                    "state": "quarantined", "reason": e.quarantine_reason})
    for r in s.scalars(select(Rejection).where(Rejection.production_id == prod.id,
                                               Rejection.night.between(lo, hi))):
        out.append({"kind": "file", "path": r.path, "night": r.night, "state": "rejected",
                    "reason": r.reason})
    return out


def _unfinished(s: Session, prod: Production, lo: int, hi: int, now: datetime | None) -> list[dict]:
    """Directories seen in the raw tree but not ingested, with why (sightings), oldest first;
    ``minutes``: how long since first seen (an exposure 'incomplete for N min')."""
    now = now or datetime.now(timezone.utc)
    rows = s.scalars(select(Sighting).where(Sighting.production_id == prod.id,
                                            Sighting.night.between(lo, hi))
                     .order_by(Sighting.first_seen, Sighting.path))
    return [{"path": r.path, "night": r.night, "kind": r.kind, "reason": r.reason,
             "first_seen": _iso(r.first_seen), "last_seen": _iso(r.last_seen),
             "minutes": max(0, int((now - r.first_seen).total_seconds() // 60))} for r in rows]


def _nights(s: Session, prod: Production, night_range: tuple[int, int] | None,
            recent: int | None, night: int | None) -> tuple[list[dict], dict | None]:
    """Per night: exposures per obstype, jobs per state; with ``recent``, only the latest
    nights and a summary of the others (db/stats.py)."""
    lo, hi = night_range or (0, 99999999)
    if recent is None:
        return stats.per_night(s, prod.id, lo, hi), None
    latest = stats.recent_nights(s, prod.id, lo, hi, max(1, recent))
    if not latest:
        return [], None
    shown = stats.per_night(s, prod.id, latest[0], latest[-1], extra=night)
    rest = stats.earlier(s, prod.id, lo, hi, shown)
    return shown, rest if rest["nights"] else None


def _last_attempts(s: Session, job_ids: list[int]) -> dict[int, Attempt]:
    if not job_ids:
        return {}
    out: dict[int, Attempt] = {}
    for att in s.scalars(select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.number)):
        out[att.job_id] = att
    return out


def _health(s: Session, prod: Production, now: datetime | None,
            stale_s: float | None = None) -> dict:
    from . import liveness
    from .core import defaults as D
    st = repo.service_state(s, prod)
    out = {k: (st[k].value if k in st else None)
           for k in ("last_poll", "last_ingest", "backend_error", "daemon_pid", "daemon_started",
                     "tick_error", "heartbeat", "daemon_stopped")}
    # Each tick's error (tick_error:NAME) stays until that tick succeeds again.
    out["tick_errors"] = {k.split(":", 1)[1]: r.value for k, r in sorted(st.items())
                          if k.startswith("tick_error:") and r.value}
    if out["tick_errors"]:
        out["tick_error"] = "; ".join(f"{k}: {v}" for k, v in out["tick_errors"].items())
    live = liveness.assess(out["heartbeat"], out["daemon_pid"], out["daemon_stopped"],
                           now or utcnow(), stale_s or D.HEARTBEAT_STALE_S)
    out["daemon_running"], out["daemon"] = live.running, live.text
    # How fresh the job states are: the last poll the batch system answered (a failed poll
    # updates last_poll but not this), e.g. "slurm states as of 12 s ago".
    as_of = st["states_as_of"].value if "states_as_of" in st else None
    out["states_as_of"] = as_of
    out["states_age_s"] = (round(((now or utcnow()) - datetime.fromisoformat(as_of)).total_seconds(), 1)
                           if as_of else None)
    return out


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None
