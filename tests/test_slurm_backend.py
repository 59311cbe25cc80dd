"""SlurmBackend against the real local cluster (scripts/local-slurm up): real sbatch, sacct,
squeue, scancel; jobs are plain bash scripts writing the exit record as exitfile.py describes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from desinight.batch.base import Resources, SubmitRequest
from desinight.batch.exitfile import read_exit
from desinight.batch.slurm import run_command
from desinight.core import slurm as S
from desinight.core.errors import BackendError
from desinight.core.states import ACTIVE, JobState

pytestmark = pytest.mark.slurm

# The exit record, as the base template writes it: temp name then rename; TERM exits via EXIT.
PROLOGUE = r"""#!/bin/bash
d="$PWD"; start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
finish() {
  rc=$?; s=completed; [ $rc -eq 0 ] || s=failed
  printf '{"status": "%s", "exit_code": %d, "start": "%s", "end": "%s", "host": "%s", "backend_id": "%s"}\n' \
    "$s" "$rc" "$start" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$SLURM_JOB_ID" > "$d/exit.json.tmp.$$" \
    && mv -f "$d/exit.json.tmp.$$" "$d/exit.json"
}
trap finish EXIT
trap 'exit 143' TERM INT
"""


class Jobs:
    """Writes job scripts under tmp_path and builds their SubmitRequests."""

    def __init__(self, root: Path, backend):
        self.root, self.backend = root, backend
        self.tag = f"dntest:{uuid.uuid4().hex[:8]}"

    def req(self, key: str, body: str, depends_on=(), minutes: int = 5, **res) -> SubmitRequest:
        adir = self.root / key
        adir.mkdir(parents=True, exist_ok=True)
        script = adir / "job.sh"
        script.write_text(PROLOGUE + body + "\n")
        return SubmitRequest(name=f"dn-test-{key}", tag=self.tag, comment=f"{self.tag}:{key}:1",
                             script=script, attempt_dir=adir, log=adir / "job.log",
                             depends_on=tuple(depends_on),
                             resources=Resources(time_minutes=minutes, **res))

    def submit(self, key: str, body: str, depends_on=(), **kw) -> str:
        return self.backend.submit(self.req(key, body, depends_on, **kw))

    def wait(self, ids, timeout: float = 60.0, done=lambda j: j.state not in ACTIVE):
        """Poll until every id satisfies ``done``; returns the last poll."""
        end = time.monotonic() + timeout
        while True:
            got = self.backend.poll(list(ids))
            if all(i in got and done(got[i]) for i in ids):
                return got
            if time.monotonic() > end:
                pytest.fail(f"jobs {ids} not done after {timeout} s: {got}")
            time.sleep(0.5)

    def record(self, key: str, timeout: float = 10.0):
        end = time.monotonic() + timeout
        while (rec := read_exit(self.root / key)) is None and time.monotonic() < end:
            time.sleep(0.2)
        return rec


@pytest.fixture
def jobs(tmp_path, slurm_backend):
    return Jobs(tmp_path, slurm_backend)


def test_diamond_with_failed_branch_then_fixed_resubmission(jobs):
    # A -> (B, C) -> D, B fails: B failed, C completed, D cancelled by kill_invalid_depend.
    a = jobs.submit("A", "sleep 1")
    b = jobs.submit("B", "echo broken >&2; exit 3", [a])
    c = jobs.submit("C", "echo ok", [a])
    d = jobs.submit("D", "echo never", [b, c])
    got = jobs.wait([a, b, c, d])
    assert got[a].state is JobState.COMPLETED and got[a].exit_code == 0
    assert got[b].state is JobState.FAILED and got[b].exit_code == 3
    assert got[c].state is JobState.COMPLETED
    assert got[d].state is JobState.CANCELLED
    assert "DependencyNeverSatisfied" in got[d].reason   # the orchestrator makes it dep_failed
    assert got[d].start is None or got[d].node is None     # it never ran
    assert jobs.record("B")["exit_code"] == 3 and jobs.record("C")["exit_code"] == 0
    assert read_exit(jobs.root / "D") is None
    assert "broken" in (jobs.root / "B" / "job.log").read_text()

    # Fixed B resubmitted (A completed: no dependency); new D on new B only (C completed).
    b2 = jobs.submit("B2", "echo fixed", [])
    d2 = jobs.submit("D2", "echo done", [b2])
    got = jobs.wait([b2, d2])
    assert got[b2].state is JobState.COMPLETED and got[d2].state is JobState.COMPLETED
    assert jobs.record("D2")["backend_id"] == d2


def test_scancel_of_running_job_is_cancelled(jobs, slurm_backend):
    j = jobs.submit("run", "touch started; sleep 300 & wait")
    jobs.wait([j], done=lambda x: x.state is JobState.RUNNING)
    # RUNNING in sacct comes before the script reaches its traps: cancel once it says so,
    # else SIGTERM may land before the EXIT trap exists and no record is written.
    end = time.monotonic() + 20
    while not (jobs.root / "run" / "started").exists():
        assert time.monotonic() < end, "job never started its script"
        time.sleep(0.1)
    slurm_backend.cancel([j])
    got = jobs.wait([j], timeout=30)
    assert got[j].state is JobState.CANCELLED and got[j].reason == "CANCELLED by 0"
    assert jobs.record("run")["exit_code"] != 0   # SIGTERM went through the EXIT trap
    slurm_backend.cancel([j])   # already ended: ignored, no error


def test_unknown_id_is_left_out_and_refused_submission_raises(jobs, slurm_backend):
    assert slurm_backend.poll(["999999"]) == {}   # the orchestrator then reads its exit record
    with pytest.raises(BackendError, match="Memory specification"):
        jobs.submit("huge", "true", mem_mb=10 ** 9)


def test_afterok_on_unknown_id_is_accepted_and_runs(jobs):
    """The hazard the orchestrator avoids: SLURM takes afterok on an id it does not know
    (never existed, or purged after MinJobAge) as satisfied and runs the job at once."""
    j = jobs.submit("orphan", "echo ran", ["999999"])
    got = jobs.wait([j])
    assert got[j].state is JobState.COMPLETED


def test_find_recovers_ids_of_live_and_ended_jobs(jobs, slurm_backend):
    done = jobs.submit("done", "true")
    jobs.wait([done])
    live = jobs.submit("live", "sleep 300 & wait")
    try:
        # `sacct -S` (no -j) lists an ended job only ~2.5-4 s after `sacct -j` shows it ended
        # (measured); reconcile looks only at intents older than 60 s, so this lag is harmless.
        end = time.monotonic() + 20
        while f"{jobs.tag}:done:1" not in (found := slurm_backend.find(jobs.tag)):
            assert time.monotonic() < end, f"ended job not found: {found}"
            time.sleep(0.5)
        assert found[f"{jobs.tag}:live:1"] == live
        assert found[f"{jobs.tag}:done:1"] == done
        assert all(k.startswith(jobs.tag) for k in found)
    finally:
        slurm_backend.cancel([live])


def test_without_kill_invalid_depend(slurm_no_kill_invalid_depend, jobs, slurm_backend):
    """Sites without DependencyParameters=kill_invalid_depend: a backend opted in to
    --kill-on-invalid-dep=yes ([slurm] kill_on_invalid_dep) still has SLURM settle the child; by
    default (no flag) the child stays PENDING with DependencyNeverSatisfied forever, so poll
    reports it DEP_FAILED and scancels it."""
    from desinight.batch.slurm import SlurmBackend
    parent = jobs.submit("parent", "exit 1")
    ours = SlurmBackend(kill_on_invalid_dep=True).submit(jobs.req("ours", "echo never", [parent]))
    bare = jobs.submit("bare", "echo never", [parent])
    got = jobs.wait([parent, ours, bare], timeout=60)
    assert got[parent].state is JobState.FAILED
    assert got[ours].state is JobState.CANCELLED
    assert got[ours].reason.startswith("DependencyNeverSatisfied")   # -> dep_failed
    assert got[bare].state is JobState.DEP_FAILED
    assert got[bare].reason == f"DependencyNeverSatisfied (afterok:{parent}(failed))"
    assert slurm_backend.calls["scancel"] == 1
    # scancelled by that poll: SLURM no longer keeps it pending forever ...
    end = time.monotonic() + 15
    while not S.parse_sacct(run_command(S.sacct_argv([bare]))).get(bare, got[bare]).state \
            is JobState.CANCELLED:
        assert time.monotonic() < end, "never-satisfiable job was not cancelled"
        time.sleep(0.5)
    # ... and later polls of this backend still call it dep_failed (sacct reads "CANCELLED by 0")
    assert slurm_backend.poll([bare])[bare].state is JobState.DEP_FAILED


def test_poll_costs_one_sacct_call(jobs, slurm_backend):
    ids = [jobs.submit(f"n{i}", "true") for i in range(10)]
    jobs.wait(ids)
    before = dict(slurm_backend.calls)
    slurm_backend.poll(ids)
    assert slurm_backend.calls["sacct"] - before["sacct"] == 1
    assert slurm_backend.calls["squeue"] == before["squeue"]   # all final: no squeue needed


@pytest.mark.slow
def test_time_limit_is_timeout(jobs):
    j = jobs.submit("slow", "sleep 300 & wait", minutes=1)
    got = jobs.wait([j], timeout=180)
    assert got[j].state is JobState.TIMEOUT
    assert (got[j].end - got[j].start).total_seconds() >= 60


def test_accounting_down_falls_back_to_squeue_and_exit_records(jobs, slurm_backend):
    """sacct failing (slurmdbd down) must not stop the poll: real squeue gives the state word,
    the exit record the exit code. sacct is broken in the runner, not on the shared cluster."""
    from desinight.batch.slurm import SlurmBackend

    def no_accounting(argv, timeout):
        if argv[0] == "sacct":
            raise BackendError("sacct: error: Problem talking to the database: Connection refused")
        return run_command(argv, timeout)

    ok, bad = jobs.submit("ok", "true"), jobs.submit("bad", "exit 5")
    run = jobs.submit("run", "touch started; sleep 300 & wait")
    try:
        assert jobs.record("ok", 60) and jobs.record("bad", 60)
        degraded = SlurmBackend(runner=no_accounting)
        end = time.monotonic() + 20
        while True:   # squeue may still say COMPLETING for a moment after the record is written
            got = degraded.poll([ok, bad, run])
            if got[ok].state not in ACTIVE and got[bad].state not in ACTIVE:
                break
            assert time.monotonic() < end, got
            time.sleep(0.5)
        assert degraded.calls["sacct"] == degraded.calls["squeue"] >= 1
        # squeue's final word; the exit code comes from the job's record in the orchestrator
        assert got[ok].state is JobState.COMPLETED
        assert got[bad].state is JobState.FAILED and jobs.record("bad")["exit_code"] == 5
        assert got[run].state in (JobState.PENDING, JobState.RUNNING)
        assert "sacct failed" in degraded.poll_warning   # status shows the half answer
        assert slurm_backend.poll([ok]) and slurm_backend.poll_warning is None
    finally:
        slurm_backend.cancel([run])
