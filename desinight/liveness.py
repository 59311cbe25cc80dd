"""Is the daemon alive? Read from its heartbeat in ``service_state``, so any process that can
read the database (status on another node, the monitoring probe) can answer.

The daemon writes ``heartbeat`` (ISO time) after healthy ticks, ``daemon_pid`` (``PID@HOST``)
at start and ``daemon_stopped`` at a clean stop. A heartbeat older than the threshold, or a pid
that is gone on this very host, means the daemon is not running, whatever the last pid says.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Liveness:
    running: bool
    #: what the operator reads after "daemon: ", e.g.
    #: "not running (last heartbeat 4 min ago; pid 1234 on vm gone)"
    text: str
    heartbeat_age_s: float | None
    pid: int | None
    host: str | None


def assess(heartbeat: str | None, pid_host: str | None, stopped: str | None, now: datetime,
           stale_s: float, this_host: str | None = None) -> Liveness:
    """Liveness from the three service_state values (any may be None)."""
    pid, host = _split(pid_host)
    this_host = this_host or socket.gethostname()
    age = (now - datetime.fromisoformat(heartbeat)).total_seconds() if heartbeat else None
    if pid is None and age is None:
        return Liveness(False, "not running (never started)", None, None, None)
    who = f"pid {pid} on {host}" if pid is not None else "unknown pid"
    beat = f"last heartbeat {ago(age)}" if age is not None else "no heartbeat yet"
    if stopped and (not heartbeat or _age(stopped, now) <= age):
        return Liveness(False, f"not running (stopped {ago(_age(stopped, now))}; was {who})",
                        age, pid, host)
    same_host = host is not None and host == this_host
    if same_host and pid is not None and not pid_alive(pid):
        return Liveness(False, f"not running ({beat}; {who} gone)", age, pid, host)
    if age is None or age > stale_s:
        state = ("still there, not responding" if same_host and pid is not None
                 else "not checked from this host")
        return Liveness(False, f"not running ({beat}; {who} {state})", age, pid, host)
    return Liveness(True, f"running ({who}, heartbeat {ago(age)})", age, pid, host)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's (pid reused)
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent still answers kill(0): read its state."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def ago(secs: float | None) -> str:
    if secs is None:
        return "never"
    secs = max(0.0, secs)
    return (f"{secs:.0f} s ago" if secs < 120 else f"{secs / 60:.0f} min ago" if secs < 7200
            else f"{secs / 3600:.1f} h ago")


def _age(iso: str, now: datetime) -> float:
    return (now - datetime.fromisoformat(iso)).total_seconds()


def _split(pid_host: str | None) -> tuple[int | None, str | None]:
    if not pid_host:
        return None, None
    pid, _, host = pid_host.partition("@")
    try:
        return int(pid), host or None
    except ValueError:
        return None, host or None
