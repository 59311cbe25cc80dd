"""Turning low-level exceptions (SQLAlchemy/DBAPI, OSError) into the one line an operator
reads. Passwords in database URLs are masked wherever a message might echo them."""

from __future__ import annotations

import errno
import re

from .core.errors import DatabaseError, DesinightError, FilesystemError

#: scheme://user:password@host -> scheme://user:***@host (also inside driver messages)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")
#: key=value connection-string passwords (libpq: password=secret)
_KV_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")


def mask_secrets(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}***", text)


def first_line(text: str, limit: int = 300) -> str:
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def database_error(e: Exception, url: str | None = None) -> DatabaseError:
    """One line for anything SQLAlchemy or the driver raised."""
    orig = getattr(e, "orig", None) or e
    reason = first_line(str(orig)) or type(orig).__name__
    # psycopg's "connection failed: connection to server at ... failed: FATAL: ..." is long:
    # keep the part that says why.
    if "FATAL:" in reason:
        reason = reason[reason.index("FATAL:") + 6:].strip()
    where = f"database {mask_secrets(url)}: " if url else "database error: "
    return DatabaseError(mask_secrets(where + reason))


def filesystem_error(e: OSError) -> FilesystemError:
    what = e.strerror or type(e).__name__
    if e.errno == errno.ENOSPC:
        what = "no space left on device"
    name = e.filename if e.filename is not None else ""
    return FilesystemError(f"{what}: {name}" if name else what)


def as_desinight_error(e: BaseException) -> DesinightError | None:
    """The DesinightError an unexpected exception should be shown as, or None."""
    if isinstance(e, DesinightError):
        return e
    try:
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    except ImportError:   # pragma: no cover - sqlalchemy is a hard dependency
        SQLAlchemyError = ArgumentError = ()  # type: ignore[assignment]
    if isinstance(e, ArgumentError):
        return DatabaseError(mask_secrets(f"bad database URL: {first_line(str(e))}"))
    if isinstance(e, SQLAlchemyError):
        return database_error(e)
    if isinstance(e, OSError):
        return filesystem_error(e)
    if isinstance(e, UnicodeDecodeError):
        return FilesystemError(f"not UTF-8 text: {first_line(str(e))}")
    return None
