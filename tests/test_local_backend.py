"""The local backend: the shared contract, plus what only a one-machine backend has to show
(CPU budget, jobs outliving the submitter, concurrent submitters, lost runners)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desinight.batch.base import Backend, SubmitRequest
from desinight.batch.local import LocalBackend
from desinight.core.errors import BackendError
from desinight.core.states import JobState
from tests.backend_contract import BackendContract, Jobs, make_job, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCALE = 0.02          # 1 minute -> 1.2 s; the default 5 minutes -> 6 s


class TestLocalContract(BackendContract):
    timeout_minutes = 1
    timeout_wait_s = 15.0

    @pytest.fixture
    def backend(self, tmp_path):
        return LocalBackend(tmp_path / "spool", cpus=2, time_scale=SCALE)


@pytest.fixture
def be(tmp_path):
    return LocalBackend(tmp_path / "spool", cpus=2, time_scale=SCALE)


@pytest.fixture
def jobs(be, tmp_path):
    j = Jobs(be, tmp_path, tag="local")
    yield j
    be.cancel(j.ids)


def state_file(be: LocalBackend, bid: str) -> dict:
    return json.loads((be.spool / "jobs" / bid / "state.json").read_text())


def test_is_a_backend(be):
    assert isinstance(be, Backend) and be.name == "local"


def test_cpu_budget_is_never_exceeded(be, jobs, tmp_path):
    spans = tmp_path / "spans"
    spans.mkdir()
    body = f'echo "$(date +%s.%N)" > {spans}/$DESINIGHT_BACKEND_ID.start; sleep 1; ' \
           f'echo "$(date +%s.%N)" > {spans}/$DESINIGHT_BACKEND_ID.end'
    t0 = time.monotonic()
    ids = [jobs.submit(f"j{i}", body) for i in range(4)]
    got = wait_for(be, ids, timeout=30)
    assert time.monotonic() - t0 >= 2.0
    assert all(got[i].state is JobState.COMPLETED for i in ids)
    measured = [(float((spans / f"{i}.start").read_text()), float((spans / f"{i}.end").read_text()))
                for i in ids]
    reported = [(got[i].start.timestamp(), got[i].end.timestamp()) for i in ids]
    for span in (measured, reported):
        most = max(sum(1 for s, e in span if s <= t < e) for t, _ in span)
        assert most == 2, span            # the budget is used, and never exceeded


def test_job_wider_than_the_budget_is_clamped_and_runs(be, jobs):
    bid = jobs.submit("wide", "true", cpus=8)
    assert wait_for(be, [bid])[bid].state is JobState.COMPLETED
    assert json.loads((be.spool / "jobs" / bid / "request.json").read_text())["cpus"] == 2


def test_job_environment_cwd_and_request_record(be, jobs, tmp_path):
    bid = jobs.submit("env", 'echo "id=$DESINIGHT_BACKEND_ID dir=$DESINIGHT_ATTEMPT_DIR cwd=$PWD"',
                      deps=())
    got = wait_for(be, [bid])[bid]
    adir = tmp_path / "runs" / "env"
    assert f"id={bid} dir={adir} cwd={adir}" in jobs.log("env")
    assert got.node and got.exit_code == 0
    req = json.loads((be.spool / "jobs" / bid / "request.json").read_text())
    assert req["comment"] == "local:env:1" and req["script"] == str(adir / "job.sh")
    assert req["time_limit_s"] == pytest.approx(5 * 60 * SCALE)


def test_jobs_outlive_the_submitting_process(tmp_path):
    req = make_job(tmp_path, "orphan", "sleep 1; echo done")
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from desinight.batch.local import LocalBackend
from desinight.batch.base import SubmitRequest
be = LocalBackend(Path({str(tmp_path / 'spool')!r}))
print(be.submit(SubmitRequest(name='x', tag='t', comment='t:1:1', script=Path({str(req.script)!r}),
      attempt_dir=Path({str(req.attempt_dir)!r}), log=Path({str(req.log)!r}))))
"""
    bid = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    gone = time.time()                    # the submitter has exited
    be = LocalBackend(tmp_path / "spool")
    got = wait_for(be, [bid])[bid]
    assert got.state is JobState.COMPLETED and got.end.timestamp() > gone
    assert "done" in req.log.read_text()


