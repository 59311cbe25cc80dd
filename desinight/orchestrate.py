"""The work of one tick: plan, submit, poll (ingest is in ``ingest.py``). Used by
`desinight ingest` and the daemon.

Each function takes a session factory and does its own short transactions, because
submission must follow the outbox pattern: the intent (an attempt row without backend id)
is committed *before* the backend is called, and the id right after. After a crash,
``reconcile`` settles intents without ids against the backend before anything new is
submitted, so a job is never submitted twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, selectinload, sessionmaker

from . import alerts
from .batch.base import Backend, BackendJob, Resources, SubmitRequest
from .batch.exitfile import read_exits
from .batch.render import job_name, render_script, step_command, write_script
from .config import Config
from .core import defaults as D
from .core.errors import BackendError
from .core import kinds as K
from .core.planner import plan_night
from .core.states import ACTIVE, BROKEN, JobState
from .db import bulk, repo
from .db.engine import transaction
from .db.models import Attempt, Job, JobEdge, Production, utcnow
from .depcheck import check_parents
from .testhooks import crash_point
from .transitions import daemon_actor, move_job, transition

log = logging.getLogger("desinight")

#: an intent older than this with no id and no trace in the backend was never submitted
LOST_INTENT_AFTER = timedelta(seconds=60)
#: a job the backend has forgotten, with no exit record after this long, is UNKNOWN
FORGOTTEN_AFTER = timedelta(minutes=5)


@dataclass
class Context:
    cfg: Config
    sessions: sessionmaker[Session]
    backend: Backend
    production: str
    on_event: Callable[[str, dict], None] = field(default=lambda event, fields: None)
    #: throttle: at most this many jobs queued or running in the backend at once (campaigns)
    max_queued: int | None = None
    #: log alert events (failures, quarantines, ...) at WARNING/ERROR: the daemon; a CLI
    #: command keeps them at INFO (its console shows the outcome in its own words)
    loud: bool = False
    #: who the state moves of this context's ticks are recorded as (daemon, campaign:NAME)
    actor: str = field(default_factory=daemon_actor)
    #: a campaign's context: under the user-queue ceiling it leaves the nightly reserve free
    campaign: bool = False
    #: record ready jobs whose outputs exist as recorded completed, not run (adopt.py; opt-in)
    adopt: bool = False
    #: seconds the last poll's backend query took (None: no query); the daemon's poll
    #: budget keeps 5x this between queries (``pollclock.py``)
    poll_latency_s: float | None = None
    #: directories of the attempts the last poll left queued or running (None: it failed
    #: before knowing); the daemon watches them for exit records without a query of its own
    active_dirs: set[Path] | None = None

    def event(self, name: str, **fields) -> None:
        log.log(alerts.level_of(name) if self.loud else logging.INFO, name, extra={"fields": fields})
        self.on_event(name, fields)

    @property
    def tag(self) -> str:
        return f"desinight:{self.production}"


def resources_for(cfg: Config, kind: str, cameras: int = 0, exposures: int = 0) -> Resources:
    """The kind's resources (registry < [slurm] site placement < [kinds.NAME]), grown for a
    job of ``cameras`` cameras and ``exposures`` exposures by the kind's scaling."""
    over = cfg.kinds.get(kind, {})
    spec = {"account": cfg.slurm_account, "qos": cfg.slurm_qos, "partition": cfg.slurm_partition,
            "constraint": cfg.slurm_constraint, **D.KIND_RESOURCES.get(kind, {}),
            **{k: v for k, v in over.items() if k not in K.SCALING_KEYS}}
    return Resources(**K.scaled(kind, spec, cameras, exposures, over))


def kind_env(cfg: Config) -> list[tuple[str, str]]:
    """What a job's script exports so its step runner knows the configured extra kinds."""
    return [("DESINIGHT_KIND_MODULES", ",".join(cfg.kind_modules))] if cfg.kind_modules else []


