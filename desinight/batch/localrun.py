"""The detached runner of one local-backend job (spool layout: ``local.py``'s docstring).

Usage: ``python -m desinight.batch.localrun SPOOL/jobs/ID`` (started by ``LocalBackend.submit``
in a new session). It waits for the ``afterok`` parents, takes CPU slots, runs the script,
and records the final state. After submit it is the only writer of ``state.json``, and it
never leaves it pending/running: any error or a signal to the runner ends the job as
``failed`` (its process group is killed first).
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
from typing import IO

from ..core.states import JobState
from .local import (CANCEL_REASON, DEP_REASON, LIVE, _valid_id, job_status, read_json,
                    runner_identity, write_json)

#: how often the runner looks at parents, slots, cancel requests and the clock
TICK_S = 0.2
#: SIGTERM -> SIGKILL grace for cancelled / timed-out jobs (SLURM's KillWait, shortened)
KILL_WAIT_S = 5.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class RunnerSignalled(Exception):
    """The runner itself got a signal (shutdown, kill): end the job, record why."""


class Runner:
    def __init__(self, jdir: Path):
        self.jdir = jdir
        self.req = read_json(jdir / "request.json")
        if self.req is None:
            raise RuntimeError(f"no readable request.json in {jdir}")
        self.state = read_json(jdir / "state.json") or {}
        self.state.update(runner_identity())
        self.budget = max(1, int(self.req.get("budget", 1)))
        self.slots: list[IO] = []
        self.proc: subprocess.Popen | None = None

    def record(self, **kw) -> None:
        self.state.update(kw)
        write_json(self.jdir / "state.json", self.state)

    def cancelled(self) -> bool:
        return (self.jdir / "cancel").exists()

    def wait_parents(self) -> str | None:
        """None when every parent completed; else the reason this job can never run."""
        jobs = self.jdir.parent
        pending = [str(d) for d in self.req.get("depends_on") or []]
        while True:
            if self.cancelled():
                return CANCEL_REASON
            still = []
            for dep in pending:
                st = job_status(jobs / dep) if _valid_id(dep) else None
                if st is None:                     # never issued: unlike SLURM, a failure
                    return DEP_REASON
                if st["state"] in LIVE:
                    still.append(dep)
                elif st["state"] != JobState.COMPLETED.value:
                    return DEP_REASON
            if not still:
                return None
            pending = still
            time.sleep(TICK_S)

    def take_slots(self, n: int) -> bool:
        """Take ``n`` slot locks all-or-nothing under the guard; False if cancelled meanwhile.

        The locks die with this process, so a killed runner never leaks CPUs.
        """
        slotdir = self.jdir.parent.parent / "slots"
        while True:
            if self.cancelled():
                return False
            with open(slotdir / "slots.lock", "a+") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                got = []
                for i in range(self.budget):
                    f = open(slotdir / f"{i}.lock", "a+")
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

    def job_env(self, adir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if self.req.get("pythonpath"):
            env["PYTHONPATH"] = self.req["pythonpath"]
        env["DESINIGHT_BACKEND_ID"] = self.jdir.name
        env["DESINIGHT_ATTEMPT_DIR"] = str(adir)
        return env

    def run(self) -> None:
        self.record()                              # identity first: poll can tell we live
        why = self.wait_parents()
        if why is None and not self.take_slots(max(1, min(int(self.req.get("cpus", 1)),
                                                          self.budget))):
            why = CANCEL_REASON
        if why is not None:
            self.record(state=JobState.CANCELLED.value, reason=why, end=_now())
            return
        limit = float(self.req.get("time_limit_s") or 1800.0)
        adir = Path(self.req["attempt_dir"])
        with open(self.req["log"], "ab") as log:
            self.proc = subprocess.Popen(["bash", str(self.req["script"])], cwd=adir,
                                         env=self.job_env(adir), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True)
        self.record(state=JobState.RUNNING.value, start=_now(), node=socket.gethostname(),
                    job_pgid=self.proc.pid)
        t0 = time.monotonic()
        end_state = reason = None
        while True:
            try:
                rc = self.proc.wait(timeout=TICK_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.cancelled():
                end_state, reason = JobState.CANCELLED, CANCEL_REASON
            elif time.monotonic() - t0 > limit:
                end_state, reason = JobState.TIMEOUT, f"time limit {limit:g} s"
            if end_state is not None:
                # Recorded before the SIGTERM: the script's trap then writes a "failed" exit
                # record, and a poll between the two must already read timeout/cancelled.
                self.record(state=end_state.value, reason=reason)
                rc = terminate(self.proc)
                break
        kill_group(self.proc.pid)                  # stray background processes, like SLURM
        if end_state is None:
            end_state = JobState.COMPLETED if rc == 0 else JobState.FAILED
            reason = None if rc == 0 else f"exit code {rc}"
        self.record(state=end_state.value, exit_code=rc, reason=reason, end=_now())

    def fail(self, reason: str) -> None:
        """Last resort: stop the job if it started and record ``failed`` (never raises)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                terminate(self.proc)
            if self.proc is not None:
                kill_group(self.proc.pid)
        finally:
            current = read_json(self.jdir / "state.json") or self.state
            if current.get("state") in LIVE or "state" not in current:
                self.record(state=JobState.FAILED.value, reason=reason, end=_now())


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate(proc: subprocess.Popen) -> int:
    """SIGTERM the job's process group (the script's trap writes its exit record), then KILL."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        return proc.wait()


def _on_signal(signum, _frame) -> None:
    raise RunnerSignalled(f"runner killed by {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m desinight.batch.localrun SPOOL/jobs/ID", file=sys.stderr)
        return 2
    jdir = Path(argv[0])
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)
    runner = None
    try:
        runner = Runner(jdir)
        runner.run()
    except BaseException as e:  # noqa: BLE001 - never leave a job pending/running forever
        reason = str(e) if isinstance(e, RunnerSignalled) else f"runner error: {type(e).__name__}: {e}"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if runner is not None:
            runner.fail(reason)
        else:
            st = read_json(jdir / "state.json") or {}
            write_json(jdir / "state.json", {**st, "state": JobState.FAILED.value,
                                             "reason": reason, "end": _now()})
        if not isinstance(e, RunnerSignalled):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
