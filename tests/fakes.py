"""An in-memory backend for fast unit tests of the orchestration (never the only proof)."""

from __future__ import annotations

from desinight.batch.base import BackendJob, Capabilities, SubmitRequest
from desinight.core.errors import BackendError
from desinight.core.states import JobState


class FakeBackend:
    name = "fake"
    poll_warning = None
    capabilities = Capabilities(can_lag=True)

    def __init__(self):
        self.jobs: dict[str, BackendJob] = {}
        self.requests: dict[str, SubmitRequest] = {}
        self.calls = {"submit": 0, "poll": 0, "cancel": 0, "find": 0}
        self.down = False
        self.crash_after_submit = False

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
        return {i: self.jobs[i] for i in ids if i in self.jobs}

    def cancel(self, ids):
        self.calls["cancel"] += 1
        for i in ids:
            if i in self.jobs and self.jobs[i].state in (JobState.PENDING, JobState.RUNNING):
                self.jobs[i] = BackendJob(i, JobState.CANCELLED, reason="CANCELLED by 0")

    def count_user_jobs(self):
        self.calls["count"] = self.calls.get("count", 0) + 1
        return sum(j.state in (JobState.PENDING, JobState.RUNNING) for j in self.jobs.values())

    def find(self, tag):
        self.calls["find"] += 1
        return {r.comment: i for i, r in self.requests.items() if r.comment.startswith(tag)}

    # test controls
    def finish(self, bid: str, state: JobState = JobState.COMPLETED, exit_code: int = 0):
        self.jobs[bid] = BackendJob(bid, state, exit_code=exit_code)

    def by_name(self, kind: str) -> list[str]:
        return [i for i, r in self.requests.items() if r.name.endswith("-" + kind)]
