"""The local backend: SLURM's stand-in on one machine (the embedded default).

Each submitted job gets a detached runner process (``python -m desinight.batch.localrun``,
its own session, so it outlives the submitter: `desinight ingest` submits and exits, a later
`desinight status` looks). The runner waits for its ``afterok`` parents, takes CPU slots from
the spool-wide budget, runs ``bash <script>`` and records the outcome.

Spool layout (small files; every JSON file is written atomically by temp + ``os.replace``):

    SPOOL/counter                last id issued; read and bumped under an flock on counter.lock
    SPOOL/counter.lock
    SPOOL/slots/slots.lock       guard flock: slots are taken all-or-nothing under it
    SPOOL/slots/N.lock           one flock-ed file per CPU of the budget (N = 0 .. cpus-1)
    SPOOL/jobs/ID/request.json   the SubmitRequest as JSON, plus "cpus" (clamped to the budget),
                                 "time_limit_s" and "budget"
    SPOOL/jobs/ID/state.json     {"state", "exit_code", "reason", "start", "end", "node",
                                  "submitted", "runner_pid", "runner_boot", "runner_ticks",
                                  "job_pgid"}; written by submit (pending) and then only by
                                  the job's runner
    SPOOL/jobs/ID/cancel         present = cancellation requested (the runner acts on it)
    SPOOL/jobs/ID/runner.log     the runner's own stderr (tracebacks only; the job's output
                                 goes to ``req.log``)

States: pending (waiting for parents or CPUs) -> running -> completed (exit 0) | failed
(exit != 0) | cancelled (by `cancel`: reason "cancelled by user") | timeout (over the limit:
the job's process group gets SIGTERM, then SIGKILL after a grace).

Semantics follow SLURM with ``kill_invalid_depend``: a job whose parent ends in any state
but completed ends cancelled with reason ``DependencyNeverSatisfied`` without running.
Unlike SLURM, a parent id the spool never issued counts as failed (SLURM would run the job).

A runner that is gone (killed, machine rebooted) while its job is pending/running is
reported ``failed`` with reason "runner lost ..." (by ``poll`` and by dependants' runners, so
they stop waiting); a pid reused by another process is told apart by boot id + start time.

Time limit: ``resources.time_minutes * time_scale`` minutes; ``time_scale`` is the
constructor argument, else ``$DESINIGHT_LOCAL_TIME_SCALE``, else 1. Fractional minutes are
accepted too. The limit is fixed at submit time (stored as ``time_limit_s``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ..core.errors import BackendError
from ..core.states import JobState
from .base import BackendJob, Capabilities, SubmitRequest

#: a runner that has not written its pid this long after submission is presumed lost
START_GRACE_S = 30.0
#: env var multiplying every time limit (tests use e.g. 0.02: 1 minute -> 1.2 s)
TIME_SCALE_ENV = "DESINIGHT_LOCAL_TIME_SCALE"
#: reason of a job whose parent did not complete (the word SLURM uses)
DEP_REASON = "DependencyNeverSatisfied"
CANCEL_REASON = "cancelled by user"
LIVE = (JobState.PENDING.value, JobState.RUNNING.value)


# -- small file helpers (shared with the runner) -------------------------------------------

def write_json(path: Path, data: dict) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def proc_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (with boot id: a process identity)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def runner_identity() -> dict:
    pid = os.getpid()
    return {"runner_pid": pid, "runner_boot": boot_id(), "runner_ticks": proc_ticks(pid)}


def runner_alive(st: dict) -> bool:
    """Is the runner that wrote ``st`` still running (not a zombie, not a reused pid)?"""
    pid = st.get("runner_pid")
    if not pid:
        return False
    if st.get("runner_boot") and boot_id() and st["runner_boot"] != boot_id():
        return False                       # the machine restarted since
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True                        # no /proc: trust kill(0)
    if state in ("Z", "X"):
        return False
    ticks = st.get("runner_ticks")
    return ticks is None or proc_ticks(pid) == ticks


def job_status(jdir: Path) -> dict | None:
    """The job's state record with a lost runner settled: None if the spool never issued it.

    Used by ``poll`` and by runners waiting on parents, so neither waits on a dead runner.
    """
    st = read_json(jdir / "state.json")
    if st is None or st.get("state") not in {s.value for s in JobState}:
        return None
    if st["state"] not in LIVE:
        return st
    if st.get("runner_pid"):
        lost = not runner_alive(st)
    else:
        lost = time.time() - float(st.get("submitted") or 0) > START_GRACE_S
    if not lost:
        return st
    # re-read: the runner may have written its final state between the two reads
    again = read_json(jdir / "state.json") or st
    if again.get("state") not in LIVE:
        return again
    return {**again, "state": JobState.FAILED.value,
            "reason": "runner lost (runner killed or machine restarted)"}


def _dt(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def _valid_id(bid: str) -> bool:
    return bid.isdigit() and not bid.startswith("0")


# -- the backend ---------------------------------------------------------------------------

class LocalBackend:
    """Runs job scripts as detached subprocesses on this machine; see the module docstring."""

    name = "local"
    poll_warning = None   # one source of truth (the spool): never a partial answer
    #: the spool is written by the job itself, so what it does not know never happened
    capabilities = Capabilities(can_lag=False)

    def __init__(self, spool: Path, cpus: int = 2, time_scale: float | None = None):
        self.spool = Path(spool)
        self.cpus = max(1, int(cpus))
        if time_scale is None:
            time_scale = float(os.environ.get(TIME_SCALE_ENV) or 1.0)
        if time_scale <= 0:
            raise BackendError(f"local: time scale must be > 0, got {time_scale}")
        self.time_scale = float(time_scale)
        self.jobs = self.spool / "jobs"
        self.jobs.mkdir(parents=True, exist_ok=True)
        (self.spool / "slots").mkdir(exist_ok=True)
        self.calls = {"submit": 0, "poll": 0, "cancel": 0, "find": 0}
        self._children: list[subprocess.Popen] = []   # runners we started, reaped lazily

    # ids are allocated under an flock, so several processes sharing a spool never collide;
    # the job dir is created under the same lock and an existing one is skipped (a counter
    # lost or rolled back never hands out an id twice).
    def _new_job_dir(self) -> tuple[str, Path]:
        with open(self.spool / "counter.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.spool / "counter"
            try:
                last = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                last = max((int(p.name) for p in self.jobs.iterdir() if _valid_id(p.name)),
                           default=0)
            while True:
                last += 1
                jdir = self.jobs / str(last)
                try:
                    jdir.mkdir()
                    break
                except FileExistsError:
                    continue
            tmp = path.with_name(f".counter.{os.getpid()}.tmp")
            tmp.write_text(str(last))
            os.replace(tmp, path)
            return str(last), jdir

    def _reap(self) -> None:
        self._children = [p for p in self._children if p.poll() is None]

    def submit(self, req: SubmitRequest) -> str:
        self.calls["submit"] += 1
        self._reap()
        if not Path(req.script).is_file():
            raise BackendError(f"local: job script {req.script} does not exist")
        for dep in req.depends_on:
            if not isinstance(dep, str) or not dep:
                raise BackendError(f"local: bad dependency id {dep!r}")
        try:
            Path(req.attempt_dir).mkdir(parents=True, exist_ok=True)
            Path(req.log).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"local: cannot create the attempt dir: {e}") from None
        bid, jdir = self._new_job_dir()
        request = json.loads(json.dumps(dataclasses.asdict(req), default=str))
        request.update(backend_id=bid, budget=self.cpus,
                       cpus=max(1, min(int(req.resources.cpus), self.cpus)),
                       time_limit_s=float(req.resources.time_minutes) * 60.0 * self.time_scale,
                       # the job gets the submitter's PYTHONPATH, not the runner's (_runner_env)
                       pythonpath=os.environ.get("PYTHONPATH"))
        write_json(jdir / "request.json", request)
        write_json(jdir / "state.json", {"state": JobState.PENDING.value, "submitted": time.time()})
        try:
            with open(jdir / "runner.log", "ab") as rlog:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "desinight.batch.localrun", str(jdir)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=rlog,
                    start_new_session=True, close_fds=True, env=_runner_env())
        except OSError as e:
            write_json(jdir / "state.json", {"state": JobState.FAILED.value, "submitted": time.time(),
                                             "reason": f"runner did not start: {e}"})
            raise BackendError(f"local: could not start the runner: {e}") from None
        self._children.append(proc)
        return bid

    def poll(self, ids: Sequence[str]) -> dict[str, BackendJob]:
        self.calls["poll"] += 1
        self._reap()
        out: dict[str, BackendJob] = {}
        for bid in map(str, ids):
            st = job_status(self.jobs / bid) if _valid_id(bid) else None
            if st is None:
                continue
            ec = st.get("exit_code")
            out[bid] = BackendJob(bid, JobState(st["state"]),
                                  exit_code=int(ec) if isinstance(ec, int) else None,
                                  reason=st.get("reason"), start=_dt(st.get("start")),
                                  end=_dt(st.get("end")), node=st.get("node"))
        return out

    def cancel(self, ids: Sequence[str]) -> None:
        """Ask each job's runner to stop; it settles the state within a tick.

        If the runner itself is gone but its job's process group lingers, kill that here.
        """
        self.calls["cancel"] += 1
        for bid in map(str, ids):
            jdir = self.jobs / bid
            if not _valid_id(bid) or not jdir.is_dir():
                continue
            st = read_json(jdir / "state.json") or {}
            if st.get("state") not in LIVE:
                continue                                   # ended: ignored, like scancel
            (jdir / "cancel").touch()
            pgid = st.get("job_pgid")
            if pgid and st.get("runner_pid") and not runner_alive(st) \
                    and st.get("runner_boot") == boot_id():
                try:
                    os.killpg(int(pgid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def count_user_jobs(self) -> int:
        """Jobs of the spool (every production sharing it) pending or running."""
        return sum(1 for p in self.jobs.iterdir() if _valid_id(p.name)
                   and (read_json(p / "state.json") or {}).get("state") in LIVE)

    def find(self, tag: str) -> dict[str, str]:
        """{comment: id} of every spool job whose comment starts with ``tag`` (latest id wins)."""
        self.calls["find"] += 1
        out: dict[str, str] = {}
        dirs = sorted((p for p in self.jobs.iterdir() if _valid_id(p.name)), key=lambda p: int(p.name))
        for jdir in dirs:
            req = read_json(jdir / "request.json")
            comment = str(req.get("comment", "")) if req else ""
            if comment.startswith(tag):
                out[comment] = jdir.name
        return out


def _runner_env() -> dict[str, str]:
    """The runner must import this very package, wherever the submitter found it."""
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pkg_root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([pkg_root, *parts])
    return env
