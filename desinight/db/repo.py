"""Repository functions. Each takes a ``Session``; the caller (a daemon tick, a CLI command)
owns the transaction, so one tick is one commit and a crash mid-tick leaves nothing half-done."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from ..core.errors import NotFound
from ..core.planner import ExposureInfo, Plan, PlannedJob
from ..core.states import ACTIVE, ExposureStatus, JobState
from .models import Attempt, Exposure, Job, JobEdge, Night, Production, ServiceState, utcnow


# --- productions ------------------------------------------------------------------------
def get_production(s: Session, name: str) -> Production:
    prod = s.scalar(select(Production).where(Production.name == name))
    if prod is None:
        names = s.scalars(select(Production.name)).all()
        hint = f" (known: {', '.join(names)})" if names else " (run `desinight init` first)"
        raise NotFound(f"no production named {name!r}{hint}")
    return prod


def ensure_production(s: Session, name: str, raw_root: str, redux_dir: str,
                      kind: str = "nightly") -> tuple[Production, bool]:
    prod = s.scalar(select(Production).where(Production.name == name))
    if prod is not None:
        return prod, False
    prod = Production(name=name, raw_root=raw_root, redux_dir=redux_dir, kind=kind)
    s.add(prod)
    s.flush()
    return prod, True


def ensure_night(s: Session, prod: Production, night: int) -> Night:
    row = s.scalar(select(Night).where(Night.production_id == prod.id, Night.night == night))
    if row is None:
        row = Night(production_id=prod.id, night=night)
        s.add(row)
        s.flush()
    return row


# --- exposures ----------------------------------------------------------------------------
def known_expids(s: Session, prod: Production, night: int | None = None) -> dict[int, str]:
    """{expid: raw_path} already recorded (ingested or quarantined)."""
    q = select(Exposure.expid, Exposure.raw_path).where(Exposure.production_id == prod.id)
    if night is not None:
        q = q.where(Exposure.night == night)
    return dict(s.execute(q).all())


def add_exposure(s: Session, prod: Production, **fields) -> tuple[Exposure, bool]:
    """Insert idempotently by EXPID. A second, different file claiming a known EXPID is
    returned as not-created so the caller can report it; the first one is kept."""
    existing = s.scalar(select(Exposure).where(Exposure.production_id == prod.id,
                                               Exposure.expid == fields["expid"]))
    if existing is not None:
        return existing, False
    exp = Exposure(production_id=prod.id, **fields)
    s.add(exp)
    s.flush()
    return exp, True


def exposure_infos(s: Session, prod: Production, night: int) -> list[ExposureInfo]:
    rows = s.scalars(select(Exposure).where(
        Exposure.production_id == prod.id, Exposure.night == night,
        Exposure.status != ExposureStatus.QUARANTINED.value).order_by(Exposure.expid)).all()
    return [info_of(e) for e in rows]


def info_of(e: Exposure) -> ExposureInfo:
    """The planner's view of an exposure row: its good cameras (bad ones removed) and LASTSTEP."""
    from ..core.cameras import subtract
    good = tuple(subtract(e.cameras.split(",") if e.cameras else [],
                          e.bad_cameras.split(",") if e.bad_cameras else []))
    # every camera bad: nothing of it to process, as if ignored (its tile goes on without it)
    laststep = "ignore" if e.cameras and not good else (e.laststep or "all")
    return ExposureInfo(e.expid, e.night, e.obstype, e.tileid, good, e.seqnum, e.seqtot, laststep)


def bad_amps_by_expid(s: Session, prod: Production) -> dict[int, str]:
    """{expid: "b7D,z8A"} of the exposures with bad amplifiers (one query, usually empty)."""
    return dict(s.execute(select(Exposure.expid, Exposure.bad_amps).where(
        Exposure.production_id == prod.id, Exposure.bad_amps != "")).all())


