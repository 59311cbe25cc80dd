"""Operator edits of an exposure (`desinight exposure EXPID`), DESI's exposure-table columns
BADCAMWORD, BADAMPS, LASTSTEP, EXPFLAG and COMMENTS, and what they do to the night's jobs.

An edit changes the exposure row, then re-plans its night with ``plan_night(redefine=True)``
and brings every job that has not run to that definition: cameras, exposures and parents
updated in place; a job the data no longer call for (an ignored exposure's jobs, a skysub
exposure's flux calibration) is cancelled; a job that was queued but had not started is
cancelled in the backend and planned again, with its queued dependents, so nothing runs with
the old definition. A dep_failed job whose broken parents the edit removed is released. Jobs
that ran (completed, failed, ...) are re-defined too, so a `resubmit` runs them the new way,
but their state is left alone. Running jobs are never touched.

Each edit is one ``exposure_edit`` row: field -> [old, new], the job keys it cancelled,
re-planned and released, who ($USER) and why (the comment). ``dry_run`` does all of it in a
transaction that is rolled back and calls no backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .core.cameras import camera_word, parse_cameras
from .core.errors import DesinightError
from .core.planner import JOB_KINDS, LASTSTEPS, PlannedJob, plan_night
from .core.states import ACTIVE, JobState
from .db import bulk, repo
from .db.engine import transaction
from .db.models import Exposure, ExposureEdit, Job, JobEdge, JobExposure, Production, utcnow
from .orchestrate import Context
from .transitions import move_job, operator_actor

FLAGS = ("short", "low_sn", "aborted", "test", "corrupted")
_AMP = re.compile(r"^[brz]\d[ABCD]$")
#: the reason an edit writes on the jobs it cancels (a later edit may plan them again)
_EDIT_REASON = re.compile(r"^exposure \d+ edited")
#: queued in the backend but not started: an edit that changes them cancels and re-plans them
QUEUED = frozenset({JobState.SUBMITTED, JobState.PENDING})
#: not run and not queued: re-defined in place
WAITING = frozenset({JobState.PLANNED, JobState.HELD, JobState.DEP_FAILED})
#: ran and ended: re-defined so that a resubmit (--force for completed ones) runs them the
#: new way; never cancelled (a completed job's outputs exist)
ENDED = frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.OUT_OF_MEMORY,
                   JobState.NODE_FAIL, JobState.UNKNOWN, JobState.COMPLETED})


@dataclass
class EditResult:
    expid: int
    changes: dict[str, list[str]] = field(default_factory=dict)   # field -> [old, new]
    cancelled: list[str] = field(default_factory=list)
    replanned: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)   # re-planned ones that had completed
    dry_run: bool = False


class _DryRun(Exception):
    def __init__(self, result: EditResult) -> None:
        super().__init__("dry run")
        self.result = result


def parse_amps(text: str) -> list[str]:
    """``"b7D,z8A"`` -> ``["b7D", "z8A"]``; one error line naming the bad item."""
    out = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        amp = item[:-1].lower() + item[-1:].upper()
        if not _AMP.match(amp):
            raise DesinightError(f"bad amplifier {item!r}: expected camera + amplifier, e.g. b7D")
        out.append(amp)
    return sorted(set(out))


def edit_exposure(ctx: Context, expid: int, *, bad_cameras: str | None = None,
                  bad_amps: str | None = None, laststep: str | None = None,
                  flag: str | None = None, comment: str | None = None,
                  dry_run: bool = False) -> EditResult:
    """Apply one edit and re-plan; see the module docstring."""
    if laststep is not None and laststep not in LASTSTEPS:
        raise DesinightError(f"--laststep {laststep!r}: one of {', '.join(LASTSTEPS)}")
    if flag is not None and flag not in FLAGS:
        raise DesinightError(f"--flag {flag!r}: one of {', '.join(FLAGS)}")
    if all(v is None for v in (bad_cameras, bad_amps, laststep, flag, comment)):
        raise DesinightError("nothing to edit: give --bad-cameras, --bad-amps, --laststep, "
                             "--flag or --comment")
    cancel_ids: list[str] = []
    try:
        with transaction(ctx.sessions) as s:
            prod = repo.get_production(s, ctx.production)
            exp = repo.get_exposure(s, prod, expid)
            res = EditResult(expid, dry_run=dry_run)
            _apply(exp, res, bad_cameras, bad_amps, laststep, flag)
            s.flush()
            actor = operator_actor()
            why = f"exposure {expid} edited" + (f": {comment}" if comment else "")
            cancel_ids = _replan(ctx, s, prod, exp, res, actor, why)
            s.add(ExposureEdit(production_id=prod.id, exposure_id=exp.id, changes=res.changes,
                               effects={"cancelled": res.cancelled, "replanned": res.replanned,
                                        "released": res.released},
                               comment=comment, actor=actor, at=utcnow()))
            if dry_run:
                raise _DryRun(res)
    except _DryRun as d:
        return d.result
    if cancel_ids:
        ctx.backend.cancel(cancel_ids)
    return res


def _apply(exp: Exposure, res: EditResult, bad_cameras, bad_amps, laststep, flag) -> None:  # noqa: ANN001
    def change(name: str, new: str) -> None:
        old = getattr(exp, name) or ""
        if new != old:
            res.changes[name] = [old, new]
            setattr(exp, name, new)

    present = parse_cameras(exp.cameras) if exp.cameras else []
    if bad_cameras is not None:
        add = parse_cameras(bad_cameras)
        unknown = [c for c in add if c not in present]
        if unknown:
            raise DesinightError(f"exposure {exp.expid} has no camera {', '.join(unknown)} "
                                 f"(it has {camera_word(present) or 'none'})")
        old = parse_cameras(exp.bad_cameras) if exp.bad_cameras else []
        change("bad_cameras", ",".join(parse_cameras(sorted(set(old) | set(add)))))
    if bad_amps is not None:
        amps = parse_amps(bad_amps)
        unknown = [a for a in amps if a[:-1] not in present]
        if unknown:
            raise DesinightError(f"exposure {exp.expid} has no camera for amplifier "
                                 f"{', '.join(unknown)}")
        old = exp.bad_amps.split(",") if exp.bad_amps else []
        change("bad_amps", ",".join(sorted(set(old) | set(amps))))
    if laststep is not None:
        change("laststep", laststep)
        if "laststep" in res.changes:
            exp.laststep_reason = "operator"
    if flag is not None:
        old = exp.flags.split(",") if exp.flags else []
        change("flags", ",".join(sorted(set(old) | {flag})))


def _replan(ctx: Context, s: Session, prod: Production, exp: Exposure, res: EditResult,
            actor: str, why: str) -> list[str]:
    """Bring the night's jobs that have not run to the edited plan; returns backend ids to
    scancel (after the commit)."""
    night = exp.night
    nrow = repo.ensure_night(s, prod, night)
    from .calib_choice import plan_inputs   # the same calibration choice as the night's plan
    exps, calibs = plan_inputs(s, ctx.cfg, prod, night, repo.exposure_infos(s, prod, night))
    from .db.tiles import history_for       # as the night's plan: its cumulative redshifts too
    from .plan_extras import plan_extras    # the same set rule and darks as the daemon's
    fresh = {pj.key: pj for pj in plan_night(
        night, exps, repo.job_keys(s, prod, night), closed=nrow.closed, redefine=True,
        history=history_for(ctx.cfg, s, prod, night, exps), **calibs,
        **plan_extras(s, ctx.cfg, prod, night)).jobs}
    # Jobs the edit calls for anew (LASTSTEP raised again): new keys are added the planner's
    # way; those an earlier edit cancelled are planned again (below, as re-planned).
    from .orchestrate import job_resources, resources_for
    have = repo.job_keys(s, prod, night)
    new_jobs = [pj for k, pj in fresh.items() if k not in have]
    bulk.save_jobs(s, prod, new_jobs, job_resources(
        ctx.cfg, new_jobs, {k: resources_for(ctx.cfg, k).__dict__ for k in JOB_KINDS}), actor)
    res.replanned += sorted(k for k in fresh if k not in have)
    jobs = list(s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)
                          .order_by(Job.id)))
    by_id = {j.id: j for j in jobs}
    revived = [j for j in jobs if j.key in fresh and JobState(j.state) is JobState.CANCELLED
               and _EDIT_REASON.match(j.reason or "")]
    for j in revived:
        move_job(s, j, JobState.PLANNED, why, actor, values={"reason": None})
        s.refresh(j)
    touched = [j for j in jobs if (exp.expid in j.expids or j in revived
                                   or exp.expid in getattr(fresh.get(j.key), "expids", ()))
               and JobState(j.state) in (QUEUED | WAITING | ENDED | {JobState.RUNNING})]
    drop: list[Job] = []
    redo: list[tuple[Job, PlannedJob]] = []
    for j in touched:
        new = fresh.get(j.key)
        if new is not None and not new.cameras and j.cameras:
            new = None              # every camera of it is bad now: nothing left to do
        if new is not None and _same(s, j, new):
            if j in revived:
                res.replanned.append(j.key)
            continue
        if JobState(j.state) is JobState.RUNNING:
            res.left_running.append(j.key)
        elif new is None and JobState(j.state) is JobState.COMPLETED:
            continue                # done and no longer called for: its outputs stay
        elif new is None:
            drop.append(j)
        else:
            redo.append((j, new))
    # A queued job that changes takes its queued dependents with it: they wait on its old id.
    queued = {j.id for j, _ in redo if JobState(j.state) in QUEUED} | \
             {j.id for j in drop if JobState(j.state) in QUEUED}
    for d in repo.descendants(s, list(queued)):
        dj = by_id.get(d) or s.get(Job, d)
        if dj is not None and JobState(dj.state) in QUEUED and dj.id not in {j.id for j, _ in redo} \
                and dj not in drop:
            redo.append((dj, fresh.get(dj.key) or _as_planned(dj)))
    backend_ids: list[str] = []
    for j in drop:
        backend_ids += _cancel(s, j, actor, why)
        res.cancelled.append(j.key)
    dropped = {j.id for j in drop}
    for j, new in redo:
        was = JobState(j.state)
        _redefine(s, prod, j, new, dropped)
        if was in QUEUED:
            backend_ids += _cancel(s, j, actor, why)
            move_job(s, j, JobState.PLANNED, why, actor, expect=[JobState.CANCELLED.value],
                     values={"reason": None})
        res.replanned.append(j.key)
        if was is JobState.COMPLETED:
            res.completed.append(j.key)
    # Children of a cancelled job no longer wait on it; a dep_failed one whose broken
    # parents are all gone runs again ("a job waiting only on it is released").
    kids = {c for cs in repo.children_of(s, list(dropped)).values() for c in cs} if dropped else set()
    if dropped:
        s.execute(delete(JobEdge).where(JobEdge.parent_id.in_(dropped)))
    s.flush()
    # To a fixed point: a released job's dep_failed children may be free now too.
    todo = set(kids | {j.id for j, _ in redo}) - dropped
    moved = True
    while moved:
        moved = False
        for jid in sorted(todo):
            j = s.get(Job, jid)
            s.refresh(j)
            if JobState(j.state) is JobState.DEP_FAILED and not _broken_parents(s, j):
                if move_job(s, j, JobState.PLANNED, f"{why} (its broken parents are gone)",
                            actor, values={"reason": None}):
                    res.released.append(j.key)
                    todo |= set(repo.children_of(s, [jid])[jid])
                    moved = True
    res.released.sort()
    res.cancelled.sort()
    res.replanned.sort()
    res.completed.sort()
    return backend_ids


def _same(s: Session, j: Job, new: PlannedJob) -> bool:
    parents = set(s.scalars(select(Job.key).join(JobEdge, JobEdge.parent_id == Job.id)
                            .where(JobEdge.child_id == j.id)))
    return (tuple(j.expids) == tuple(sorted(new.expids)) and j.cameras == ",".join(new.cameras)
            and parents == set(new.deps))


def _as_planned(j: Job) -> PlannedJob:
    return PlannedJob(j.key, j.kind, j.night, j.tileid, tuple(j.expids),
                      tuple(j.cameras.split(",")) if j.cameras else (), (), j.calib_night,
                      calib_nights=j.calib_nights)


def _redefine(s: Session, prod: Production, j: Job, new: PlannedJob, dropped: set[int]) -> None:
    j.cameras = ",".join(new.cameras)
    s.execute(delete(JobExposure).where(JobExposure.job_id == j.id))
    for e in sorted(set(new.expids)):
        s.add(JobExposure(job_id=j.id, expid=e))
    if new.deps:
        ids = bulk.key_ids(s, prod, new.deps)
        want = {ids[k] for k in new.deps if k in ids} - dropped
        s.execute(delete(JobEdge).where(JobEdge.child_id == j.id))
        for p in sorted(want):
            s.add(JobEdge(parent_id=p, child_id=j.id))
    s.flush()
    s.expire(j, ["exposures"])


def _cancel(s: Session, j: Job, actor: str, why: str) -> list[str]:
    """Cancel one job that has not started; the backend id to scancel if it was queued."""
    was = JobState(j.state)
    if was not in (QUEUED | {JobState.PLANNED, JobState.HELD}):
        # It ended (failed, dep_failed...): cancelled so that a resubmit leaves it alone.
        move_job(s, j, JobState.PLANNED, why, actor)
    if not move_job(s, j, JobState.CANCELLED, why, actor, set_reason=True,
                    expect=[JobState.PLANNED.value] if was not in (QUEUED | {JobState.HELD})
                    else None):
        return []
    s.refresh(j)
    att = j.last_attempt
    if was in ACTIVE and att is not None and JobState(att.state) in ACTIVE:
        att.state, att.reason = JobState.CANCELLED.value, why
        return [att.backend_id] if att.backend_id else []
    return []


def _broken_parents(s: Session, j: Job) -> list[Job]:
    from .core.states import BROKEN
    return [p for p in repo.parents_of(s, [j.id])[j.id] if JobState(p.state) in BROKEN]


def auto_laststep(s: Session, prod: Production, expid: int, cfg) -> None:  # noqa: ANN001
    """The [laststep] rules at ingest: short science exposures and dither-like programs are
    processed through sky subtraction only; the reason is kept for `show exposure`."""
    exp = s.scalar(select(Exposure).where(Exposure.production_id == prod.id,
                                          Exposure.expid == expid))
    if exp is None or exp.obstype != "SCIENCE" or exp.laststep_reason == "operator":
        return
    why = laststep_rule(exp.exptime, exp.program, cfg)
    if why:
        exp.laststep, exp.laststep_reason = "skysub", why


def laststep_rule(exptime: float | None, program: str | None, cfg) -> str | None:  # noqa: ANN001
    """Why a science exposure stops after sky subtraction (None: it does not). A program
    matches when it contains a listed word, any case, as DESI's exposure table tests
    ``"dither" in program``: PROGRAM "Dither tile 80000" matches "dither"."""
    if exptime is not None and exptime < cfg.laststep_min_exptime_s:
        return f"EXPTIME {exptime:g} s < laststep.min_exptime_s {cfg.laststep_min_exptime_s:g}"
    word = next((w for w in cfg.laststep_skysub_programs if w and w.lower() in (program or "").lower()),
                None)
    return f"PROGRAM {program} matches laststep.skysub_programs {word!r}" if word else None


def edits_of(s: Session, exp: Exposure) -> list[ExposureEdit]:
    return list(s.scalars(select(ExposureEdit).where(ExposureEdit.exposure_id == exp.id)
                          .order_by(ExposureEdit.id)))
