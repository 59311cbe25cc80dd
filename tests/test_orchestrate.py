"""Ingest -> plan -> outbox submit -> poll, on SQLite and PostgreSQL, with the fake backend:
the cases a real backend cannot be made to produce on demand (a submit that fails, a crash
between the backend's id and its recording, listings that lag). Throttle, re-linking, cancel
cascades, max_attempts and held nights run on the local backend: tests/test_sched_local.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from desinight.core.errors import BackendError

from desinight import orchestrate as O
from desinight.ingest import ingest_night
from desinight.core.states import JobState
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Attempt, Exposure, Job, Rejection
from tests.rawfixture import N, write_exposure


def jobs(ctx):
    with transaction(ctx.sessions) as s:
        return {j.key: j for j in s.scalars(select(Job))}


def run_all(ctx, backend, fail: set[str] = frozenset(), night: int = N):
    """Drive the night to the end, completing jobs in the fake backend (failing some kinds)."""
    for _ in range(30):
        now = O.utc_now()
        O.submit_ready(ctx, now)
        for bid, bj in list(backend.jobs.items()):
            deps = backend.requests[bid].depends_on
            # afterok: runs only after its parents completed; a failed parent leaves it
            # pending forever (SLURM without kill_invalid_depend): desinight must cancel it
            if bj.state is JobState.PENDING and all(
                    backend.jobs[d].state is JobState.COMPLETED for d in deps):
                kind = backend.requests[bid].name.rsplit("-", 1)[1]
                backend.finish(bid, JobState.FAILED if kind in fail else JobState.COMPLETED,
                               1 if kind in fail else 0)
        O.poll(ctx, now)
        if O.night_done(ctx, night):
            return
    raise AssertionError(f"night {night} did not finish")


def test_ingest_is_idempotent_and_quarantines_bad_input(ctx, raw_night, cfg):
    write_exposure(cfg.raw_root, N, 8, "TWILIGHT")
    write_exposure(cfg.raw_root, N, 9, "SCIENCE", 1000, drop_keys=("EXPTIME",))
    # the same EXPID claimed by a second directory (another night)
    write_exposure(cfg.raw_root, 20261125, 0, "ZERO", expid=26112400)
    half = write_exposure(cfg.raw_root, N, 10, "ARC")
    (half / "request-26112410.json").unlink()       # transfer not finished
    counts = ingest_night(ctx, N, O.utc_now())
    assert counts == {"ingested": 5, "quarantined": 2, "incomplete": 1}
    assert ingest_night(ctx, N, O.utc_now()) == {"known": 7, "incomplete": 1}
    ingest_night(ctx, 20261125, O.utc_now())
    with transaction(ctx.sessions) as s:
        q = {e.expid: e.quarantine_reason for e in s.scalars(select(Exposure)) if e.quarantine_reason}
        rej = s.scalars(select(Rejection)).all()
    assert "unknown OBSTYPE 'TWILIGHT'" in q[26112408]
    assert "missing header keyword EXPTIME" in q[26112409]
    assert len(rej) == 1 and "duplicate EXPID 26112400" in rej[0].reason


def test_full_night_completes_and_replanning_adds_nothing(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    assert O.plan(ctx, N, closed=True) == 11
    assert O.plan(ctx, N, closed=True) == 0
    run_all(ctx, fake_backend)
    js = jobs(ctx)
    assert {j.state for j in js.values()} == {"completed"}
    # one submission per job, and afterok ids only for parents not yet completed
    assert fake_backend.calls["submit"] == 11


def test_dependencies_use_backend_ids_of_queued_parents(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    # nothing ran yet: the whole graph is queued in waves, children pointing at parent ids
    assert fake_backend.calls["submit"] == 11
    psf = fake_backend.by_name("psfnight")[0]
    arc = fake_backend.by_name("arc")[0]
    assert fake_backend.requests[psf].depends_on == (arc,)
    assert set(fake_backend.requests[fake_backend.by_name("science")[0]].depends_on) == {
        fake_backend.by_name("biasnight")[0], psf, fake_backend.by_name("fiberflatnight")[0]}


def test_failure_fails_only_dependents(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    run_all(ctx, fake_backend, fail={"stdstars"})
    js = jobs(ctx)
    assert js[f"{N}/stdstars/1000"].state == "failed"
    for k in (f"{N}/fluxcalib/26112403", f"{N}/fluxcalib/26112404", f"{N}/redshift/1000/26112404"):
        assert js[k].state == "dep_failed"
        assert "stdstars" in js[k].reason
    assert js[f"{N}/science/26112403"].state == "completed"
    # the 3 queued dependents were cancelled in the backend, not left pending forever
    below = fake_backend.by_name("fluxcalib") + fake_backend.by_name("redshift")
    assert len(below) == 3 and {fake_backend.jobs[b].state for b in below} == {JobState.CANCELLED}


def test_crash_between_sbatch_and_recording_id_never_duplicates(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    fake_backend.crash_after_submit = True
    try:
        O.submit_ready(ctx, O.utc_now())
    except KeyboardInterrupt:
        pass
    fake_backend.crash_after_submit = False
    with transaction(ctx.sessions) as s:
        orphan = s.scalars(select(Attempt).where(Attempt.backend_id.is_(None))).all()
    assert len(orphan) == 1            # intent recorded, id lost
    assert O.reconcile(ctx, O.utc_now()) == 1
    run_all(ctx, fake_backend)
    assert fake_backend.calls["submit"] == 11     # the lost one was found, not resubmitted
    assert {j.state for j in jobs(ctx).values()} == {"completed"}


def test_reconcile_takes_the_id_from_the_exit_record_before_settling(ctx, raw_night, fake_backend):
    """The backend's listing missed a job that already ended (sacct -S lags its end): the
    attempt takes the SLURM id its job wrote into the exit record, and the poll then asks the
    backend how it ended, instead of settling it from the record with no id."""
    import json
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    fake_backend.crash_after_submit = True
    with pytest.raises(KeyboardInterrupt):
        O.submit_ready(ctx, O.utc_now())
    fake_backend.crash_after_submit = False
    bid = next(iter(fake_backend.requests))
    fake_backend.finish(bid)
    lost = fake_backend.requests.pop(bid)        # find() no longer lists it
    (lost.attempt_dir / "exit.json").write_text(json.dumps(
        {"status": "completed", "exit_code": 0, "start": "2026-11-25T07:00:00Z",
         "end": "2026-11-25T07:00:05Z", "host": "n1", "backend_id": bid, "tag": lost.comment}))
    assert O.reconcile(ctx, O.utc_now()) == 1
    with transaction(ctx.sessions) as s:
        att = s.scalars(select(Attempt).where(Attempt.comment == lost.comment)).one()
        assert att.backend_id == bid and att.state == "submitted"   # left to the poll
    O.poll(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        assert s.scalars(select(Attempt).where(Attempt.comment == lost.comment)).one().state == "completed"


def test_reconcile_at_start_fills_ids_of_attempts_settled_without_one(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    run_all(ctx, fake_backend)
    with transaction(ctx.sessions) as s:   # as left by older versions: completed, no id
        att = s.scalars(select(Attempt).order_by(Attempt.id)).first()
        bid, att.backend_id = att.backend_id, None
    assert O.reconcile(ctx, O.utc_now()) == 0          # a tick: not looked for
    assert O.reconcile(ctx, O.utc_now(), settled=True) == 1
    with transaction(ctx.sessions) as s:
        assert s.scalars(select(Attempt).order_by(Attempt.id)).first().backend_id == bid


def test_intent_that_never_reached_backend_is_replanned(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    fake_backend.down = True
    with pytest.raises(BackendError, match="controller not responding"):
        O.submit_ready(ctx, O.utc_now())
    fake_backend.down = False
    later = O.utc_now() + O.LOST_INTENT_AFTER + timedelta(seconds=1)
    assert O.reconcile(ctx, later) == 1
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        assert "submit" in repo.service_state(s, prod)["backend_error"].value
    run_all(ctx, fake_backend)
    assert {j.state for j in jobs(ctx).values()} == {"completed"}


def test_backend_outage_is_reported_not_fatal(ctx, raw_night, fake_backend):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    fake_backend.down = True
    O.poll(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        assert "slurmdbd not responding" in repo.service_state(s, prod)["backend_error"].value
    assert {j.state for j in jobs(ctx).values()} <= {"submitted", "pending"}
    fake_backend.down = False
    run_all(ctx, fake_backend)
    assert {j.state for j in jobs(ctx).values()} == {"completed"}


def test_one_word_targets_an_exposure_a_night_or_a_job(ctx, raw_night, fake_backend):
    """`resubmit`/`cancel` TARGET: an EXPID, a night or a job (key or id), from the database."""
    from desinight.core.errors import NotFound
    from desinight.retry import cancel, resolve_target
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        psf = repo.get_job(s, prod, f"{N}/psfnight")
        assert resolve_target(s, prod, "26112403") == (26112403, None, None)
        assert resolve_target(s, prod, str(N)) == (None, None, N)
        assert resolve_target(s, prod, f"{N}/psfnight") == (None, f"{N}/psfnight", None)
        assert resolve_target(s, prod, str(psf.id)) == (None, str(psf.id), None)
        with pytest.raises(NotFound, match=r"20261130 is no EXPID, night or job id of production "
                                            r"test; nearest: .*20261124"):
            resolve_target(s, prod, "20261130")
    got = cancel(ctx, target=str(N))
    assert len(got) == 11 and {j.state for j in jobs(ctx).values()} == {"cancelled"}
    assert {bj.state for bj in fake_backend.jobs.values()} == {JobState.CANCELLED}


def test_failing_submit_stays_reported_while_polls_succeed(ctx, raw_night, fake_backend, monkeypatch):
    """slurmctld down, slurmdbd up: sacct answers every poll, sbatch fails. The submit error
    must stay in status until a submission succeeds, not be wiped by the next good poll."""
    def backend_error():
        with transaction(ctx.sessions) as s:
            return repo.service_state(s, repo.get_production(s, ctx.production))["backend_error"].value
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    ctx.max_queued = 2          # leave jobs to submit once the first two have ended
    O.submit_ready(ctx, O.utc_now())
    first, second = sorted(fake_backend.jobs)
    fake_backend.finish(second, JobState.COMPLETED, 0)   # first stays running: polls have work
    O.poll(ctx, O.utc_now())
    real_submit = fake_backend.submit

    def no_controller(req):
        raise BackendError("sbatch: error: Unable to contact slurm controller (connect failure)")
    monkeypatch.setattr(fake_backend, "submit", no_controller)
    with pytest.raises(BackendError):
        O.submit_ready(ctx, O.utc_now())
    O.poll(ctx, O.utc_now())
    assert backend_error().startswith("submit: sbatch: error: Unable to contact")
    monkeypatch.setattr(fake_backend, "submit", real_submit)
    fake_backend.finish(first, JobState.COMPLETED, 0)
    later = O.utc_now() + O.LOST_INTENT_AFTER + timedelta(seconds=1)
    O.reconcile(ctx, later)
    ctx.max_queued = None
    run_all(ctx, fake_backend)
    assert {j.state for j in jobs(ctx).values()} == {"completed"}
    assert backend_error() is None


@pytest.mark.parametrize("status,steps,expect", [
    ("quarantined", {}, "quarantined"),
    ("ingested", {}, "waiting"),
    ("planned", {"science": "completed", "stdstars": "failed", "redshift": "dep_failed"}, "failed"),
    ("planned", {"science": "held"}, "held"),
    ("planned", {"science": "completed", "redshift": "completed"}, "done"),
    ("planned", {"science": "completed", "redshift": "planned"}, "processing"),
    ("planned", {"science": "running"}, "processing"),
    ("planned", {"science": "planned"}, "planned"),
])
def test_exposure_progress(status, steps, expect):
    from desinight.status import exposure_progress
    assert exposure_progress(status, steps) == expect



def test_a_final_word_without_exit_code_takes_it_from_the_jobs_record(ctx, raw_night, fake_backend):
    """sacct down: squeue says FAILED but has no exit code; exit records are read in one
    place (the orchestrator), and the job's own record supplies it."""
    import json
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    bid = fake_backend.by_name("biasnight")[0]
    req = fake_backend.requests[bid]
    fake_backend.finish(bid, JobState.FAILED, exit_code=None)
    (req.attempt_dir / "exit.json").write_text(json.dumps(
        {"status": "failed", "exit_code": 5, "start": "2026-11-25T07:00:00Z",
         "end": "2026-11-25T07:00:05Z", "host": "n1", "backend_id": bid, "tag": req.comment}))
    O.poll(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        att = s.scalars(select(Attempt).where(Attempt.comment == req.comment)).one()
        assert (att.state, att.exit_code) == ("failed", 5)
        assert att.job.reason == "exit code 5"


def test_a_dependant_cancelled_with_its_parent_names_the_parent(ctx, raw_night, fake_backend):
    """SLURM with kill_invalid_depend cancels a dependant as soon as its parent fails, so one
    poll sees both ended: the dependant is dep_failed naming its parent, whatever order the
    database returns them in (PostgreSQL returns a row updated last, the running parent, last)."""
    from desinight.batch.base import BackendJob
    fake_backend.kill_invalid_depend = True
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    bias = fake_backend.by_name("biasnight")[0]
    below = [i for i, r in fake_backend.requests.items() if bias in r.depends_on]
    assert below
    fake_backend.jobs[bias] = BackendJob(bias, JobState.RUNNING)
    O.poll(ctx, O.utc_now())
    fake_backend.finish(bias, JobState.FAILED, 1)
    O.poll(ctx, O.utc_now())
    assert {fake_backend.jobs[b].reason for b in below} == {"DependencyNeverSatisfied"}
    with transaction(ctx.sessions) as s:
        by_comment = {a.comment: a.job for a in s.scalars(select(Attempt))}
        for b in below:
            job = by_comment[fake_backend.requests[b].comment]
            assert (job.state, job.reason) == ("dep_failed", f"upstream {N}/biasnight failed"), job.key


def test_poll_hands_back_the_dirs_of_the_attempts_it_left_queued(ctx, raw_night, fake_backend):
    """The daemon watches these dirs for exit records instead of querying them after each
    poll: they must be what the query would read (queued/running attempts only)."""
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    for bid in fake_backend.by_name("biasnight") + fake_backend.by_name("arc"):
        fake_backend.finish(bid, JobState.COMPLETED, 0)
    O.poll(ctx, O.utc_now())
    assert ctx.active_dirs == O.active_attempt_dirs(ctx)
    assert 0 < len(ctx.active_dirs) < fake_backend.calls["submit"]
    with transaction(ctx.sessions) as s:   # the ended ones are out, each queued one is in
        ended = {a.attempt_dir for a in s.scalars(select(Attempt).where(Attempt.state == "completed"))}
    assert ended and not ended & {str(d) for d in ctx.active_dirs}