def bad_amps_for(amps: dict[int, str], kind: str, expids: Sequence[int]) -> str:
    """The bad amplifiers preproc masks in a per-exposure job (arc, flat, science), else ""."""
    if kind not in ("arc", "flat", "science") or len(expids) != 1:
        return ""
    return amps.get(expids[0], "")


def get_exposure(s: Session, prod: Production, expid: int) -> Exposure:
    exp = s.scalar(select(Exposure).where(Exposure.production_id == prod.id, Exposure.expid == expid))
    if exp is None:
        near = s.scalars(select(Exposure.expid).where(Exposure.production_id == prod.id)
                         .order_by(func.abs(Exposure.expid - expid)).limit(3)).all()
        hint = f"; nearest: {', '.join(map(str, near))}" if near else ""
        raise NotFound(f"no exposure {expid} in production {prod.name}{hint}")
    return exp


# --- planning -----------------------------------------------------------------------------
def job_keys(s: Session, prod: Production, night: int) -> set[str]:
    return set(s.scalars(select(Job.key).where(Job.production_id == prod.id, Job.night == night)))


def save_plan(s: Session, prod: Production, plan: Plan, resources: dict[str, dict], actor: str,
              campaign: str | None = None) -> int:
    """Insert the plan's jobs, their exposures and edges (``bulk.save_jobs``, the one path),
    quarantine what it rejected and release held jobs it can now run. Returns the jobs added."""
    from . import bulk
    bulk.quarantine(s, prod, plan.quarantine, actor)
    n = bulk.save_jobs(s, prod, plan.jobs, resources, actor, campaign=campaign)
    _release(s, prod, plan.released, actor)   # after the inserts: their new parents may be in this plan
    return n


def _release(s: Session, prod: Production, released: Sequence[PlannedJob], actor: str) -> None:
    """Held jobs whose calibrations now exist: planned again, waiting on their new parents."""
    from ..transitions import transition
    from .bulk import key_ids, parent_ids
    if not released:
        return
    ids = key_ids(s, prod, {pj.key for pj in released} | {d for pj in released for d in pj.deps})
    have = set(s.execute(select(JobEdge.parent_id, JobEdge.child_id).where(
        JobEdge.child_id.in_([ids[pj.key] for pj in released]))).all())
    for pj in released:
        job_id = ids[pj.key]
        moved = transition(s, [job_id], JobState.PLANNED, "calibrations now available", actor,
                           expect=[JobState.HELD],
                           values={"hold_reason": None, "calib_night": pj.calib_night,
                                   "calib_nights": pj.calib_nights})
        if not moved.moved:
            continue
        for parent in parent_ids(ids, pj, pj.deps):
            if (parent, job_id) not in have:
                s.add(JobEdge(parent_id=parent, child_id=job_id))
    s.flush()


def held_keys(s: Session, prod: Production, night: int) -> set[str]:
    return set(s.scalars(select(Job.key).where(Job.production_id == prod.id, Job.night == night,
                                               Job.state == JobState.HELD.value)))


def nights_with_held(s: Session, prod: Production, after: int) -> list[int]:
    return list(s.scalars(select(Job.night).distinct().where(
        Job.production_id == prod.id, Job.night > after, Job.state == JobState.HELD.value)
        .order_by(Job.night)))


