"""The reusable ``Backend`` contract: every backend must pass it (huey's storage-test style).

Use it by subclassing the mixin in a ``test_*.py`` module and providing a ``backend`` fixture::

    class TestLocalContract(BackendContract):
        timeout_minutes = 1                     # whatever makes a short limit on this backend

        @pytest.fixture
        def backend(self, tmp_path):
            return LocalBackend(tmp_path / "spool", cpus=2, time_scale=0.02)

Backend-specific knobs are class attributes (see ``BackendContract``); ``jobdir`` is a fixture
(override it where jobs run on other machines and need a shared filesystem). The helpers
``make_job`` and ``wait_for`` are plain functions, usable from backend-specific tests too.
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path
from typing import Iterable

import pytest

from desinight.batch.base import BackendJob, Resources, SubmitRequest
from desinight.batch.exitfile import EXIT_FILE, read_exit
from desinight.core.states import FINAL, JobState

DEP_STATES = frozenset({JobState.CANCELLED, JobState.DEP_FAILED})


def make_job(jobdir: Path, name: str, body: str, *, deps: Iterable[str] = (),
             minutes: float = 5, tag: str = "contract", cpus: int = 1) -> SubmitRequest:
    """A bash job script that writes its exit record the way rendered scripts do.

    The EXIT trap writes ``exit.json`` (exitfile.py's format) via a temp file + ``mv`` into
    ``$DESINIGHT_ATTEMPT_DIR``, which the script sets to its attempt dir if the backend did not.
    TERM exits 143, so a cancelled / timed-out job still leaves its record.
    """
    adir = jobdir / "runs" / name
    adir.mkdir(parents=True, exist_ok=True)
    script = adir / "job.sh"
    script.write_text(f"""#!/bin/bash
export DESINIGHT_ATTEMPT_DIR="${{DESINIGHT_ATTEMPT_DIR:-{shlex.quote(str(adir))}}}"
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
finish() {{
  rc=$?
  if [ $rc -eq 0 ]; then status=completed; else status=failed; fi
  tmp="$DESINIGHT_ATTEMPT_DIR/{EXIT_FILE}.tmp.$$"
  printf '{{"status": "%s", "exit_code": %d, "start": "%s", "end": "%s", "host": "%s", "backend_id": "%s"}}\\n' \\
    "$status" "$rc" "$start" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" \\
    "${{SLURM_JOB_ID:-${{DESINIGHT_BACKEND_ID:-}}}}" > "$tmp" && mv -f "$tmp" "$DESINIGHT_ATTEMPT_DIR/{EXIT_FILE}"
}}
trap finish EXIT
trap 'exit 143' TERM
{body}
""")
    script.chmod(0o755)
    return SubmitRequest(name=f"dn-contract-{name}", tag=tag, comment=f"{tag}:{name}:1",
                         script=script, attempt_dir=adir, log=adir / "job.log",
                         depends_on=tuple(deps),
                         resources=Resources(time_minutes=minutes, ntasks=cpus))  # type: ignore[arg-type]


def wait_for(backend, ids: Iterable[str], states: Iterable[JobState] = FINAL,
             timeout: float = 30.0, every: float = 0.2) -> dict[str, BackendJob]:
    """Poll until every id is in one of ``states``; return the last poll. Fails on timeout."""
    ids, states = [str(i) for i in ids], frozenset(states)
    deadline = time.monotonic() + timeout
    while True:
        got = backend.poll(ids)
        if all(i in got and got[i].state in states for i in ids):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s, wanted {sorted(map(str, states))}: "
                                 + ", ".join(f"{i}={got[i].state if i in got else 'absent'}"
                                             for i in ids))
        time.sleep(every)


class Jobs:
    """Submits through the backend and remembers the ids, so teardown cancels leftovers."""

    def __init__(self, backend, jobdir: Path, tag: str):
        self.backend, self.jobdir, self.tag = backend, jobdir, tag
        self.ids: list[str] = []

    def submit(self, name: str, body: str, **kw) -> str:
        kw.setdefault("tag", self.tag)
        bid = self.backend.submit(make_job(self.jobdir, name, body, **kw))
        assert isinstance(bid, str) and bid
        self.ids.append(bid)
        return bid

    def exit_record(self, name: str) -> dict | None:
        return read_exit(self.jobdir / "runs" / name)

    def log(self, name: str) -> str:
        return (self.jobdir / "runs" / name / "job.log").read_text()


class BackendContract:
    """The contract cases. Subclasses provide the ``backend`` fixture and may tune these."""

    #: ``resources.time_minutes`` that gives a short time limit here; None skips the case
    timeout_minutes: float | None = None
    #: seconds a timed-out job may take to be reported TIMEOUT
    timeout_wait_s: float = 30.0
    #: seconds any short job may take to reach a final state (queue wait included)
    settle_s: float = 30.0
    #: seconds between polls in ``wait_for``
    poll_every_s: float = 0.2
    #: the reason a never-runnable dependant must carry when reported CANCELLED (None: any)
    dep_reason: str | None = "DependencyNeverSatisfied"

    @pytest.fixture
    def jobdir(self, tmp_path) -> Path:
        return tmp_path

    @pytest.fixture
    def jobs(self, backend, jobdir):
        j = Jobs(backend, jobdir, tag=f"contract-{uuid.uuid4().hex[:8]}")
        yield j
        live = [i for i, bj in backend.poll(j.ids).items() if bj.state not in FINAL]
        if live:
            backend.cancel(live)

    def wait(self, backend, ids, states=FINAL, timeout=None):
        return wait_for(backend, ids, states, timeout or self.settle_s, self.poll_every_s)

    def assert_never_ran(self, backend, jobs: Jobs, bid: str, name: str, got: BackendJob):
        assert got.state in DEP_STATES, got
        if got.state is JobState.CANCELLED and self.dep_reason:
            assert got.reason and self.dep_reason in got.reason, got
        assert jobs.exit_record(name) is None, f"{name} ran"

    # -- the cases ---------------------------------------------------------------------------

    def test_single_job_completes(self, backend, jobs):
        bid = jobs.submit("one", "echo hello from the job")
        got = self.wait(backend, [bid])[bid]
        assert got.backend_id == bid
        assert got.state is JobState.COMPLETED and got.exit_code in (0, None)
        assert got.start is not None and got.end is not None and got.start <= got.end
        assert "hello from the job" in jobs.log("one")
        rec = jobs.exit_record("one")
        assert rec is not None and rec["exit_code"] == 0 and rec["status"] == "completed"
        assert rec["backend_id"] == bid

    def test_ids_are_distinct_and_unknown_ids_absent(self, backend, jobs):
        ids = [jobs.submit(f"n{i}", "true") for i in range(3)]
        assert len(set(ids)) == 3
        got = backend.poll([*ids, "987654321"])
        assert set(got) == set(ids)
        assert all(bj.state in FINAL | {JobState.PENDING, JobState.RUNNING} for bj in got.values())
        self.wait(backend, ids)

    def test_failing_job(self, backend, jobs):
        bid = jobs.submit("bad", "echo failing; exit 7")
        got = self.wait(backend, [bid])[bid]
        assert got.state is JobState.FAILED and got.exit_code == 7
        assert jobs.exit_record("bad")["exit_code"] == 7

    def test_diamond_failed_branch_then_resubmit(self, backend, jobs):
        a = jobs.submit("A", "sleep 0.5")
        b = jobs.submit("B", "exit 1", deps=[a])
        c = jobs.submit("C", "true", deps=[a])
        d = jobs.submit("D", "true", deps=[b, c])
        got = self.wait(backend, [a, b, c, d])
        assert got[a].state is JobState.COMPLETED and got[c].state is JobState.COMPLETED
        assert got[b].state is JobState.FAILED
        self.assert_never_ran(backend, jobs, d, "D", got[d])
        # B fixed and resubmitted; the new D waits on the new B and on C's old id
        b2 = jobs.submit("B2", "true", deps=[a])
        d2 = jobs.submit("D2", "true", deps=[b2, c])
        got = self.wait(backend, [b2, d2])
        assert got[b2].state is JobState.COMPLETED and got[d2].state is JobState.COMPLETED
        assert jobs.exit_record("D2")["exit_code"] == 0

    def test_cancel_running_job_and_its_dependant(self, backend, jobs):
        run = jobs.submit("long", "sleep 120")
        self.wait(backend, [run], states={JobState.RUNNING})
        after = jobs.submit("after", "true", deps=[run])
        backend.cancel([run])
        got = self.wait(backend, [run, after])
        assert got[run].state is JobState.CANCELLED
        self.assert_never_ran(backend, jobs, after, "after", got[after])
        backend.cancel([run, after])              # ended ids are ignored
        assert backend.poll([run])[run].state is JobState.CANCELLED

    def test_cancel_pending_job(self, backend, jobs):
        parent = jobs.submit("parent", "sleep 120")
        child = jobs.submit("child", "true", deps=[parent])
        self.wait(backend, [parent], states={JobState.RUNNING})
        assert backend.poll([child])[child].state is JobState.PENDING
        backend.cancel([child])
        got = self.wait(backend, [child])[child]
        assert got.state is JobState.CANCELLED
        assert jobs.exit_record("child") is None
        assert backend.poll([parent])[parent].state is JobState.RUNNING   # untouched
        backend.cancel([parent])
        assert self.wait(backend, [parent])[parent].state is JobState.CANCELLED

    def test_timeout(self, backend, jobs):
        if self.timeout_minutes is None:
            pytest.skip(f"no short time limit on the {backend.name} backend")
        bid = jobs.submit("slow", "sleep 600", minutes=self.timeout_minutes)
        got = self.wait(backend, [bid], timeout=self.timeout_wait_s)[bid]
        assert got.state is JobState.TIMEOUT
        rec = jobs.exit_record("slow")
        assert rec is None or rec["exit_code"] != 0

    def test_find_by_tag(self, backend, jobs):
        ids = [jobs.submit(f"f{i}", "true") for i in range(3)]
        found = backend.find(jobs.tag)
        assert {c: i for c, i in found.items() if c.startswith(jobs.tag)} == {
            f"{jobs.tag}:f{i}:1": bid for i, bid in enumerate(ids)}
        assert backend.find(f"{jobs.tag}-nothing-here") == {}
        self.wait(backend, ids)
