"""Engine and session factory from a URL; schema creation through Alembic migrations."""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..core import defaults as D
from ..core.errors import DatabaseError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine tuned for the backend: SQLite gets WAL (readers never block the daemon's
    writer) and a busy timeout (the daemon, `status` and jobs share one file)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": D.SQLITE_BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={D.SQLITE_BUSY_TIMEOUT_S * 1000}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - bad URL or missing driver: one clear line
        from ..errtext import first_line, mask_secrets
        raise DatabaseError(mask_secrets(f"cannot use database URL {url!r}: {first_line(str(e))}")) from None


def _alembic_config(engine: Engine):
    from alembic.config import Config as AlembicConfig
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    head = _head_revision()
    if head is not None and _current_revision(engine) == head:
        return   # already there: no alembic import (~0.5 s of every CLI command's start-up)
    from alembic import command
    command.upgrade(_alembic_config(engine), "head")


@lru_cache(maxsize=1)
def _head_revision() -> str | None:
    """The newest migration's revision, read from the files (the one no other revises);
    None when that is not one revision (alembic then decides)."""
    revs, downs = set(), set()
    for f in (MIGRATIONS / "versions").glob("*.py"):
        text = f.read_text()
        rev = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if rev:
            revs.add(rev.group(1))
        if down:
            downs.add(down.group(1))
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else None


def _current_revision(engine: Engine) -> str | None:
    """The database's alembic revision; None without one (a new database)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return None
    return rows[0] if len(rows) == 1 else None


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("production")


def open_database(url: str, create: bool = False) -> Engine:
    """The engine, at the newest schema (migrating is cheap at head, and upgrades after a code
    update); every failure one line naming the masked URL. Without ``create`` a database
    that was never initialised is refused."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..core.errors import DesinightError
    from ..errtext import database_error, filesystem_error
    try:
        engine = make_engine(url)
        if not create and not is_initialised(engine):
            raise DesinightError(f"no desinight database at {safe_url(url)}: "
                                 "run `desinight init` first")
        migrate(engine)
    except SQLAlchemyError as e:
        raise database_error(e, safe_url(url)) from None
    except OSError as e:
        raise filesystem_error(e) from None
    return engine


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a bad URL is reported by make_engine
        return url


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
