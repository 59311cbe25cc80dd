"""Many rows into one table in the session's transaction, the fastest way each database has:
``COPY`` on PostgreSQL, executemany on SQLite. Used by ``bulk`` (jobs, links, edges,
exposures) and by ``transitions`` for campaign-sized event batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

#: rows per executemany batch: bounds the memory of one statement's parameter list
CHUNK = 20_000


def insert_rows(s: Session, model: type, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (every one with the same keys: all the columns it sets, no Python-side
    default left to apply) in the session's transaction.

    PostgreSQL gets one ``COPY``: psycopg's executemany sends one INSERT per row, ~0.3 ms
    each, which made plan+save of a 1,000-night campaign (79,000 jobs, ~105,000 links and
    edges) take minutes. SQLite keeps executemany (a C loop there)."""
    if not rows:
        return
    conn = s.connection()
    table = model.__table__
    if conn.dialect.name != "postgresql":
        for i in range(0, len(rows), CHUNK):   # Core: the ORM's bulk path costs more per row
            s.execute(insert(table), list(rows[i:i + CHUNK]))
        return
    import json
    cols = list(dict.fromkeys(c for r in rows for c in r))
    is_json = {c: table.c[c].type.__class__.__name__ == "JSON" for c in cols}
    names = ", ".join(f'"{c}"' for c in cols)
    with conn.connection.driver_connection.cursor() as cur:
        with cur.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for r in rows:
                copy.write_row([json.dumps(r.get(c)) if is_json[c] and r.get(c) is not None
                                else r.get(c) for c in cols])
