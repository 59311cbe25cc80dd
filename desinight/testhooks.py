"""Crash points for fault tests: a real daemon process dies exactly where a test says.

``DESINIGHT_TEST_CRASH_AT=after_sbatch`` makes the process exit (``os._exit``, no cleanup, as
SIGKILL would) right after the first sbatch returned and before its id is recorded;
``after_sbatch:3`` after the third. Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os

#: exit status of a process stopped at a crash point (tests tell it from a real failure)
CRASH_EXIT = 86

_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("DESINIGHT_TEST_CRASH_AT")
    if not spec:
        return
    where, _, nth = spec.partition(":")
    if where != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os._exit(CRASH_EXIT)
