"""Property test (hypothesis): random interleavings of backend progress, poll, submit, cancel,
resubmit, reconcile, plan, a backend outage and a daemon kill between sbatch and recording
the id, against the in-memory fake backend (tests/fakes.py): the local backend runs real
processes on its own clock and cannot be stepped one event at a time.

Invariants: no illegal move is ever recorded; at most one live attempt per job; once the
backend is quiet (every job it holds runs to its end), every job reaches a final state.
Bounded (20 examples of at most 25 steps) so it runs in CI in well under a minute.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from desinight import orchestrate as O
from desinight.app import open_context
from desinight.config import Config
from desinight.core.errors import BackendError, DesinightError
from desinight.core.states import ACTIVE, FINAL, JobState, can_advance, can_move_exposure
from desinight.db import repo
from desinight.db.engine import make_engine, session_factory, transaction
from desinight.db.models import Attempt, Job, StateEvent
from desinight.ingest import ingest_night
from desinight.retry import cancel, resubmit
from tests.fakes import FakeBackend
from tests.rawfixture import N, write_night

N_JOBS = 11


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Config, Path]:
    """A database with the night ingested (not yet planned), copied for every example."""
    root = tmp_path_factory.mktemp("props")
    cfg = Config(production="test", raw_root=root / "raw", redux_root=root / "redux",
                 state_dir=root / "state", db_url=f"sqlite:///{root / 'template.db'}")
    write_night(cfg.raw_root)
    ctx = open_context(cfg, backend=FakeBackend(), create=True)
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    ingest_night(ctx, N, O.utc_now())
    ctx.sessions.kw["bind"].dispose()
    return cfg, root


STEPS = st.lists(st.one_of(
    st.tuples(st.just("progress"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("poll")), st.tuples(st.just("submit")), st.tuples(st.just("reconcile")),
    st.tuples(st.just("plan")), st.tuples(st.just("kill")), st.tuples(st.just("outage")),
    st.tuples(st.just("cancel"), st.integers(0, N_JOBS - 1)),
    st.tuples(st.just("resubmit"), st.integers(0, N_JOBS - 1))), min_size=1, max_size=25)


def _check(ctx) -> None:
    with transaction(ctx.sessions) as s:
        for job, a, b in s.execute(select(StateEvent.job_id, StateEvent.from_state, StateEvent.to_state)):
            legal = can_advance(a, b) if job is not None else can_move_exposure(a, b)
            assert legal and a != b, (a, b)
        live = s.execute(select(Attempt.job_id, func.count()).where(
            Attempt.state.in_([st.value for st in ACTIVE])).group_by(Attempt.job_id)).all()
        assert all(n == 1 for _, n in live), live


def _progress(fb: FakeBackend, pick: int, fail: bool) -> None:
    """The cluster runs one job whose afterok parents have completed (or fails it)."""
    runnable = [bid for bid, bj in fb.jobs.items() if bj.state is JobState.PENDING and all(
        fb.jobs[d].state is JobState.COMPLETED for d in fb.requests[bid].depends_on if d in fb.jobs)]
    if runnable:
        bid = runnable[pick % len(runnable)]
        fb.finish(bid, JobState.FAILED if fail else JobState.COMPLETED, 1 if fail else 0)


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_random_interleavings_keep_the_invariants(template, steps):
    cfg0, root = template
    db = root / "example.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(root / "template.db", db)
    cfg = cfg0.with_overrides(db_url=f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    fb = FakeBackend()
    ctx = O.Context(cfg=cfg, sessions=session_factory(engine), backend=fb, production="test")
    try:
        keys: list[str] = []
        for step in steps:
            now = O.utc_now()
            op = step[0]
            try:
                if op == "progress":
                    _progress(fb, step[1], step[2])
                elif op == "poll":
                    O.poll(ctx, now)
                elif op == "submit":
                    O.submit_ready(ctx, now)
                elif op == "reconcile":
                    O.reconcile(ctx, now + O.LOST_INTENT_AFTER + timedelta(seconds=1))
                elif op == "plan":
                    O.plan(ctx, N, closed=True)
                elif op == "kill":       # the daemon dies between sbatch and recording the id
                    fb.crash_after_submit = True
                    try:
                        O.submit_ready(ctx, now)
                    except KeyboardInterrupt:
                        pass
                    fb.crash_after_submit = False
                elif op == "outage":     # sbatch refuses: the intent stays without an id
                    fb.down = True
                    try:
                        O.submit_ready(ctx, now)
                    finally:
                        fb.down = False
                else:
                    if not keys:
                        with transaction(ctx.sessions) as s:
                            keys = list(s.scalars(select(Job.key).order_by(Job.id)))
                    if keys:
                        key = keys[step[1] % len(keys)]
                        if op == "cancel":
                            cancel(ctx, job=key)
                        else:
                            resubmit(ctx, job=key, max_attempts=100)
            except (BackendError, DesinightError):
                pass   # refused (nothing to resubmit, backend down): what the CLI reports
            _check(ctx)

        # The backend goes quiet: everything it holds runs to its end, the daemon catches up.
        O.plan(ctx, N, closed=True)
        for _ in range(60):
            now = O.utc_now() + O.LOST_INTENT_AFTER + timedelta(seconds=1)
            for _ in range(N_JOBS):
                _progress(fb, 0, False)
            O.poll(ctx, now)
            O.reconcile(ctx, now)
            O.submit_ready(ctx, now)
            _check(ctx)
            if O.night_done(ctx, N):
                break
        with transaction(ctx.sessions) as s:
            states = dict(s.execute(select(Job.key, Job.state)).all())
        assert len(states) == N_JOBS
        assert all(JobState(v) in FINAL for v in states.values()), states
    finally:
        engine.dispose()
