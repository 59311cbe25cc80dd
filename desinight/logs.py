"""Structured logging: one ``key=value`` line per event, quiet by default (WARNING)."""

from __future__ import annotations

import logging
import logging.handlers
from datetime import datetime, timezone
from pathlib import Path


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        parts = [f"ts={t}", f"level={record.levelname.lower()}", f"event={_q(record.getMessage())}"]
        for k, v in (getattr(record, "fields", None) or {}).items():
            parts.append(f"{k}={_q(v)}")
        if record.exc_info:
            parts.append(f"exc={_q(self.formatException(record.exc_info))}")
        return " ".join(parts)


def _q(v: object) -> str:
    text = str(v)
    return repr(text) if (not text or any(c in text for c in " \"'=\n")) else text


def setup(verbosity: int = 0, logfile: Path | None = None, max_bytes: int = 20_000_000,
          backups: int = 5) -> None:
    """-v: info, -vv: debug. A rotating file gets INFO and up when given (the daemon)."""
    root = logging.getLogger("desinight")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    console.setFormatter(KeyValueFormatter())
    root.addHandler(console)
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(logfile, maxBytes=max_bytes, backupCount=backups)
        fh.setLevel(logging.INFO)
        fh.setFormatter(KeyValueFormatter())
        root.addHandler(fh)
