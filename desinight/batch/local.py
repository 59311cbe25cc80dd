"""The local backend: SLURM's stand-in on one machine (the embedded default).

Each submitted job gets a detached runner process (``desinight.batch.localrun``) that waits
for its ``afterok`` parents, takes CPU slots from the shared budget, runs the job script and
records the outcome. Runners outlive the process that submitted them, so `desinight ingest`
can submit and exit while the jobs go on, as they would under SLURM.

Spool layout (all small files, written atomically by temp + rename):

    SPOOL/counter            last id issued (under counter.lock)
    SPOOL/slots/N.lock       one flock-ed file per CPU of the budget (+ slots.lock guard)
    SPOOL/jobs/ID/request.json   the SubmitRequest, as JSON
    SPOOL/jobs/ID/state.json     {"state", "exit_code", "reason", "start", "end", "node",
                                  "runner_pid", "submitted"}; only its runner writes it
    SPOOL/jobs/ID/cancel         present = cancellation requested

Semantics follow SLURM with ``kill_invalid_depend``: a job whose parent ends in any state
but completed is cancelled with reason ``DependencyNeverSatisfied`` without running. Unlike
SLURM, a parent id the spool never issued counts as failed (SLURM would run the job).
Time limits are ``resources.time_minutes`` times ``$DESINIGHT_LOCAL_TIME_SCALE`` (default 1;
tests use a small scale for sub-minute limits).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ..core.errors import BackendError
from ..core.states import JobState
from .base import BackendJob, SubmitRequest

#: a runner that has not written its pid this long after submission is presumed lost
START_GRACE_S = 30.0


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class LocalBackend:
    name = "local"

    def __init__(self, spool: Path, cpus: int = 2):
        self.spool = Path(spool)
        self.cpus = max(1, int(cpus))
        (self.spool / "jobs").mkdir(parents=True, exist_ok=True)
        (self.spool / "slots").mkdir(exist_ok=True)
        self.calls = {"submit": 0, "poll": 0, "cancel": 0, "find": 0}

    def _next_id(self) -> str:
        with open(self.spool / "counter.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.spool / "counter"
            last = int(path.read_text() or 0) if path.exists() else 0
            write_json_text(path, str(last + 1))
            return str(last + 1)

    def submit(self, req: SubmitRequest) -> str:
        self.calls["submit"] += 1
        if not Path(req.script).is_file():
            raise BackendError(f"local: job script {req.script} does not exist")
        bid = self._next_id()
        jdir = self.spool / "jobs" / bid
        jdir.mkdir()
        request = dataclasses.asdict(req)
        request["cpus"] = min(req.resources.cpus, self.cpus)
        write_json(jdir / "request.json", request)
        write_json(jdir / "state.json", {"state": JobState.PENDING.value, "submitted": time.time()})
        Path(req.attempt_dir).mkdir(parents=True, exist_ok=True)
        try:
            # The runner forks and its parent exits at once: wait() reaps it, the grandchild
            # is adopted by init, so a long-lived daemon collects no zombies.
            subprocess.run([sys.executable, "-m", "desinight.batch.localrun", str(jdir),
                            str(self.spool / "slots"), str(self.cpus)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            write_json(jdir / "state.json", {"state": JobState.FAILED.value,
                                             "reason": f"runner did not start: {e}"})
            raise BackendError(f"local: could not start the runner: {e}") from None
        return bid

    def _state(self, bid: str) -> BackendJob | None:
        st = read_json(self.spool / "jobs" / bid / "state.json")
        if st is None:
            return None
        state = JobState(st["state"])
        reason = st.get("reason")
        if state in (JobState.PENDING, JobState.RUNNING):
            pid = st.get("runner_pid")
            lost = (not pid_alive(pid)) if pid else time.time() - st.get("submitted", 0) > START_GRACE_S
            if lost:
                # re-read: the runner may have finished between the two reads
                st = read_json(self.spool / "jobs" / bid / "state.json") or st
                if JobState(st["state"]) in (JobState.PENDING, JobState.RUNNING):
                    state, reason = JobState.FAILED, "runner lost (machine restarted or runner killed)"
                else:
                    state, reason = JobState(st["state"]), st.get("reason")
        return BackendJob(bid, state, exit_code=st.get("exit_code"), reason=reason,
                          start=_dt(st.get("start")), end=_dt(st.get("end")), node=st.get("node"))

    def poll(self, ids: Sequence[str]) -> dict[str, BackendJob]:
        self.calls["poll"] += 1
        out = {}
        for bid in ids:
            bj = self._state(str(bid))
            if bj is not None:
                out[str(bid)] = bj
        return out

    def cancel(self, ids: Sequence[str]) -> None:
        self.calls["cancel"] += 1
        for bid in ids:
            jdir = self.spool / "jobs" / str(bid)
            if jdir.is_dir():
                (jdir / "cancel").touch()

    def find(self, tag: str) -> dict[str, str]:
        self.calls["find"] += 1
        out = {}
        for req_path in (self.spool / "jobs").glob("*/request.json"):
            req = read_json(req_path)
            if req and str(req.get("comment", "")).startswith(tag):
                out[req["comment"]] = req_path.parent.name
        return out


def write_json_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dt(value) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