def job_resources(cfg: Config, jobs, by_kind: dict[str, dict]) -> dict[str, dict]:  # noqa: ANN001
    """``by_kind`` plus, per job key, the resources of each job whose size scales (cameras,
    exposures): what ``bulk.save_jobs`` stores with each new job."""
    out = dict(by_kind)
    for pj in jobs:
        res = resources_for(cfg, pj.kind, len(pj.cameras), len(pj.expids)).__dict__
        if res != by_kind.get(pj.kind):
            out[pj.key] = dict(res)
    return out


# --- plan ----------------------------------------------------------------------------------
def plan(ctx: Context, night: int, closed: bool | None = None) -> int:
    """Add the jobs the night's data now allow; returns how many were added (or released).

    New calibrations may release science held on this night or, as fallbacks, on later
    nights (an earlier night ingested late): those nights are re-planned too."""
    res = {k: resources_for(ctx.cfg, k).__dict__ for k in K.names()}
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        nrow = repo.ensure_night(s, prod, night)
        if closed:
            nrow.closed = True
        total = _plan_one(ctx, s, prod, night, nrow.closed, res)
        if total:
            for later in repo.nights_with_held(s, prod, after=night):
                total += _plan_one(ctx, s, prod, later, repo.ensure_night(s, prod, later).closed, res)
        return total


def _plan_one(ctx: Context, s: Session, prod: Production, night: int, closed: bool,
              res: dict) -> int:
    from .calib_choice import plan_inputs   # chosen, override file, or the checked fallback
    exps, calibs = plan_inputs(s, ctx.cfg, prod, night, repo.exposure_infos(s, prod, night))
    from .db.tiles import history_for       # the tiles' earlier nights: cumulative redshifts
    from .plan_extras import plan_extras    # calibration-set rule, neighbouring darks
    p = plan_night(night, exps, repo.job_keys(s, prod, night), closed=closed,
                   held=repo.held_keys(s, prod, night),
                   history=history_for(ctx.cfg, s, prod, night, exps), **calibs,
                   **plan_extras(s, ctx.cfg, prod, night))
    n = repo.save_plan(s, prod, p, job_resources(ctx.cfg, p.jobs, res), ctx.actor)
    if n or p.released:
        ctx.event("planned", night=night, jobs=n, released=len(p.released))
    return n + len(p.released)


# --- submit --------------------------------------------------------------------------------
def attempt_dir(cfg: Config, job: Job, number: int) -> Path:
    return cfg.prod_dir.resolve() / "run" / job.key / f"attempt-{number}"


def _settle_dep_failed(ctx: Context, s: Session, prod: Production) -> int:
    """Mark waiting jobs whose upstream broke as dep_failed, to a fixed point (each pass
    reaches one more generation). One query per pass: fast at campaign scale."""
    total = 0
    while True:
        rows = bulk.broken_waiting(s, prod)
        if not rows:
            return total
        why: dict[int, str] = {}
        for child_id, key, state, reason in rows:
            why.setdefault(child_id, reason if state == JobState.DEP_FAILED.value and reason
                           else f"upstream {key} {state}")
        moved = transition(s, list(why), JobState.DEP_FAILED, why, ctx.actor,
                           expect=[JobState.PLANNED, JobState.HELD], set_reason=True).moved
        if not moved:
            return total    # all taken by someone else meanwhile: nothing more to settle
        total += len(moved)


def _upstream_reason(parent: Job) -> str:
    """Name the root failure, not the nearest dep_failed link of the chain."""
    if parent.state == JobState.DEP_FAILED.value and parent.reason:
        return parent.reason
    return f"upstream {parent.key} {parent.state}"


def _root_cause(s: Session, job: Job) -> str | None:
    broken = [p for p in repo.parents_of(s, [job.id])[job.id] if JobState(p.state) in BROKEN]
    return _upstream_reason(broken[0]) if broken else None


