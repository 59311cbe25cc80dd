"""Operator actions on jobs: resubmit what failed (re-linking dependents) and cancel.

Resubmission only moves jobs back to ``planned``; the normal submit pass then sends them in
topological waves, so each new attempt depends on the *new* ids of re-run parents and on
the still-queued ids of parents that did not fail, and on nothing for completed parents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select

from .core.errors import DesinightError, NotFound
from .core.states import ACTIVE, RETRYABLE, JobState
from .db import repo
from .db.engine import transaction
from .db.models import Exposure, Job, JobExposure, Night
from .orchestrate import CANCELLED_BY_OPERATOR, Context
from .transitions import move_job, operator_actor, transition

log = logging.getLogger("desinight")


class _DryRun(Exception):
    """Raised inside the transaction of a dry run: it rolls back and carries the answer out."""

    def __init__(self, result) -> None:  # noqa: ANN001 - RetryResult or a key list
        super().__init__("dry run")
        self.result = result


@dataclass
class RetryResult:
    replanned: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)   # key -> why
    learned: dict[str, str] = field(default_factory=dict)   # key -> what its request changed


def resolve_target(s, prod, text: str) -> tuple[int | None, str | None, int | None]:
    """(expid, job, night) named by one operator word: a job key (has a '/'), else a number
    that is an EXPID of the production, else one of its nights, else a job id."""
    text = text.strip()
    if not text.isdigit():
        return None, text, None
    n = int(text)
    if s.scalar(select(Exposure.id).where(Exposure.production_id == prod.id, Exposure.expid == n)):
        return n, None, None
    if s.scalar(select(Night.id).where(Night.production_id == prod.id, Night.night == n)):
        return None, None, n
    if s.scalar(select(Job.id).where(Job.production_id == prod.id, Job.id == n)):
        return None, text, None
    near = [*s.scalars(select(Exposure.expid).where(Exposure.production_id == prod.id)
                       .order_by(func.abs(Exposure.expid - n)).limit(2)),
            *s.scalars(select(Night.night).where(Night.production_id == prod.id)
                       .order_by(func.abs(Night.night - n)).limit(2))]
    hint = f"; nearest: {', '.join(map(str, sorted(near)))}" if near else ""
    raise NotFound(f"{text} is no EXPID, night or job id of production {prod.name}{hint}")


def _select(s, prod, expid: int | None, job: str | None, night: int | None,
            target: str | None = None) -> list[Job]:
    if target is not None:
        expid, job, night = resolve_target(s, prod, target)
    if job is not None:
        return [repo.get_job(s, prod, job)]
    if expid is not None:
        repo.get_exposure(s, prod, expid)   # clear error for an unknown expid
        return list(s.scalars(select(Job).join(JobExposure).where(
            Job.production_id == prod.id, JobExposure.expid == expid)))
    if night is not None:
        return list(s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)))
    raise DesinightError("say what to resubmit: an EXPID, --job ID or --night N --failed")


def resubmit(ctx: Context, expid: int | None = None, job: str | None = None,
             night: int | None = None, max_attempts: int | None = None,
             target: str | None = None, overrides: dict | None = None,
             dry_run: bool = False, actor: str | None = None, force: bool = False) -> RetryResult:
    """Re-plan failed/timeout/oom/node_fail/dep_failed/cancelled jobs of the selection and
    every broken job downstream of them, each with the resources in force now, grown by how
    its last attempt ended, and ``overrides`` (learn.py). ``dry_run``: the same answer, and
    nothing written. ``force``: completed jobs of the selection too, and everything
    downstream of them (refused while any of those is queued or running)."""
    limit = max_attempts or ctx.cfg.max_attempts
    out = RetryResult()
    try:
        _resubmit(ctx, out, limit, expid, job, night, target, overrides, dry_run, actor, force)
    except _DryRun as d:   # every write of the dry run rolled back with its transaction
        return d.result
    if out.replanned:
        ctx.event("resubmit", jobs=len(out.replanned))
    return out


def _resubmit(ctx: Context, out: RetryResult, limit: int, expid, job, night, target,  # noqa: ANN001
              overrides: dict | None, dry_run: bool, actor: str | None = None,
              force: bool = False) -> None:
    from .learn import next_resources
    from .orchestrate import resources_for
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        again = RETRYABLE | {JobState.COMPLETED} if force else RETRYABLE
        roots = [j for j in _select(s, prod, expid, job, night, target)
                 if JobState(j.state) in again]
        if not roots:
            raise DesinightError("nothing to resubmit: no failed job in that selection"
                                 + ("" if force else " (--force re-runs completed ones)"))
        down = repo.descendants(s, [j.id for j in roots])
        extra = s.scalars(select(Job).where(Job.id.in_(down))).all() if down else []
        busy = [x for x in (*roots, *extra) if force and JobState(x.state) in ACTIVE]
        if busy:   # it would write the outputs the re-run rewrites: refuse, say what to do
            raise DesinightError(f"--force: {busy[0].key} is {busy[0].state}; wait for it to "
                                 f"end or cancel it first")
        actor = actor or operator_actor()
        named = set(roots)
        for j in sorted({*roots, *(x for x in extra if JobState(x.state) in again)},
                        key=lambda j: j.id):
            if len(j.attempts) >= limit:
                out.refused[j.key] = f"already tried {len(j.attempts)} times (limit {limit})"
                continue
            last = j.last_attempt
            # the operator's overrides are for what they named, not for its dependents
            sized = resources_for(ctx.cfg, j.kind, len(j.cameras.split(",")) if j.cameras else 0,
                                  len(j.expids))
            res, note = next_resources(sized.__dict__,
                                       dict(j.resources or {}), last.state if last else None,
                                       (overrides or {}) if j in named else {},
                                       node=last.node if last else None)
            why = "resubmitted" + (f": {note}" if note else "")
            if not move_job(s, j, JobState.PLANNED, why, actor,
                            values={"reason": None, "resources": res}):
                out.refused[j.key] = "its state changed meanwhile; look again"
                continue
            out.replanned.append(j.key)
            if note:
                out.learned[j.key] = note
        if dry_run:
            raise _DryRun(out)


def cancel(ctx: Context, expid: int | None = None, job: str | None = None,
           night: int | None = None, target: str | None = None, dry_run: bool = False) -> list[str]:
    """Cancel the selection and everything downstream: scancel what is queued or running,
    mark what was only planned. Returns the keys cancelled (``dry_run``: that would be, and
    nothing is written or scancelled)."""
    try:
        return _cancel(ctx, expid, job, night, target, dry_run)
    except _DryRun as d:
        return d.result


def _cancel(ctx: Context, expid, job, night, target, dry_run: bool) -> list[str]:  # noqa: ANN001
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        picked = _select(s, prod, expid, job, night, target)
        down = repo.descendants(s, [j.id for j in picked])
        jobs = {j.id: j for j in picked}
        if down:
            jobs.update({j.id: j for j in s.scalars(select(Job).where(Job.id.in_(down)))})
        live = [j for j in jobs.values()
                if JobState(j.state) in (*ACTIVE, JobState.PLANNED, JobState.HELD)]
        read = {j.id: j.state for j in live}
        # Compare-and-set on the states just read: a job that ended meanwhile keeps its end.
        moved = transition(s, [j.id for j in live], JobState.CANCELLED, CANCELLED_BY_OPERATOR,
                           operator_actor(), expect=set(read.values()), set_reason=True).moved_ids
        live = [j for j in live if j.id in moved]
        if dry_run:
            raise _DryRun(sorted(j.key for j in live))
        ids = []
        for j in live:
            att = j.last_attempt
            if JobState(read[j.id]) in ACTIVE and att is not None and JobState(att.state) in ACTIVE:
                # No end time: the poll asks the backend how it really ended (cancelled, or
                # completed before the scancel arrived: "cancel too late").
                att.state, att.reason = JobState.CANCELLED.value, CANCELLED_BY_OPERATOR
                if att.backend_id:
                    ids.append(att.backend_id)
        if ids:
            ctx.backend.cancel(ids)
        return sorted(j.key for j in live)


def auto_retry(ctx: Context) -> list[str]:
    """The daemon's own retries ([desinight] auto_retry): every job whose latest attempt
    ended NODE_FAIL, TIMEOUT or OUT_OF_MEMORY and that has attempts left is resubmitted, with
    the policy of learn.py (the node excluded, time or memory grown), recorded in its history
    like an operator's resubmit. A FAILED job (the step's own non-zero exit) is left for an
    operator. Returns the keys re-planned."""
    from .learn import AUTOMATIC
    if not ctx.cfg.auto_retry:
        return []
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        keys = [j.key for j in s.scalars(select(Job).where(
            Job.production_id == prod.id, Job.state.in_([st.value for st in AUTOMATIC])))
            if len(j.attempts) < ctx.cfg.max_attempts]
    done: list[str] = []
    for key in keys:
        try:
            done += resubmit(ctx, job=key, actor=ctx.actor).replanned
        except DesinightError as e:   # taken by an operator meanwhile: theirs stands
            log.info("auto_retry_skipped", extra={"fields": {"job": key, "why": str(e)}})
    return done
