"""The exit record each job script writes (atomically) into its attempt directory.

Format (JSON, one object): {"status": "completed"|"failed", "exit_code": int,
"start": ISO-8601 UTC, "end": ISO-8601 UTC, "host": str, "backend_id": str}.
The same record is written by SLURM and local jobs: the base template's EXIT trap writes
``exit.json.tmp.<pid>`` then renames it, so a reader never sees half a record.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..core.states import JobState

EXIT_FILE = "exit.json"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def read_exit(attempt_dir: Path) -> dict | None:
    """The parsed exit record, or None if absent or unreadable (never raises)."""
    try:
        rec = json.loads((Path(attempt_dir) / EXIT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or "exit_code" not in rec:
        return None
    try:
        rec["exit_code"] = int(rec["exit_code"])
    except (TypeError, ValueError):
        return None
    rec["start"] = _parse_time(rec.get("start"))
    rec["end"] = _parse_time(rec.get("end"))
    rec["state"] = JobState.COMPLETED if rec["exit_code"] == 0 else JobState.FAILED
    return rec