def _ready(s: Session, prod: Production, limit: int | None = None) -> list[tuple[Job, list[str]]]:
    """PLANNED jobs whose parents are all completed or queued with a known id (one query,
    oldest first, at most ``limit``), each with the backend ids it must wait for.

    A completed parent adds no dependency (SLURM may have purged its id, and an unknown
    afterok id is silently satisfied); a queued parent adds its current backend id."""
    ids = bulk.ready_job_ids(s, prod, limit)
    if not ids:
        return []
    jobs = s.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)
                     .options(selectinload(Job.attempts), selectinload(Job.exposures))).all()
    parents = repo.parents_of(s, ids)
    out = []
    for job in jobs:
        deps = [p.last_attempt.backend_id for p in parents[job.id]
                if JobState(p.state) in ACTIVE]
        out.append((job, deps))
    return out


def user_room(ctx: Context, used: int) -> int:
    """Submissions this round may add under ``desinight.max_user_jobs`` when the user has
    ``used`` jobs queued or running: nightly work may fill the ceiling, a campaign stops
    ``nightly_reserve`` short of it, so the night always finds room."""
    cfg = ctx.cfg
    reserve = cfg.max_user_jobs // 10 if cfg.nightly_reserve is None else cfg.nightly_reserve
    return max(0, cfg.max_user_jobs - (reserve if ctx.campaign else 0) - used)


def submit_ready(ctx: Context, now: datetime) -> int:
    """Submit every job whose parents allow it, in waves (a wave's ids feed the next).

    Under a ceiling on all of the user's jobs (``desinight.max_user_jobs``) the round holds
    the state dir's queue lock (the daemon, `campaign run` and CLI submitters take turns) and
    asks the backend for the user's count once (one ``squeue --me``), then submits at most
    ``user_room`` jobs. Raises ``BackendError`` (after recording it for `status`) when the
    backend refuses."""
    if not ctx.cfg.max_user_jobs:
        return _submit_waves(ctx, now, None)
    with transaction(ctx.sessions) as s:    # nothing to submit: no lock, no squeue
        if not bulk.ready_job_ids(s, repo.get_production(s, ctx.production), 1):
            return _submit_waves(ctx, now, [0])    # still settles dep_failed
    from .service import FileLock   # service owns FileLock; imported late (no cycle)
    lock = FileLock(ctx.cfg.state_dir.resolve() / "user-queue.lock")
    lock.acquire(wait=True)
    try:
        budget = [user_room(ctx, ctx.backend.count_user_jobs())]
        return _submit_waves(ctx, now, budget)
    finally:
        lock.release()


