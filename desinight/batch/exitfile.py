"""The exit record each job script writes (atomically) into its attempt directory.

Format (JSON, one object): {"status": "completed"|"failed", "exit_code": int,
"start": ISO-8601 UTC, "end": ISO-8601 UTC, "host": str, "backend_id": str, "tag": str}.
The same record is written by SLURM and local jobs: the base template's EXIT trap writes
``exit.json.tmp.<pid>`` then renames it, so a reader never sees half a record.

A record belongs to one attempt: ``tag`` is the attempt's comment
(``desinight:PROD:JOBID:N``) and ``backend_id`` the id of the batch job that wrote it
($SLURM_JOB_ID, or the local backend's id). A record counts for an attempt only when both
match (`belongs`); a script run by hand writes into a ``hand-<time>`` directory of its
own, so it can never settle a queued job.

The daemon never parses these files itself (anyone who can write a job directory writes
them): `read_exits` has a reader process (readers.py) parse all of a poll's records in one
request, and only checks and converts the plain values it gets back.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ..core.states import JobState

log = logging.getLogger("desinight")

EXIT_FILE = "exit.json"
#: a record is ~250 bytes; a bigger file is not one
MAX_RECORD_BYTES = 64 << 10
_STR_FIELDS = ("status", "start", "end", "host", "backend_id", "tag")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_exit_file(attempt_dir: Path) -> dict | None:
    """The record's plain values (JSON types only), or None if absent or unreadable. Opens
    only a regular file, never blocking (a FIFO named exit.json is no record)."""
    path = Path(attempt_dir) / EXIT_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        rec = json.loads(data)
    except ValueError:
        return None
    if not isinstance(rec, dict) or "exit_code" not in rec:
        return None
    try:
        code = int(rec["exit_code"])
    except (TypeError, ValueError, OverflowError):
        return None
    out: dict = {"exit_code": code}
    for k in _STR_FIELDS:
        if k in rec:
            out[k] = str(rec[k])[:200] if rec[k] is not None else ""
    return out


def to_record(plain: dict) -> dict:
    """Plain values -> the record callers use (times parsed, ``state`` added)."""
    rec = dict(plain)
    rec["start"] = _parse_time(rec.get("start"))
    rec["end"] = _parse_time(rec.get("end"))
    rec["state"] = JobState.COMPLETED if rec["exit_code"] == 0 else JobState.FAILED
    return rec


def belongs(rec: dict, tag: str, backend_id: str | None) -> bool:
    """Does this record settle the attempt tagged ``tag`` (with ``backend_id`` where one
    is recorded)? A record of a script rendered before tags (no ``tag`` key) counts only
    when a batch job id is in it and matches."""
    written_by = str(rec.get("backend_id") or "")
    if "tag" not in rec:
        return bool(backend_id) and written_by == str(backend_id)
    if rec["tag"] != tag:
        return False
    return not backend_id or written_by == str(backend_id)


def read_exit(attempt_dir: Path) -> dict | None:
    """The parsed record in this process, or None (never raises). For records this process
    made itself (`rerun --here`); the daemon uses `read_exits`."""
    plain = parse_exit_file(Path(attempt_dir))
    return to_record(plain) if plain is not None else None


def read_exits(cfg, attempts: Iterable) -> dict[int, dict]:  # noqa: ANN001 - Config, Attempts
    """{attempt id: record} for every attempt whose directory holds a record that belongs
    to it, parsed by a reader process in one request. If that request fails (a reader
    crash or timeout) each directory is asked for alone, so one hostile file costs only
    its own attempt's record."""
    from ..readers import pool_for
    atts = [a for a in attempts if a.attempt_dir]
    if not atts:
        return {}
    dirs = sorted({str(a.attempt_dir) for a in atts})
    pool = pool_for(cfg)
    reply = pool.run([{"op": "exits", "dirs": dirs}])[0]
    plain: dict[str, dict | None] = {}
    if reply.kind is None and isinstance(reply.ok, dict):
        plain = reply.ok
    else:
        log.warning("exit_records_failed", extra={"fields": {"error": reply.message}})
        for d, r in zip(dirs, pool.run([{"op": "exits", "dirs": [d]} for d in dirs])):
            if r.kind is None and isinstance(r.ok, dict):
                plain[d] = r.ok.get(d)
    out: dict[int, dict] = {}
    for a in atts:
        p = plain.get(str(a.attempt_dir))
        if not isinstance(p, dict) or not isinstance(p.get("exit_code"), int):
            continue
        if belongs(p, a.comment, a.backend_id):
            out[a.id] = to_record(p)
    return out
