"""What the read-only commands (`status`, `campaign status`) open: the configuration and a
session factory on the database, without the orchestrator, the batch backends or the
campaign planner that ``app.open_context`` wires in. Their start-up is most of what an
operator waits for (issue 18 item 5: `status` under 0.3 s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import DesinightError


@dataclass
class ReadContext:
    cfg: Any
    sessions: Any
    production: str


def parse_night(value: str) -> int:
    if not (len(value) == 8 and value.isdigit() and value.startswith("20")):
        raise DesinightError(f"night must look like YYYYMMDD, got {value!r}")
    return int(value)


def open_read(cfg) -> ReadContext:
    """The database at the newest schema, as ``app.open_context`` opens it (one-line errors),
    without the orchestrator and the backends."""
    from ..db.engine import open_database, session_factory
    return ReadContext(cfg=cfg, sessions=session_factory(open_database(cfg.database_url)),
                       production=cfg.production)