def _submit_waves(ctx: Context, now: datetime, budget: list[int] | None) -> int:
    total = 0
    python = sys.executable
    submitted_now: set[str] = set()   # backend ids of this call's earlier waves
    first = True
    while True:
        with transaction(ctx.sessions) as s:
            prod = repo.get_production(s, ctx.production)
            if first:   # later waves only move planned jobs to submitted: nothing new broke
                _settle_dep_failed(ctx, s, prod)
                first = False
            intents = []
            room = None
            if ctx.max_queued is not None:
                room = max(0, ctx.max_queued - repo.count_active(s, prod))
            if budget is not None:      # the user-queue ceiling's room left this round
                room = budget[0] if room is None else min(room, budget[0])
            ready = _ready(s, prod, room) if room != 0 else []
            # Parents asked in the backend right before sbatch: no afterok on a purged id.
            # Not parents this call submitted moments ago (an earlier wave): SLURM keeps an
            # ended id for MinJobAge (300 s), so asking would only load slurmctld (2 calls
            # per wave, most of a production-cadence night's queries).
            fresh = [(job, deps) for job, deps in ready if deps and set(deps) <= submitted_now]
            ask = [(job, deps) for job, deps in ready if not (deps and set(deps) <= submitted_now)]
            asked = any(deps for _, deps in ask)      # check_parents polls only then
            checked, _waiting = check_parents(ctx.backend, ask)
            ready = sorted(checked + fresh, key=lambda jd: jd[0].id)
            adopted = _adopt(ctx, s, ready) if ctx.adopt else set()
            ready = [(job, deps) for job, deps in ready if job.id not in adopted]
            if asked and ctx.backend.poll_warning:
                # The parent check found SLURM half-down (slurmctld not answering): say so in
                # status now. The sbatch that follows may block until the controller is back,
                # and the poll that would otherwise report the outage waits behind it.
                repo.set_service(s, prod, "backend_error", f"submit: {ctx.backend.poll_warning}", now)
            # Compare-and-set first: a job an operator cancelled since _ready read it stays put.
            moved = transition(s, [job.id for job, _ in ready], JobState.SUBMITTED,
                               "submission intent", ctx.actor, expect=[JobState.PLANNED],
                               values={"reason": None},
                               attempts={job.id: len(job.attempts) + 1 for job, _ in ready}).moved_ids
            amps = repo.bad_amps_by_expid(s, prod) if moved else {}
            for job, deps in ready:
                if job.id not in moved:
                    continue
                number = len(job.attempts) + 1
                adir = attempt_dir(ctx.cfg, job, number)
                script = adir / "job.sh"
                cmd = step_command(python, job.kind, job.night, job.expids, job.tileid,
                                   job.cameras, job.calib_night,
                                   repo.bad_amps_for(amps, job.kind, job.expids),
                                   calib_nights=job.calib_nights)
                res = Resources(**job.resources) if job.resources else resources_for(ctx.cfg, job.kind)
                name = job_name(ctx.production, job.id, job.kind)
                write_script(script, render_script(
                    ctx.cfg.templates_dir, job.kind, job_key=job.key, job_name=name,
                    attempt=number, production=ctx.production, attempt_dir=adir,
                    script_path=script, raw_root=ctx.cfg.raw_root.resolve(), tag=f"{ctx.tag}:{job.id}:{number}",
                    redux_root=ctx.cfg.redux_root.resolve(), command=cmd, resources=res,
                    launcher=ctx.cfg.mpi_launcher, extra_env=kind_env(ctx.cfg), now=now))
                att = Attempt(job=job, number=number, backend=ctx.backend.name,
                              comment=f"{ctx.tag}:{job.id}:{number}", attempt_dir=str(adir),
                              script_path=str(script), log_path=str(adir / "job.log"),
                              command=" ".join(cmd), depends_on=",".join(deps),
                              state=JobState.SUBMITTED.value, intent_at=now)
                s.add(att)
                intents.append((att, job, res, name))
            s.flush()
            reqs = [(att.id, SubmitRequest(name=name, tag=ctx.tag, comment=att.comment,
                                           script=Path(att.script_path),
                                           attempt_dir=Path(att.attempt_dir),
                                           log=Path(att.log_path),
                                           depends_on=tuple(att.depends_on.split(",")) if att.depends_on else (),
                                           resources=res))
                    for att, job, res, name in intents]
        if not reqs and not adopted:
            return total
        # The intents are committed: now call the backend, recording each id at once.
        for att_id, req in reqs:
            try:
                bid = ctx.backend.submit(req)
                crash_point("after_sbatch")   # tests: die between sbatch and the id write
            except BackendError as e:
                with transaction(ctx.sessions) as s:
                    prod = repo.get_production(s, ctx.production)
                    repo.set_service(s, prod, "backend_error", f"submit: {e}", now)
                ctx.event("submit_failed", comment=req.comment, error=str(e))
                raise   # the intent stays: the next tick's reconcile settles it
            with transaction(ctx.sessions) as s:
                att = s.get(Attempt, att_id)
                att.backend_id, att.submitted_at = bid, now
            total += 1
            if budget is not None:
                budget[0] -= 1
            submitted_now.add(bid)
            ctx.event("submitted", job=req.name, backend_id=bid)
        with transaction(ctx.sessions) as s:   # this wave went through: sbatch works again
            repo.clear_backend_error(s, repo.get_production(s, ctx.production), "submit", now)


