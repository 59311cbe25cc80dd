"""An in-memory backend for fast unit tests of the orchestration (never the only proof).

By default nothing runs: a test moves jobs with ``finish`` (or by setting ``jobs[id]``), so it
can produce any outcome in any order. ``FakeBackend(run_scripts=True)`` also runs each job's
script once its parents completed (``bash SCRIPT`` in its own process group, as the local
backend does), which is how it passes the backend contract (tests/test_backend_contract.py).
Either way, dependencies, cancellation, ``find`` and times follow the real backends. A
dependant whose parent failed stays PENDING with reason DependencyNeverSatisfied, as on SLURM
by default (desinight cancels it); ``kill_invalid_depend=True`` ends it CANCELLED instead, as
SLURM with that scheduler option (the test cluster's setting) and the local backend do.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime, timezone

from desinight.batch.base import BackendJob, Capabilities, SubmitRequest
from desinight.core.errors import BackendError
from desinight.core.states import FINAL, JobState

LIVE = (JobState.PENDING, JobState.RUNNING)
#: the reason SLURM (kill_invalid_depend) and the local backend give a never-runnable dependant
DEP_REASON = "DependencyNeverSatisfied"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FakeBackend:
    name = "fake"
    poll_warning = None
    capabilities = Capabilities(can_lag=True)

    def __init__(self, run_scripts: bool = False, kill_invalid_depend: bool = False):
        self.jobs: dict[str, BackendJob] = {}
        self.requests: dict[str, SubmitRequest] = {}
        self.calls = {"submit": 0, "poll": 0, "cancel": 0, "find": 0}
        self.down = False
        self.crash_after_submit = False
        self.run_scripts = run_scripts
        self.kill_invalid_depend = kill_invalid_depend
        self.procs: dict[str, subprocess.Popen] = {}

    def submit(self, req: SubmitRequest) -> str:
        self.calls["submit"] += 1
        if self.down:
            raise BackendError("sbatch: error: Slurm controller not responding")
        bid = str(1000 + len(self.requests))
        self.requests[bid] = req
        self.jobs[bid] = BackendJob(bid, JobState.PENDING)
        if self.crash_after_submit:
            raise KeyboardInterrupt("simulated crash after sbatch, before the id is recorded")
        return bid

    def poll(self, ids):
        self.calls["poll"] += 1
        if self.down:
            raise BackendError("sacct: error: slurmdbd not responding")
        self._advance()
        return {i: self.jobs[i] for i in ids if i in self.jobs}

    def cancel(self, ids):
        self.calls["cancel"] += 1
        for i in ids:
            if i in self.jobs and self.jobs[i].state in LIVE:
                # Divergence fixed: a cancelled running job used to keep running here and
                # lost its start time; the real backends kill it (its trap writes the exit
                # record) and report when it ran.
                proc = self.procs.pop(i, None)
                if proc is not None:
                    _kill_group(proc)
                old = self.jobs[i]
                self.jobs[i] = BackendJob(i, JobState.CANCELLED, reason="CANCELLED by 0",
                                          start=old.start, end=_now() if old.start else None)

    def count_user_jobs(self):
        self.calls["count"] = self.calls.get("count", 0) + 1
        self._advance()
        return sum(j.state in LIVE for j in self.jobs.values())

    def find(self, tag):
        self.calls["find"] += 1
        # insertion order = id order, so a resubmitted comment maps to its latest id, as on SLURM
        return {r.comment: i for i, r in self.requests.items() if r.comment.startswith(tag)}

    # test controls
    def finish(self, bid: str, state: JobState = JobState.COMPLETED, exit_code: int = 0):
        # Divergence fixed: ended jobs had no start/end; the real backends report both.
        old = self.jobs.get(bid)
        start = (old.start if old else None) or _now()
        self.jobs[bid] = BackendJob(bid, state, exit_code=exit_code, start=start, end=_now())

    def by_name(self, kind: str) -> list[str]:
        return [i for i, r in self.requests.items() if r.name.endswith("-" + kind)]

    # -- what a poll sees happen since the last one --------------------------------------

    def _advance(self) -> None:
        """Settle dependants of failed parents; with ``run_scripts``, start and reap jobs."""
        for bid, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is not None:
                del self.procs[bid]
                self.finish(bid, JobState.COMPLETED if rc == 0 else JobState.FAILED, rc)
        changed = True
        while changed:                  # a chain of dependants settles in one poll
            changed = False
            for bid, job in list(self.jobs.items()):
                if job.state is not JobState.PENDING or bid not in self.requests:
                    continue
                # A parent id this backend never issued is ignored (SLURM runs such a job).
                parents = [self.jobs[d] for d in self.requests[bid].depends_on if d in self.jobs]
                if any(p.state in FINAL and p.state is not JobState.COMPLETED for p in parents):
                    # Divergence fixed: a dependant of a parent that failed or was cancelled
                    # stayed PENDING without a reason here. SLURM gives the reason; with
                    # kill_invalid_depend SLURM (and always the local backend) ends it
                    # CANCELLED with that reason, without running it.
                    if self.kill_invalid_depend:
                        self.jobs[bid] = BackendJob(bid, JobState.CANCELLED, reason=DEP_REASON)
                        changed = True
                    elif job.reason != DEP_REASON:
                        self.jobs[bid] = BackendJob(bid, JobState.PENDING, reason=DEP_REASON)
                elif self.run_scripts and all(p.state is JobState.COMPLETED for p in parents):
                    self._start(bid)
                    changed = True

    def _start(self, bid: str) -> None:
        req = self.requests[bid]
        req.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DESINIGHT_BACKEND_ID": bid,
               "DESINIGHT_ATTEMPT_DIR": str(req.attempt_dir)}
        with open(req.log, "ab") as log:
            self.procs[bid] = subprocess.Popen(
                ["bash", str(req.script)], cwd=req.attempt_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.jobs[bid] = BackendJob(bid, JobState.RUNNING, start=_now())


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process group (its trap writes the exit record), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
