"""Failure-signature policies (issue 15): NODE_FAIL -> the retry excludes that node (sbatch
--exclude, recorded in the job's history); the daemon's automatic retry ([desinight]
auto_retry) takes NODE_FAIL/TIMEOUT/OUT_OF_MEMORY but never a science step's own non-zero
exit, which a manual resubmit still retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlalchemy import select

from desinight import orchestrate as O
from desinight.batch.base import BackendJob, Resources, SubmitRequest
from desinight.core.slurm import sbatch_argv
from desinight.core.states import JobState
from desinight.db.engine import transaction
from desinight.db.models import Job, StateEvent
from desinight.ingest import ingest_night
from desinight.learn import next_resources
from desinight.retry import auto_retry, resubmit
from tests.rawfixture import N

BIAS = f"{N}/biasnight"


def _start(ctx) -> str:
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    return ctx.backend.by_name("biasnight")[-1]


def _end(ctx, bid: str, state: JobState, exit_code: int | None = None, node: str | None = None):
    ctx.backend.jobs[bid] = BackendJob(bid, state, exit_code=exit_code, node=node)
    O.poll(ctx, O.utc_now())


def _state(ctx, key: str) -> str:
    with transaction(ctx.sessions) as s:
        return s.scalar(select(Job.state).where(Job.key == key))


def test_node_fail_retry_excludes_the_node(ctx, raw_night, fake_backend):
    _end(ctx, _start(ctx), JobState.NODE_FAIL, node="nid007")
    assert _state(ctx, BIAS) == "node_fail"
    res = resubmit(ctx, job=BIAS)
    assert res.learned[BIAS] == "exclude node nid007 (node failed)"
    O.submit_ready(ctx, O.utc_now())
    req = fake_backend.requests[fake_backend.by_name("biasnight")[-1]]
    assert req.resources.exclude == "nid007"
    assert "--exclude=nid007" in sbatch_argv(req)
    assert "#SBATCH --exclude=nid007\n" in req.script.read_text()
    with transaction(ctx.sessions) as s:
        why = s.scalars(select(StateEvent.reason).join(Job, Job.id == StateEvent.job_id)
                        .where(Job.key == BIAS, StateEvent.to_state == "planned")).all()
    assert why[-1] == "resubmitted: exclude node nid007 (node failed)"
    # a second node failure elsewhere adds that node; the first stays excluded
    _end(ctx, fake_backend.by_name("biasnight")[-1], JobState.NODE_FAIL, node="nid003")
    resubmit(ctx, job=BIAS)
    O.submit_ready(ctx, O.utc_now())
    assert fake_backend.requests[fake_backend.by_name("biasnight")[-1]].resources.exclude == \
        "nid003,nid007"


def test_auto_retry_takes_node_fail_but_not_a_step_failure(ctx, raw_night, fake_backend):
    ctx.cfg = ctx.cfg.with_overrides(auto_retry=True)
    _end(ctx, _start(ctx), JobState.NODE_FAIL, node="nid007")
    assert BIAS in auto_retry(ctx)
    assert _state(ctx, BIAS) == "planned"
    O.submit_ready(ctx, O.utc_now())
    _end(ctx, fake_backend.by_name("biasnight")[-1], JobState.FAILED, exit_code=3)
    assert auto_retry(ctx) == [] and _state(ctx, BIAS) == "failed"
    assert resubmit(ctx, job=BIAS).replanned[0] == BIAS        # an operator still may


def test_auto_retry_is_off_by_default(ctx, raw_night, fake_backend, tmp_path):
    _end(ctx, _start(ctx), JobState.TIMEOUT)
    assert auto_retry(ctx) == [] and _state(ctx, BIAS) == "timeout"
    from desinight.config import load_config
    (tmp_path / "on.toml").write_text("[desinight]\nauto_retry = true\n")
    assert load_config(tmp_path / "on.toml").auto_retry is True
    ctx.cfg = ctx.cfg.with_overrides(auto_retry=True)     # a TIMEOUT is retried, grown
    assert auto_retry(ctx)[0] == BIAS and _state(ctx, BIAS) == "planned"


def test_exclude_argv():
    req = SubmitRequest(name="n", tag="t", comment="c", script=Path("/x/job.sh"),
                        attempt_dir=Path("/x"), log=Path("/x/job.log"),
                        resources=Resources(exclude="nid001,nid002"))
    argv = sbatch_argv(req)
    assert argv[-2:] == ["--exclude=nid001,nid002", "/x/job.sh"]
    assert not any(a.startswith("--exclude") for a in sbatch_argv(
        SubmitRequest(name="n", tag="t", comment="c", script=Path("/x/job.sh"),
                      attempt_dir=Path("/x"), log=Path("/x/job.log"))))
    res, note = next_resources({"time_minutes": 10}, {"time_minutes": 10, "exclude": "nid1"},
                               "failed", {}, node="nid2")
    assert res["exclude"] == "nid1" and note is None     # only a NODE_FAIL adds its node


@pytest.mark.slow
def test_daemon_retries_a_timeout_by_itself(tmp_path, monkeypatch):
    """The daemon with auto_retry: a TIMEOUT is resubmitted with 1.5x the time, up to
    max_attempts, with no operator (local backend, time limits scaled down)."""
    from sqlalchemy import create_engine

    from desinight.db.models import Attempt
    from tests.daemonkit import cli, fast_templates, start_daemon, stop_daemon, wait_for, \
        write_config
    from tests.rawfixture import write_night
    from tests.test_learn import _script_time
    monkeypatch.setenv("DESINIGHT_LOCAL_TIME_SCALE", "0.005")     # 2 min -> 0.6 s
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl",
                                                           overrides={"stdstars": "sleep 60"}),
                        extra="[kinds.stdstars]\ntime_minutes = 2\n")
    conf.write_text(conf.read_text().replace(
        'backend = "local"', 'backend = "local"\nmax_attempts = 2\nauto_retry = true'))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    std = f"{N}/stdstars/1000"
    proc = start_daemon(conf, tmp_path / "daemon.log")
    try:
        engine = create_engine(f"sqlite:///{tmp_path / 'state' / 'desinight.db'}")

        def two_timeouts() -> bool:     # read the database, not a CLI per look: cheap
            with engine.connect() as c:
                return list(c.scalars(select(Attempt.state).join(Job).where(Job.key == std)
                                      .order_by(Attempt.number))) == ["timeout", "timeout"]
        wait_for(two_timeouts, timeout=180, interval=0.5, what="stdstars timed out twice")
        engine.dispose()
    finally:
        stop_daemon(proc)
    assert _script_time(tmp_path, std, 1) == 2 and _script_time(tmp_path, std, 2) == 3
    assert "time 2 -> 3 min (timed out)" in cli(conf, "history", std).stdout