def _adopt(ctx: Context, s: Session, ready: list[tuple[Job, list[str]]]) -> set[int]:
    """Ready jobs whose outputs already exist as recorded: completed through the one door,
    never submitted (their dependents become ready in the next wave)."""
    from .adopt import REASON, adoptable
    ids = [job.id for job, _ in ready if adoptable(ctx.cfg.prod_dir.resolve(), job)]
    moved = transition(s, ids, JobState.COMPLETED, REASON, ctx.actor,
                       expect=[JobState.PLANNED]).moved_ids if ids else set()
    for job, _ in ready:
        if job.id in moved:
            ctx.event("adopted", job=job.key)
    return set(moved)


#: reason given to an intent that never reached the backend (reconcile voids it)
LOST_REASON = "submission lost (never reached the backend)"


def reconcile(ctx: Context, now: datetime, settled: bool = False) -> int:
    """Give every attempt its backend id, also when the daemon died between sbatch and
    recording it; void intents that never reached the backend.

    The backend is asked first (``find``: by the attempt's tag, live and ended jobs); an
    intent it does not list but whose job wrote its exit record takes the id from the record
    (the job ran, the listing lagged: ``sacct -S`` shows an end ~4 s late); the state is then
    left to the poll, which asks the backend with that id. Only a record without any id (a
    backend that has none) settles the attempt directly. ``settled`` (daemon start) also
    fills the ids of attempts that earlier versions settled from their record without asking
    (after 141 kills with a slow sbatch, 2 completed attempts had none)."""
    fixed = 0
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        orphans = [a for a in repo.active_attempts(s, prod) if not a.backend_id]
        old = _settled_without_id(s, prod, ctx.backend.name, now) if settled else []
        if not orphans and not old:
            return 0
        try:
            known = ctx.backend.find(ctx.tag)
        except BackendError as e:
            repo.set_service(s, prod, "backend_error", f"find: {e}", now)
            return 0
        repo.clear_backend_error(s, prod, "find", now)
        for att in old:
            if att.comment in known:
                att.backend_id = known[att.comment]
                fixed += 1
                ctx.event("reconciled", comment=att.comment, backend_id=att.backend_id, settled=True)
        records = read_exits(ctx.cfg, orphans)   # parsed in a reader process, tag checked
        for att in orphans:
            rec = records.get(att.id)
            bid = known.get(att.comment) or (str(rec.get("backend_id") or "") if rec else "")
            if bid:
                att.backend_id = bid
                att.submitted_at = att.submitted_at or now
                fixed += 1
                ctx.event("reconciled", comment=att.comment, backend_id=att.backend_id)
                continue
            if rec is not None:   # a record without any id: nothing else to ask
                _finish(ctx, s, att, rec["state"], rec["exit_code"], None, rec["start"], rec["end"],
                        rec.get("host"))
                fixed += 1
            elif now - att.intent_at > LOST_INTENT_AFTER or not ctx.backend.capabilities.can_lag:
                # Never reached the backend: this attempt is void; plan the job again (a
                # legal SUBMITTED -> PLANNED move: the submission was lost, not undone).
                att.state, att.reason = JobState.CANCELLED.value, LOST_REASON
                if att.job.last_attempt is att:
                    move_job(s, att.job, JobState.PLANNED, LOST_REASON, ctx.actor,
                             expect=[JobState.SUBMITTED], attempt=att.number)
                fixed += 1
                ctx.event("intent_lost", comment=att.comment)
    return fixed


def _settled_without_id(s: Session, prod: Production, backend: str, now: datetime) -> list[Attempt]:
    """Ended attempts of this backend with no id that were not voided as lost, from the span
    ``find`` covers (a week)."""
    return list(s.scalars(select(Attempt).join(Job).where(
        Job.production_id == prod.id, Attempt.backend == backend, Attempt.backend_id.is_(None),
        Attempt.state.not_in([st.value for st in ACTIVE]),
        (Attempt.reason.is_(None)) | (Attempt.reason != LOST_REASON),
        Attempt.intent_at > now - timedelta(days=7))))


# --- poll ----------------------------------------------------------------------------------
#: an operator's cancel, recorded on the job and its attempt (see ``retry.cancel``)
CANCELLED_BY_OPERATOR = "cancelled by operator"


