"""`status --watch` as an operator sees it: in a pseudo-terminal, redrawn in place."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time

from tests.daemonkit import cli, write_config
from tests.prockit import ctrl_c_as_in_a_shell

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _read_until(fd: int, needle: str, timeout: float) -> str:
    buf, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:    # the child closed the terminal
                break
            buf += chunk
            text = ANSI.sub("", buf.decode(errors="replace"))
            if text.count(needle) >= 2:
                return text
    return ANSI.sub("", buf.decode(errors="replace"))


def _exit_code(pid: int, fd: int, timeout: float) -> int | None:
    """The child's exit code, reading its terminal meanwhile (a child blocked writing to a full
    pty never exits); None if it has not exited by the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if select.select([fd], [], [], 0.2)[0]:
            try:
                os.read(fd, 65536)
            except OSError:
                pass
    return None


def test_watch_redraws_the_table_in_a_pty(tmp_path):
    conf = write_config(tmp_path)
    cli(conf, "init")
    cli(conf, "sim", "night", "--night", "20261124", "--out", str(tmp_path / "raw"))
    cli(conf, "ingest", "20261124", "--no-wait")
    pid, fd = pty.fork()
    if pid == 0:   # the child: desinight on the pty, as in an operator's terminal
        os.environ.update(COLUMNS="120", LINES="60", TERM="xterm-256color")
        ctrl_c_as_in_a_shell()
        os.execv(sys.executable, [sys.executable, "-m", "desinight", "--config", str(conf),
                                  "status", "--watch", "0.5"])
    try:
        text = _read_until(fd, "refreshed", timeout=60)
        # two frames drawn, each with the night's table and exposures from the database
        assert text.count("refreshed") >= 2, text[-2000:]
        assert "night 20261124" in text and "production test" in text
        assert re.search(r"\d{8}\s*│\s*SCIENCE", text), text[-2000:]
        os.kill(pid, signal.SIGINT)
        assert _exit_code(pid, fd, timeout=30) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
