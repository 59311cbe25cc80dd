"""One active daemon per production: who holds it, and how a standby takes over.

* SQLite (one host by nature: the database is a file beside the state dir): the ``flock`` on
  ``STATE_DIR/daemon-PRODUCTION.lock``. The kernel drops it when the holder dies.
* PostgreSQL (daemons may start on any workflow node, e.g. from scrontab at NERSC): a session
  advisory lock, ``pg_try_advisory_lock(DESINIGHT_CLASS, crc32(production))``, on a dedicated
  connection held for the daemon's life. The server drops it the moment that connection closes
  (process killed, even by SIGKILL: the kernel closes the socket); for a host that vanishes
  without closing it, the connection's server-side TCP keepalives
  (``LEADER_KEEPALIVE_*`` in core/defaults.py) end the session within ~25 s. The connection's
  ``application_name`` names the holder (pid and host), so a refused daemon can say who it is.

A daemon that loses its PostgreSQL connection has lost the lock with it: ``alive()`` says so
and the daemon stops rather than run beside the next leader.
"""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path
from typing import Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .core import defaults as D

#: first key of every desinight advisory lock ("desi" in ASCII): keeps clear of other
#: applications' single-key locks on a shared server
DESINIGHT_CLASS = 0x64657369


class Leadership(Protocol):
    kind: str

    def try_acquire(self) -> bool: ...
    def holder(self) -> str: ...
    def refused(self) -> str: ...
    def alive(self) -> bool: ...
    def release(self) -> None: ...


def me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def lock_key(production: str) -> tuple[int, int]:
    """(class, object) of the production's advisory lock; both positive int4, so pg_locks
    (which shows them as unsigned oids) matches them as they are."""
    return DESINIGHT_CLASS, zlib.crc32(production.encode()) & 0x7FFFFFFF


class FileLeadership:
    """The SQLite case: the existing flock (one host)."""

    kind = "flock"

    def __init__(self, path: Path):
        from .service import FileLock   # service owns FileLock; imported late (no cycle)
        self.lock = FileLock(path)

    def try_acquire(self) -> bool:
        return self.lock.try_acquire()

    def holder(self) -> str:
        p = self.lock.path
        return (p.read_text(errors="replace").strip() if p.exists() else "") or "unknown pid"

    def refused(self) -> str:
        return f"another desinight process holds {self.lock.path} ({self.holder()})"

    def alive(self) -> bool:
        return True   # a held flock cannot be lost

    def release(self) -> None:
        self.lock.release()


class PgLeadership:
    """The PostgreSQL case: a session advisory lock on a connection of its own."""

    kind = "PostgreSQL advisory lock"

    def __init__(self, url: str, production: str):
        # NullPool: the lock lives and dies with exactly this connection, never a pooled one.
        self.engine = create_engine(url, poolclass=NullPool, connect_args={
            "application_name": f"desinight daemon {me()}"[:63]})
        self.key = lock_key(production)
        self.conn: Connection | None = None

    def try_acquire(self) -> bool:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            # Server-side keepalives: the server notices a vanished host and frees the lock.
            conn.execute(text(f"SET tcp_keepalives_idle = {D.LEADER_KEEPALIVE_IDLE_S}"))
            conn.execute(text(f"SET tcp_keepalives_interval = {D.LEADER_KEEPALIVE_INTERVAL_S}"))
            conn.execute(text(f"SET tcp_keepalives_count = {D.LEADER_KEEPALIVE_COUNT}"))
            got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"),
                               {"a": self.key[0], "b": self.key[1]}).scalar()
        except BaseException:
            conn.close()
            raise
        if got:
            self.conn = conn
            return True
        conn.close()
        return False

    def holder(self) -> str:
        """"pid N on HOST" of the daemon holding the lock (from its connection's name)."""
        with self.engine.connect() as c:
            row = c.execute(text(
                "SELECT a.application_name, a.client_addr FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:a AS oid) "
                "AND l.objid = CAST(:b AS oid) AND l.objsubid = 2"),
                {"a": self.key[0], "b": self.key[1]}).first()
        if row is None:
            return "unknown holder (it may just have stopped)"
        name = (row[0] or "").removeprefix("desinight daemon ")
        return name or f"a session from {row[1] or 'a local socket'}"

    def refused(self) -> str:
        return (f"another desinight daemon is active for this production: {self.holder()} "
                f"(PostgreSQL advisory lock); `desinight daemon --standby` waits to take over")

    def alive(self) -> bool:
        if self.conn is None:
            return False
        try:
            self.conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()   # closing the session frees its advisory locks
            except SQLAlchemyError:
                pass
            self.conn = None
        self.engine.dispose()


def for_daemon(database_url: str, state_dir: Path, production: str) -> Leadership:
    if database_url.startswith("postgresql"):
        return PgLeadership(database_url, production)
    return FileLeadership(state_dir.resolve() / f"daemon-{production}.lock")