def _finish(ctx: Context, s: Session, att: Attempt, state: JobState, exit_code, reason, start,
            end, node, batch: dict | None = None) -> None:
    """Record how an attempt ended (the backend's or the exit record's word: the truth), and
    move its job there if it is the job's latest attempt.

    The job moves only from the state this poll read (compare-and-set): an operator's move
    committed meanwhile wins, except that a cancel which reached an attempt that had already
    ended is corrected to that end ("cancel too late: completed")."""
    too_late = att.state == JobState.CANCELLED.value and state is not JobState.CANCELLED
    att.state = state.value
    att.exit_code = exit_code if exit_code is not None else att.exit_code
    att.reason = (f"cancel too late: {state.value}" if too_late else reason or att.reason)
    att.started_at = start or att.started_at
    att.ended_at = end or att.ended_at or (utcnow() if too_late or state is JobState.CANCELLED
                                           else None)
    att.node = node or att.node
    job = att.job
    if job.last_attempt is not att or job.state == state.value:
        return
    why = (reason or (f"exit code {exit_code}" if exit_code else state.value)
           if state in BROKEN else None)
    read = job.state
    if read == JobState.CANCELLED.value:
        why = f"cancel too late: {state.value}"
    if batch is not None and why is None:
        # a plain end (completed): moved with the others of its (read, new) state pair in
        # one compare-and-set by _finish_batch; a poll often ends several jobs at once
        batch.setdefault((read, state), {})[job.id] = att.number
        return
    if move_job(s, job, state, why, ctx.actor, expect=[read], set_reason=why is not None,
                attempt=att.number) or state is JobState.CANCELLED:
        return
    _lost_race(ctx, s, job.id, state, att.number)


def _lost_race(ctx: Context, s: Session, job_id: int, state: JobState, number: int) -> None:
    """Lost the compare-and-set: an operator moved the job since this poll read it. Their
    move stands, unless it was a cancel that came after the attempt had ended."""
    if s.scalar(select(Job.state).where(Job.id == job_id)) == JobState.CANCELLED.value:
        transition(s, [job_id], state, f"cancel too late: {state.value}", ctx.actor,
                   expect=[JobState.CANCELLED], set_reason=True, attempts={job_id: number})


def _finish_batch(ctx: Context, s: Session, batch: dict) -> None:
    """The ends ``_finish`` deferred: one compare-and-set per (read state, new state)."""
    for (read, state), numbers in batch.items():
        out = transition(s, list(numbers), state, None, ctx.actor, expect=[read], attempts=numbers)
        if state is not JobState.CANCELLED:
            for job_id in out.refused:
                _lost_race(ctx, s, job_id, state, numbers[job_id])