def test_concurrent_submitters_get_distinct_ids(tmp_path):
    script = tmp_path / "noop.sh"
    script.write_text("true\n")
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from desinight.batch.local import LocalBackend
from desinight.batch.base import SubmitRequest
be = LocalBackend(Path({str(tmp_path / 'spool')!r}), cpus=2)
ids = [be.submit(SubmitRequest(name='x', tag='t', comment='t', script=Path({str(script)!r}),
       attempt_dir=Path({str(tmp_path)!r}), log=Path({str(tmp_path / 'log')!r}))) for _ in range(5)]
print(' '.join(ids))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    ids = [i for p in procs for i in p.communicate(timeout=60)[0].split()]
    assert len(ids) == 15 and len(set(ids)) == 15
    assert sorted(map(int, ids)) == list(range(1, 16))
    wait_for(LocalBackend(tmp_path / "spool"), ids)


def test_unknown_parent_counts_as_failed(be, jobs):
    bid = jobs.submit("orphaned", "true", deps=["424242"])
    got = wait_for(be, [bid])[bid]
    assert got.state is JobState.CANCELLED and got.reason == "DependencyNeverSatisfied"
    assert jobs.exit_record("orphaned") is None


def test_lost_runner_is_failed_and_does_not_block_dependants(be, jobs):
    bid = jobs.submit("victim", "sleep 30")
    wait_for(be, [bid], states={JobState.RUNNING})
    child = jobs.submit("child", "true", deps=[bid])
    st = state_file(be, bid)
    os.kill(st["runner_pid"], signal.SIGKILL)          # e.g. the runner was OOM-killed
    got = wait_for(be, [bid, child], timeout=15)
    assert got[bid].state is JobState.FAILED and "runner lost" in got[bid].reason
    assert got[bid].start is not None
    assert got[child].state is JobState.CANCELLED
    assert got[child].reason == "DependencyNeverSatisfied"
    # the job itself outlived its runner: cancel still reaches its process group
    pgid = st["job_pgid"]
    os.killpg(pgid, 0)
    be.cancel([bid])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the orphaned job was not killed")


def test_signalled_runner_ends_its_job_failed(be, jobs):
    bid = jobs.submit("term", "sleep 30")
    wait_for(be, [bid], states={JobState.RUNNING})
    st = state_file(be, bid)
    os.kill(st["runner_pid"], signal.SIGTERM)          # e.g. shutdown
    got = wait_for(be, [bid], timeout=15)[bid]
    assert got.state is JobState.FAILED and "SIGTERM" in got.reason
    assert jobs.exit_record("term")["exit_code"] == 143   # the job's trap ran
    with pytest.raises(ProcessLookupError):
        os.killpg(st["job_pgid"], 0)


def test_missing_script_is_refused(be, tmp_path):
    with pytest.raises(BackendError):
        be.submit(SubmitRequest(name="x", tag="t", comment="t:1:1", script=tmp_path / "nope.sh",
                                attempt_dir=tmp_path / "a", log=tmp_path / "a" / "log"))


def test_time_scale_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DESINIGHT_LOCAL_TIME_SCALE", "0.5")
    assert LocalBackend(tmp_path / "s1").time_scale == 0.5
    assert LocalBackend(tmp_path / "s2", time_scale=2).time_scale == 2.0
    monkeypatch.delenv("DESINIGHT_LOCAL_TIME_SCALE")
    assert LocalBackend(tmp_path / "s3").time_scale == 1.0


def test_fractional_minutes_time_out(tmp_path):
    be = LocalBackend(tmp_path / "spool", time_scale=1)
    req = make_job(tmp_path, "frac", "sleep 30", minutes=0.02)     # 1.2 s
    bid = be.submit(req)
    got = wait_for(be, [bid], timeout=15)[bid]
    assert got.state is JobState.TIMEOUT and got.reason.startswith("time limit")


def test_find_prefers_the_latest_submission_of_a_comment(be, tmp_path):
    req = make_job(tmp_path, "dup", "true", tag="dup")
    first, second = be.submit(req), be.submit(req)
    assert be.find("dup") == {"dup:dup:1": second}
    wait_for(be, [first, second])


def test_poll_ignores_ids_it_never_issued(be):
    assert be.poll(["1", "../etc", "abc", "0", ""]) == {}
    be.cancel(["1", "../etc"])                          # harmless
