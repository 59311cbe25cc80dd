"""Scheduling behaviour on the real local backend (issue 19 item 3): the max_queued throttle,
re-linking resubmitted jobs to the new afterok ids, cancel cascades, max_attempts and the
release of a held night. Jobs are real processes with real dependencies; the loop below is
the daemon's (poll, reconcile, submit) without its clock.

Kept on tests/fakes.py only (tests/test_orchestrate.py), because the local backend cannot be
made to fail that way on demand: a submit that fails (intent never reached the backend) and a
crash between the backend's id and its recording (the kill -9 of that moment is proven with the
real daemon in tests/test_daemon.py and, on SLURM, tests/test_slurm_ids.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from desinight import orchestrate as O
from desinight.app import open_context
from desinight.config import Config
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Job
from desinight.ingest import ingest_night
from desinight.retry import cancel, resubmit
from tests.daemonkit import fast_templates
from tests.rawfixture import N, write_exposure, write_night

pytestmark = pytest.mark.slow
LIVE = {"submitted", "running"}


def local_ctx(root: Path, overrides: dict[str, str] | None = None, db_url: str | None = None):
    cfg = Config(production="test", raw_root=root / "raw", redux_root=root / "redux",
                 state_dir=root / "state", backend="local", local_cpus=2,
                 db_url=db_url or f"sqlite:///{root / 'state' / 'desinight.db'}",
                 templates_dir=fast_templates(root / "tpl", run="sleep 0.2", overrides=overrides))
    ctx = open_context(cfg, create=True)
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    return ctx


def jobs(ctx) -> dict[str, Job]:
    with transaction(ctx.sessions) as s:
        return {j.key: j for j in s.scalars(select(Job))}


def states(ctx) -> dict[str, str]:
    return {k: j.state for k, j in jobs(ctx).items()}


def drive(ctx, done, timeout: float = 90, seen: list | None = None) -> None:
    """The daemon's round until ``done()``: poll, reconcile, submit (recording each round's
    live jobs in ``seen``)."""
    deadline = time.monotonic() + timeout
    while True:
        now = O.utc_now()
        O.poll(ctx, now)
        O.reconcile(ctx, now)
        O.submit_ready(ctx, now)
        if seen is not None:
            seen.append(sum(1 for s in states(ctx).values() if s in LIVE))
        if done():
            return
        assert time.monotonic() < deadline, f"not done after {timeout} s: {states(ctx)}"
        time.sleep(0.2)


def night_done(ctx, night: int = N):
    return lambda: O.night_done(ctx, night)


def last_id(ctx, key: str) -> str | None:
    """The backend id of the job's latest attempt."""
    with transaction(ctx.sessions) as s:
        return s.scalar(select(Job).where(Job.key == key)).attempts[-1].backend_id


def request(ctx, job: Job) -> dict:
    """What the local backend was asked to run for the job's latest attempt."""
    bid = last_id(ctx, job.key)
    return json.loads((ctx.cfg.state_dir.resolve() / "local-spool" / "jobs" / bid / "request.json").read_text())


def started(ctx, night: int = N) -> None:
    write_night(ctx.cfg.raw_root, night) if night == N else None
    ingest_night(ctx, night, O.utc_now())
    O.plan(ctx, night, closed=True)


def test_throttle_never_queues_more_than_max_queued(tmp_path):
    ctx = local_ctx(tmp_path)
    started(ctx)
    ctx.max_queued = 2
    seen: list[int] = []
    drive(ctx, night_done(ctx), seen=seen)
    assert set(states(ctx).values()) == {"completed"}
    assert max(seen) == 2          # full, and never beyond
    spool = list((tmp_path / "state" / "local-spool" / "jobs").glob("*/request.json"))
    assert len(spool) == 11        # one submission per job