def poll(ctx: Context, now: datetime) -> dict[str, int]:
    """One look at every active attempt: one backend call, then exit records for what the
    backend cannot tell (lag, purge, outage)."""
    changes: dict[str, int] = {}
    ctx.poll_latency_s = None
    ctx.active_dirs = None
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        # Active attempts, and operator cancels not yet confirmed by the backend (SLURM says
        # how they really ended: cancelled, or completed before the scancel arrived).
        active = [a for a in repo.active_attempts(s, prod, unconfirmed_cancels=True) if a.backend_id]
        if not active:   # nothing to ask: every state the database holds is current
            repo.set_service(s, prod, "last_poll", now.isoformat(), now)
            repo.set_service(s, prod, "states_as_of", now.isoformat(), now)
            ctx.active_dirs = set()
            return changes
        # every attempt of those jobs in one query: "is this the job's latest attempt?" below
        # (and in _finish) would otherwise lazy-load each job's attempts, one SELECT per job
        # per poll: the largest share of the daemon's CPU in a night (bench_overhead --profile)
        s.scalars(select(Job).where(Job.id.in_({a.job_id for a in active}))
                  .options(selectinload(Job.attempts))).all()
        try:
            t0 = time.monotonic()
            seen = ctx.backend.poll([a.backend_id for a in active])
            ctx.poll_latency_s = time.monotonic() - t0
            repo.set_service(s, prod, "states_as_of", now.isoformat(), now)
            # Half an answer (sacct or squeue down) still gets used, but shows in status.
            if ctx.backend.poll_warning:
                repo.set_service(s, prod, "backend_error", f"poll: {ctx.backend.poll_warning}", now)
            else:
                repo.clear_backend_error(s, prod, "poll", now)
        except BackendError as e:
            seen = {}
            repo.set_service(s, prod, "backend_error", f"poll: {e}", now)
            ctx.event("poll_failed", error=str(e))
        records = read_exits(ctx.cfg, active)
        # Parents before the dependants the backend cancelled for them: a dependant's root
        # cause is read from its parents' rows, so their ends must be written first. (The
        # database returns attempts in no set order: PostgreSQL's changes with every update.)
        active.sort(key=lambda a: (_never_satisfied(seen.get(a.backend_id)), a.job_id))
        recancel: list[str] = []
        # queued -> running moves, one compare-and-set per (read state, new state) after the
        # loop instead of one per job: most of a night's moves, and of the daemon's CPU
        live: dict[tuple[str, JobState], dict[int, int]] = {}
        ended: dict[tuple[str, JobState], dict[int, int]] = {}   # plain ends, the same way
        for att in active:
            old = att.state
            bj = seen.get(att.backend_id)
            rec = records.get(att.id)
            if bj is not None and JobState(bj.state) not in ACTIVE:
                state = JobState(bj.state)
                reason = bj.reason
                if _never_satisfied(bj):
                    state = JobState.DEP_FAILED
                if state is JobState.DEP_FAILED:
                    reason = _root_cause(s, att.job) or reason
                # sacct down, squeue's final word: the exit code is in the job's own record
                code = bj.exit_code if bj.exit_code is not None or rec is None else rec["exit_code"]
                _finish(ctx, s, att, state, code, reason, bj.start, bj.end or (rec or {}).get("end"),
                        bj.node, ended)
            elif rec is not None:
                # The job's own record is newer than a lagging or silent backend.
                _finish(ctx, s, att, rec["state"], rec["exit_code"], None, rec["start"], rec["end"],
                        rec.get("host"), ended)
            elif bj is not None:
                if att.state == JobState.CANCELLED.value:
                    # An operator's scancel is on its way (asked again: the cancel may have
                    # come while the daemon's sbatch was in flight): wait for the real end.
                    recancel.append(att.backend_id)
                    continue
                att.state = bj.state.value
                att.reason = bj.reason if bj.state is JobState.PENDING else None   # `check` reads it
                att.started_at = bj.start or att.started_at
                att.node = bj.node or att.node
                if att.job.last_attempt is att and att.job.state != bj.state.value:
                    live.setdefault((att.job.state, bj.state), {})[att.job.id] = att.number
            elif (not ctx.backend.capabilities.can_lag
                  or now - (att.submitted_at or att.intent_at) > FORGOTTEN_AFTER):
                if not seen and ctx.backend.capabilities.can_lag:
                    continue   # backend unreachable: wait, do not guess
                if att.state == JobState.CANCELLED.value:
                    _finish(ctx, s, att, JobState.CANCELLED, None, None, None, None, None)
                    continue   # forgotten after our scancel: the cancel stands
                _finish(ctx, s, att, JobState.UNKNOWN, None, "backend has no record and no exit file",
                        None, None, None)
            if att.state != old:
                changes[att.state] = changes.get(att.state, 0) + 1
        for (read, to), numbers in live.items():
            transition(s, list(numbers), to, None, ctx.actor, expect=[read], attempts=numbers)
        _finish_batch(ctx, s, ended)
        s.flush()
        if recancel:
            try:
                ctx.backend.cancel(recancel)
            except BackendError as e:
                repo.set_service(s, prod, "backend_error", f"cancel: {e}", now)
        _settle_dep_failed(ctx, s, prod)
        _cancel_orphaned_dependents(ctx, s, prod)
        repo.set_service(s, prod, "last_poll", now.isoformat(), now)
        live_states = {st.value for st in ACTIVE}
        dirs = {Path(a.attempt_dir) for a in active if a.state in live_states and a.attempt_dir}
    ctx.active_dirs = dirs   # once committed: what active_attempt_dirs would read now
    return changes