# --- jobs and attempts --------------------------------------------------------------------
def parents_of(s: Session, job_ids: Sequence[int]) -> dict[int, list[Job]]:
    """{child id: [parent jobs]} in one query."""
    out: dict[int, list[Job]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    rows = s.execute(select(JobEdge.child_id, Job).join(Job, Job.id == JobEdge.parent_id)
                     .where(JobEdge.child_id.in_(job_ids))
                     .options(selectinload(Job.attempts))).all()
    for child, parent in rows:
        out[child].append(parent)
    return out


def children_of(s: Session, job_ids: Iterable[int]) -> dict[int, list[int]]:
    job_ids = list(job_ids)
    out: dict[int, list[int]] = {j: [] for j in job_ids}
    if job_ids:
        for parent, child in s.execute(select(JobEdge.parent_id, JobEdge.child_id)
                                       .where(JobEdge.parent_id.in_(job_ids))):
            out[parent].append(child)
    return out


def descendants(s: Session, job_ids: Iterable[int]) -> list[int]:
    """Every job downstream of the given ones (not including them), breadth first."""
    seen: set[int] = set()
    frontier = list(job_ids)
    order: list[int] = []
    while frontier:
        kids = children_of(s, frontier)
        frontier = []
        for child_list in kids.values():
            for c in child_list:
                if c not in seen:
                    seen.add(c)
                    order.append(c)
                    frontier.append(c)
    return order


def jobs_in_state(s: Session, prod: Production, states: Iterable[JobState],
                  night: int | None = None) -> list[Job]:
    q = (select(Job).where(Job.production_id == prod.id,
                           Job.state.in_([JobState(x).value for x in states]))
         .options(selectinload(Job.attempts), selectinload(Job.exposures)).order_by(Job.id))
    if night is not None:
        q = q.where(Job.night == night)
    return list(s.scalars(q))


def get_job(s: Session, prod: Production, ident: str | int) -> Job:
    q = select(Job).where(Job.production_id == prod.id)
    text = str(ident)
    q = q.where(Job.id == int(text)) if text.isdigit() else q.where(Job.key == text)
    job = s.scalar(q.options(selectinload(Job.attempts), selectinload(Job.exposures)))
    if job is None:
        pattern = f"%{text}%"
        near = s.scalars(select(Job.key).where(Job.production_id == prod.id, Job.key.like(pattern))
                         .limit(3)).all()
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise NotFound(f"no job {text!r} in production {prod.name}{hint}")
    return job


def active_attempts(s: Session, prod: Production, unconfirmed_cancels: bool = False) -> list[Attempt]:
    """Attempts queued or running; with ``unconfirmed_cancels`` also those an operator
    cancelled that the backend has not yet said how they ended (no end time yet)."""
    live = Attempt.state.in_([st.value for st in ACTIVE])
    if unconfirmed_cancels:
        live = or_(live, and_(Attempt.state == JobState.CANCELLED.value,
                              Attempt.ended_at.is_(None), Attempt.backend_id.is_not(None)))
    return list(s.scalars(select(Attempt).join(Job).where(Job.production_id == prod.id, live)
                          # the jobs and their attempts in two queries, not two per attempt
                          # (the poll asks each job for its last attempt)
                          .options(selectinload(Attempt.job).selectinload(Job.attempts))))


def count_active(s: Session, prod: Production) -> int:
    return s.scalar(select(func.count()).select_from(Attempt).join(Job).where(
        Job.production_id == prod.id, Attempt.state.in_([st.value for st in ACTIVE])))


def set_service(s: Session, prod: Production, key: str, value: str | None,
                now: datetime | None = None) -> None:
    row = s.get(ServiceState, (prod.id, key))
    if row is None:
        s.add(ServiceState(production_id=prod.id, key=key, value=value, updated_at=now or utcnow()))
    else:
        row.value, row.updated_at = value, now or utcnow()


def clear_backend_error(s: Session, prod: Production, op: str, now: datetime) -> None:
    """Clear ``backend_error`` only if it came from ``op`` (submit, poll, find, cancel): sacct
    answering while slurmctld is down must not hide a failing sbatch."""
    row = s.get(ServiceState, (prod.id, "backend_error"))
    if row is not None and row.value and row.value.startswith(f"{op}:"):
        row.value, row.updated_at = None, now


def service_state(s: Session, prod: Production) -> dict[str, ServiceState]:
    return {r.key: r for r in s.scalars(select(ServiceState).where(
        ServiceState.production_id == prod.id))}