def test_resubmit_relinks_dependents_to_the_new_ids(tmp_path, db_url):
    """On SQLite and PostgreSQL: re-planning and re-linking are the database's work."""
    fixed = tmp_path / "fixed"
    ctx = local_ctx(tmp_path, {"stdstars": f"test -e {fixed} || exit 3"}, db_url)
    started(ctx)
    drive(ctx, night_done(ctx))
    std = f"{N}/stdstars/1000"
    assert states(ctx)[std] == "failed"
    old_std = last_id(ctx, std)
    fixed.touch()
    res = resubmit(ctx, expid=26112403)
    assert set(res.replanned) == {std, f"{N}/fluxcalib/26112403", f"{N}/fluxcalib/26112404",
                                  f"{N}/redshift/1000/26112404"}
    O.submit_ready(ctx, O.utc_now())
    js = jobs(ctx)
    new_std = last_id(ctx, std)
    assert new_std not in (None, old_std)
    for key in (f"{N}/fluxcalib/26112403", f"{N}/fluxcalib/26112404"):
        # the completed science parent needs no dependency; the new stdstars id is waited on
        assert request(ctx, js[key])["depends_on"] == [new_std], key
    drive(ctx, night_done(ctx))
    assert set(states(ctx).values()) == {"completed"}
    with transaction(ctx.sessions) as s:
        assert [a.state for a in s.get(Job, js[std].id).attempts] == ["failed", "completed"]


def test_resubmit_stops_at_max_attempts(tmp_path):
    ctx = local_ctx(tmp_path, {"redshift": "exit 3"})
    started(ctx)
    z = f"{N}/redshift/1000/26112404"
    drive(ctx, night_done(ctx))
    for attempt in (2, 3):
        assert resubmit(ctx, job=z, max_attempts=3).replanned == [z]
        drive(ctx, night_done(ctx))
        with transaction(ctx.sessions) as s:
            assert [a.state for a in s.get(Job, jobs(ctx)[z].id).attempts] == ["failed"] * attempt
    res = resubmit(ctx, job=z, max_attempts=3)
    assert res.replanned == [] and "limit 3" in res.refused[z]


def test_cancel_takes_downstream_along_and_stops_the_running_job(tmp_path, db_url):
    """On SQLite and PostgreSQL: the cancel races the poll that settles it."""
    ctx = local_ctx(tmp_path, {"fiberflatnight": "sleep 120"}, db_url)
    started(ctx)
    ff = f"{N}/fiberflatnight"
    drive(ctx, lambda: states(ctx)[ff] == "running")
    keys = cancel(ctx, job=ff)
    assert ff in keys and f"{N}/redshift/1000/26112404" in keys and f"{N}/psfnight" not in keys
    drive(ctx, night_done(ctx))
    final = states(ctx)
    assert final[ff] == "cancelled"
    assert {final[k] for k in keys} == {"cancelled"}
    assert {s for k, s in final.items() if k not in keys} == {"completed"}   # psfnight & co
    with transaction(ctx.sessions) as s:
        assert s.get(Job, jobs(ctx)[ff].id).attempts[-1].state == "cancelled"


def test_held_night_is_released_when_an_earlier_night_brings_calibrations(tmp_path):
    ctx = local_ctx(tmp_path)
    n2 = 20261125
    write_exposure(ctx.cfg.raw_root, n2, 3, "SCIENCE", 2000)
    started(ctx, n2)
    O.submit_ready(ctx, O.utc_now())
    held = {k: s for k, s in states(ctx).items() if k.startswith(str(n2))}
    assert set(held.values()) == {"held"}
    assert not (tmp_path / "state" / "local-spool" / "jobs").exists() or \
        not list((tmp_path / "state" / "local-spool" / "jobs").iterdir())   # nothing submitted
    started(ctx)
    sci = jobs(ctx)[f"{n2}/science/26112503"]
    assert sci.state == "planned" and sci.calib_night == N
    drive(ctx, lambda: O.night_done(ctx, N) and O.night_done(ctx, n2))
    assert set(states(ctx).values()) == {"completed"}
    with transaction(ctx.sessions) as s:
        parents = {p.key for p in repo.parents_of(s, [sci.id])[sci.id]}
    assert parents == {f"{N}/biasnight", f"{N}/psfnight", f"{N}/fiberflatnight"}
