"""The detached runner of one local-backend job (see ``local.py`` for the spool layout).

Usage: python -m desinight.batch.localrun JOBDIR SLOTDIR CPUS
Forks; the parent exits at once; the child waits for parents, takes CPU slots, runs the
script, and records the final state. It is the only writer of JOBDIR/state.json.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..core.states import JobState
from .local import read_json, write_json

TICK_S = 0.2


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Runner:
    def __init__(self, jdir: Path, slotdir: Path, budget: int):
        self.jdir, self.slotdir, self.budget = jdir, slotdir, budget
        self.req = read_json(jdir / "request.json") or {}
        self.state = read_json(jdir / "state.json") or {}
        self.state["runner_pid"] = os.getpid()
        self.slots: list = []

    def record(self, **kw) -> None:
        self.state.update(kw)
        write_json(self.jdir / "state.json", self.state)

    def cancelled(self) -> bool:
        return (self.jdir / "cancel").exists()

    def wait_parents(self) -> str | None:
        """None when all parents completed; else the reason this job can never run."""
        spool_jobs = self.jdir.parent
        while True:
            if self.cancelled():
                return "cancelled by user"
            waiting = False
            for dep in self.req.get("depends_on", []):
                st = read_json(spool_jobs / str(dep) / "state.json")
                if st is None:
                    return "DependencyNeverSatisfied"
                s = st.get("state")
                if s == JobState.COMPLETED.value:
                    continue
                if s in (JobState.PENDING.value, JobState.RUNNING.value):
                    waiting = True
                else:
                    return "DependencyNeverSatisfied"
            if not waiting:
                return None
            time.sleep(TICK_S)

    def take_slots(self, n: int) -> bool:
        """All-or-nothing under a guard lock, so two jobs never deadlock on partial sets."""
        while True:
            if self.cancelled():
                return False
            with open(self.slotdir / "slots.lock", "a+") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                got = []
                for i in range(self.budget):
                    f = open(self.slotdir / f"{i}.lock", "a+")
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        got.append(f)
                    except BlockingIOError:
                        f.close()
                    if len(got) == n:
                        self.slots = got
                        return True
                for f in got:
                    f.close()
            time.sleep(TICK_S)

    def run(self) -> None:
        self.record()
        why = self.wait_parents()
        if why is not None:
            self.record(state=JobState.CANCELLED.value, reason=why, end=_now())
            return
        if not self.take_slots(max(1, min(int(self.req.get("cpus", 1)), self.budget))):
            self.record(state=JobState.CANCELLED.value, reason="cancelled by user", end=_now())
            return
        scale = float(os.environ.get("DESINIGHT_LOCAL_TIME_SCALE", "1"))
        limit = float(self.req.get("resources", {}).get("time_minutes", 30)) * 60 * scale
        adir = Path(self.req["attempt_dir"])
        env = {**os.environ, "DESINIGHT_BACKEND_ID": self.jdir.name,
               "DESINIGHT_ATTEMPT_DIR": str(adir)}
        with open(self.req["log"], "ab") as log:
            proc = subprocess.Popen(["bash", str(self.req["script"])], cwd=adir, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.record(state=JobState.RUNNING.value, start=_now(), node=socket.gethostname())
        t0 = time.monotonic()
        end_state, reason = None, None
        while True:
            try:
                rc = proc.wait(timeout=TICK_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.cancelled():
                end_state, reason = JobState.CANCELLED, "cancelled by user"
            elif time.monotonic() - t0 > limit:
                end_state, reason = JobState.TIMEOUT, f"time limit {limit:.0f} s"
            if end_state is not None:
                rc = _terminate(proc)
                break
        if end_state is None:
            end_state = JobState.COMPLETED if rc == 0 else JobState.FAILED
            reason = None if rc == 0 else f"exit code {rc}"
        self.record(state=end_state.value, exit_code=rc, reason=reason, end=_now())


def _terminate(proc: subprocess.Popen) -> int:
    """SIGTERM the job's process group (the script's trap writes its exit record), then KILL."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def main(argv: list[str]) -> None:
    jdir, slotdir, budget = Path(argv[0]), Path(argv[1]), int(argv[2])
    if os.fork() > 0:
        os._exit(0)            # the submitter reaps this parent at once
    os.setsid()
    try:
        Runner(jdir, slotdir, budget).run()
    except BaseException as e:  # noqa: BLE001 - never leave a job "running" forever
        write_json(jdir / "state.json", {**(read_json(jdir / "state.json") or {}),
                                         "state": JobState.FAILED.value,
                                         "reason": f"runner error: {type(e).__name__}: {e}",
                                         "end": _now()})
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
