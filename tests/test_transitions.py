"""transitions.transition: the table is checked, the write is compare-and-set, what did not
move is reported, one event per move, and moves reach an ``on_move`` callback and the
module's listeners (the monitoring hook). SQLite and PostgreSQL."""

from __future__ import annotations

import socket

from sqlalchemy import select

from desinight import orchestrate as O
from desinight import transitions as T
from desinight.core.states import ExposureStatus, JobState
from desinight.db.engine import transaction
from desinight.db.models import Exposure, Job, StateEvent
from desinight.ingest import ingest_night
from tests.rawfixture import N

STD = f"{N}/stdstars/1000"


def _planned(ctx) -> dict[str, int]:
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    with transaction(ctx.sessions) as s:
        return dict(s.execute(select(Job.key, Job.id)).all())


def test_legal_moves_are_made_once_with_an_event_and_a_hook(ctx, raw_night):
    ids = _planned(ctx)
    seen: list[T.Move] = []
    heard: list[T.Move] = []
    T.LISTENERS.append(heard.append)
    try:
        with transaction(ctx.sessions) as s:
            out = T.transition(s, [ids[STD]], JobState.DEP_FAILED, "upstream x failed", "daemon",
                               set_reason=True, on_move=seen.append)
            again = T.transition(s, [ids[STD]], JobState.DEP_FAILED, "again", "daemon")
    finally:
        T.LISTENERS.remove(heard.append)
    assert [(m.key, m.job_kind, m.night, m.expids, m.old, m.new, m.reason) for m in out.moved] == [
        (STD, "stdstars", N, (26112403, 26112404), "planned", "dep_failed", "upstream x failed")]
    assert seen == heard == out.moved and out.moved[0].is_alert
    assert again.moved == [] and again.refused == {ids[STD]: "dep_failed"}   # not twice
    with transaction(ctx.sessions) as s:
        job = s.get(Job, ids[STD])
        assert (job.state, job.reason) == ("dep_failed", "upstream x failed")
        ev = s.scalars(select(StateEvent).where(StateEvent.job_id == job.id)).all()
    assert [(e.from_state, e.to_state, e.actor, e.host, e.attempt) for e in ev] == [
        ("planned", "dep_failed", "daemon", socket.gethostname(), None)]


def test_illegal_unexpected_and_missing_rows_do_not_move(ctx, raw_night):
    ids = _planned(ctx)
    with transaction(ctx.sessions) as s:
        illegal = T.transition(s, [ids[STD]], JobState.RUNNING, None, "daemon")   # planned -> running
        stale = T.transition(s, [ids[STD]], JobState.CANCELLED, "x", T.operator_actor(),
                             expect=[JobState.SUBMITTED])        # the caller read an older state
        missing = T.transition(s, [10**6], JobState.CANCELLED, "x", "daemon")
    assert illegal.refused == {ids[STD]: "planned"} and stale.refused == {ids[STD]: "planned"}
    assert missing.refused == {10**6: "missing"}
    with transaction(ctx.sessions) as s:
        assert s.get(Job, ids[STD]).state == "planned"
        assert s.scalars(select(StateEvent).where(StateEvent.job_id == ids[STD])).all() == []


def test_a_loaded_object_that_lost_the_race_is_refused(ctx, raw_night):
    """The compare-and-set is on the state the caller read: another session's committed move
    wins, and the loser's object is not written over it."""
    ids = _planned(ctx)
    with transaction(ctx.sessions) as s:
        job = s.get(Job, ids[STD])          # reads "planned"
        with transaction(ctx.sessions) as other:
            T.transition(other, [ids[STD]], JobState.CANCELLED, "cancelled by operator",
                         "operator:someone", set_reason=True)
        assert not T.move_job(s, job, JobState.SUBMITTED, "submission intent", "daemon")
    with transaction(ctx.sessions) as s:
        assert s.get(Job, ids[STD]).state == "cancelled"


def test_exposures_move_through_their_own_table(ctx, raw_night):
    _planned(ctx)
    with transaction(ctx.sessions) as s:
        exp = s.scalar(select(Exposure).where(Exposure.expid == 26112403))
        assert exp.status == "planned"
        bad = T.transition(s, [exp.id], ExposureStatus.INGESTED, None, "daemon")
        out = T.transition(s, [exp.id], ExposureStatus.QUARANTINED, "duplicate", "daemon",
                           values={"quarantine_reason": "duplicate"})
        assert bad.refused == {exp.id: "planned"}
        assert [(m.kind, m.key, m.old, m.new) for m in out.moved] == [
            ("exposure", "26112403", "planned", "quarantined")]
        assert (exp.status, exp.quarantine_reason) == ("quarantined", "duplicate")   # object kept true
        ev = s.scalars(select(StateEvent).where(StateEvent.exposure_id == exp.id)
                       .order_by(StateEvent.id)).all()
    assert [(e.from_state, e.to_state) for e in ev] == [("ingested", "planned"), ("planned", "quarantined")]


def test_a_cancel_that_lands_while_sbatch_is_in_flight_still_cancels(ctx, raw_night, fake_backend):
    """The operator cancels a job between the daemon's intent and its sbatch: the submission
    goes through, and the next poll scancels it again instead of waiting forever."""
    from desinight.retry import cancel
    ids = _planned(ctx)
    key = f"{N}/biasnight"
    real_submit = fake_backend.submit

    def submit(req):
        if req.comment.endswith(f":{ids[key]}:1"):
            assert key in cancel(ctx, job=key)      # and everything downstream
        return real_submit(req)
    fake_backend.submit = submit
    O.submit_ready(ctx, O.utc_now())
    bid = fake_backend.by_name("biasnight")[0]
    assert fake_backend.jobs[bid].state is JobState.PENDING      # the scancel found no id yet
    O.poll(ctx, O.utc_now())
    assert fake_backend.jobs[bid].state is JobState.CANCELLED    # asked again by the poll
    O.poll(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        job = s.get(Job, ids[key])
        att = job.last_attempt
        assert (job.state, att.state, att.backend_id) == ("cancelled", "cancelled", bid)
        assert att.ended_at is not None                          # confirmed: no longer polled
