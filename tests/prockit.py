"""Reading a running process from /proc: CPU time, memory, inotify watches (tests and benches)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Resident memory (``VmRSS``) or its peak (``VmHWM``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def inotify_watches(pid: int) -> int:
    """Inotify watches the process holds, over all its inotify instances."""
    n = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(fd_dir / fd) != "anon_inode:inotify":
                continue
            n += sum(1 for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                     if line.startswith("inotify wd:"))
        except OSError:      # closed meanwhile
            continue
    return n


def ctrl_c_as_in_a_shell() -> None:
    """In a child before exec: SIGINT back to its default, as an operator's shell gives it.
    The suite may run with SIGINT ignored (a shell starts a background job, `cmd &`, with
    SIGINT and SIGQUIT ignored, and pytest and its workers inherit that), and an ignored signal
    stays ignored across exec: Ctrl-C sent to the child would then do nothing."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