def _never_satisfied(bj: BackendJob | None) -> bool:
    """Cancelled by the backend because a parent can never complete (SLURM's word)."""
    return (bj is not None and JobState(bj.state) is JobState.CANCELLED and bool(bj.reason)
            and "DependencyNeverSatisfied" in bj.reason)


def _cancel_orphaned_dependents(ctx: Context, s: Session, prod: Production) -> None:
    """Queued jobs whose upstream broke can never run: cancel them in the backend (SLURM
    without kill_invalid_depend keeps them PENDING forever) and mark them dep_failed."""
    # one indexed query first: a queued job with a broken parent is rare, and loading every
    # queued job with its parents on each poll was a fifth of the daemon's CPU in a night
    parent = aliased(Job)
    suspects = s.scalars(select(Job.id).join(JobEdge, JobEdge.child_id == Job.id)
                         .join(parent, parent.id == JobEdge.parent_id)
                         .where(Job.production_id == prod.id,
                                Job.state.in_([JobState.SUBMITTED.value, JobState.PENDING.value]),
                                parent.state.in_([st.value for st in BROKEN]))).all()
    if not suspects:
        return
    queued = s.scalars(select(Job).where(Job.id.in_(set(suspects))).order_by(Job.id)
                       .options(selectinload(Job.attempts))).all()
    parents = repo.parents_of(s, [j.id for j in queued])
    to_cancel = []
    for job in queued:
        broken = [p for p in parents[job.id] if JobState(p.state) in BROKEN]
        att = job.last_attempt
        if broken and att is not None and att.backend_id:
            why = _upstream_reason(broken[0])
            if not move_job(s, job, JobState.DEP_FAILED, why, ctx.actor, set_reason=True,
                            attempt=att.number):
                continue
            to_cancel.append(att.backend_id)
            att.state, att.reason = JobState.DEP_FAILED.value, why
    if to_cancel:
        try:
            ctx.backend.cancel(to_cancel)
        except BackendError as e:
            repo.set_service(s, prod, "backend_error", f"cancel: {e}", None)
        else:
            repo.clear_backend_error(s, prod, "cancel", utcnow())


def submit_work_waiting(ctx: Context) -> bool:
    """Is there anything for ``reconcile`` + ``submit_ready`` to do: a planned job, or an
    intent without a backend id? Two indexed lookups; the daemon's idle submit pass runs only
    then, instead of its full reads every few seconds of a night whose jobs are all queued."""
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        planned = s.scalar(select(Job.id).where(Job.production_id == prod.id,
                                                Job.state == JobState.PLANNED.value).limit(1))
        if planned is not None:
            return True
        return s.scalar(select(Attempt.id).join(Job).where(
            Job.production_id == prod.id, Attempt.backend_id.is_(None),
            Attempt.state.in_([st.value for st in ACTIVE])).limit(1)) is not None


def active_attempt_dirs(ctx: Context) -> set[Path]:
    """Directories of attempts queued or running in the backend: where an exit record
    appearing means a job ended (the daemon's cue for an early poll)."""
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        return {Path(d) for d in s.scalars(select(Attempt.attempt_dir).join(Job).where(
            Job.production_id == prod.id, Attempt.backend_id.is_not(None),
            Attempt.state.in_([st.value for st in ACTIVE])))}


def night_done(ctx: Context, night: int) -> bool:
    """True when no job of the night can still change without a human."""
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        open_states = [JobState.PLANNED, *ACTIVE]
        return not repo.jobs_in_state(s, prod, open_states, night=night)


def utc_now() -> datetime:
    return utcnow()
