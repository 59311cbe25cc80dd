"""What happened, from the ``state_event`` rows ``transitions`` appends: `desinight history
NIGHT|EXPID|JOB`, the event list of `show job` and the attempts table of the HTML report."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .core.states import JobState
from .db import repo
from .db.models import Attempt, Exposure, Job, JobExposure, Production, StateEvent
from .retry import resolve_target


def event_dict(e: StateEvent, what: str) -> dict:
    return {"at": e.at.isoformat(), "what": what, "job_id": e.job_id,
            "exposure_id": e.exposure_id, "attempt": e.attempt, "from": e.from_state,
            "to": e.to_state, "reason": e.reason, "actor": e.actor, "host": e.host}


def events(s: Session, prod: Production, target: str) -> tuple[str, list[dict]]:
    """(what the target is, its events oldest first). A night covers its exposures and jobs,
    an EXPID the exposure and every job that reads it, a job (key or id) itself."""
    expid, job, night = resolve_target(s, prod, target)
    if job is not None:
        j = repo.get_job(s, prod, job)
        jobs, exps, label = {j.id: j.key}, {}, f"job {j.key}"
    elif expid is not None:
        exp = repo.get_exposure(s, prod, expid)
        jobs = dict(s.execute(select(Job.id, Job.key).join(JobExposure).where(
            Job.production_id == prod.id, JobExposure.expid == expid)).all())
        exps, label = {exp.id: exp.expid}, f"exposure {expid}"
    else:
        jobs = dict(s.execute(select(Job.id, Job.key).where(
            Job.production_id == prod.id, Job.night == night)).all())
        exps = dict(s.execute(select(Exposure.id, Exposure.expid).where(
            Exposure.production_id == prod.id, Exposure.night == night)).all())
        label = f"night {night}"
    conds = []
    if jobs:
        conds.append(StateEvent.job_id.in_(list(jobs)))
    if exps:
        conds.append(StateEvent.exposure_id.in_(list(exps)))
    if not conds:
        return label, []
    from sqlalchemy import or_
    rows = s.scalars(select(StateEvent).where(StateEvent.production_id == prod.id, or_(*conds))
                     .order_by(StateEvent.at, StateEvent.id))
    return label, [event_dict(e, jobs[e.job_id] if e.job_id is not None
                              else f"exposure {exps[e.exposure_id]}") for e in rows]


def job_events(s: Session, job: Job) -> list[dict]:
    return [event_dict(e, job.key) for e in s.scalars(
        select(StateEvent).where(StateEvent.job_id == job.id).order_by(StateEvent.at, StateEvent.id))]


def night_attempts(s: Session, prod: Production, night: int) -> list[dict]:
    """Every attempt of the night's jobs, with ``retried`` set on an attempt a later attempt
    of the same job followed (a timeout that was retried, say)."""
    rows = s.execute(select(Job.key, Attempt).join(Attempt, Attempt.job_id == Job.id).where(
        Job.production_id == prod.id, Job.night == night).order_by(Job.id, Attempt.number)).all()
    last: dict[str, int] = {}
    for key, a in rows:
        last[key] = max(last.get(key, 0), a.number)
    return [{"job": key, "number": a.number, "backend_id": a.backend_id, "state": a.state,
             "exit_code": a.exit_code, "reason": a.reason, "log": a.log_path,
             "started_at": a.started_at and a.started_at.isoformat(),
             "ended_at": a.ended_at and a.ended_at.isoformat(),
             "retried": a.number < last[key],
             "retried_timeout": a.number < last[key] and a.state == JobState.TIMEOUT.value}
            for key, a in rows]
