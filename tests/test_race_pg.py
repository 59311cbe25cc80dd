"""Two processes on one PostgreSQL database, one polling/submitting (the daemon) and one
cancelling/resubmitting (an operator), 200 rounds each: zero lost updates, every move in the
event table.

A lost update (a poll writing the end it read over a cancel committed meanwhile) would show as
a broken chain in a job's events (``running -> cancelled`` followed by ``running ->
completed``) or as a job whose state is not the last event's. Compare-and-set in
``transitions`` makes both impossible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from desinight import orchestrate as O
from desinight.core.states import ACTIVE, JobState, can_advance
from desinight.db.engine import transaction
from desinight.db.models import Attempt, Job, StateEvent
from desinight.ingest import ingest_night
from tests.rawfixture import N

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROUNDS = 200
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_poll_and_operator_racing_lose_no_update(ctx, cfg, raw_night, tmp_path):
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.race_worker", role, cfg.database_url,
                               str(tmp_path), str(ROUNDS), str(seed)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role, seed in (("daemon", 1), ("operator", 2))]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    daemon, operator = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert daemon["rounds"] == operator["rounds"] == ROUNDS
    assert operator["cancelled"] > 10 and operator["resubmitted"] > 10   # they really raced

    with transaction(ctx.sessions) as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        events = s.scalars(select(StateEvent).where(StateEvent.job_id.is_not(None))
                           .order_by(StateEvent.id)).all()
        live = s.execute(select(Attempt.job_id, func.count()).where(
            Attempt.state.in_([st.value for st in ACTIVE])).group_by(Attempt.job_id)).all()
    per_job: dict[int, list[StateEvent]] = {}
    for e in events:
        per_job.setdefault(e.job_id, []).append(e)
        assert can_advance(JobState(e.from_state), JobState(e.to_state)), (e.from_state, e.to_state)
    # every cancel and every re-plan the operator counted is at least one event, and the
    # daemon's own moves (submit, run, end) come on top of them
    assert len(events) > operator["cancelled"] + operator["resubmitted"]
    for jid, job in jobs.items():
        chain = per_job.get(jid, [])
        assert chain, f"{job.key} never moved"
        assert chain[0].from_state in (JobState.PLANNED.value, JobState.HELD.value)
        for a, b in zip(chain, chain[1:]):
            assert a.to_state == b.from_state, (
                f"lost update on {job.key}: event {a.id} {a.from_state}->{a.to_state} then "
                f"event {b.id} {b.from_state}->{b.to_state}")
        assert chain[-1].to_state == job.state, f"{job.key} is {job.state}, last event says {chain[-1].to_state}"
    assert all(n == 1 for _, n in live), live     # at most one live attempt per job
