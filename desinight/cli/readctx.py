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
    """The database at the newest schema (as ``app._open_database``: migrating is free when it
    is at head); every failure one line naming the masked URL."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..db.engine import is_initialised, make_engine, migrate, session_factory
    from ..errtext import database_error, filesystem_error
    url = cfg.database_url
    try:
        engine = make_engine(url)
        if not is_initialised(engine):
            raise DesinightError(f"no desinight database at {_safe_url(url)}: "
                                 "run `desinight init` first")
        migrate(engine)
    except SQLAlchemyError as e:
        raise database_error(e, _safe_url(url)) from None
    except OSError as e:
        raise filesystem_error(e) from None
    return ReadContext(cfg=cfg, sessions=session_factory(engine), production=cfg.production)


def _safe_url(url: str) -> str:
    """The URL without its password, for messages (as ``app._safe_url``)."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a bad URL is reported by make_engine
        return url
