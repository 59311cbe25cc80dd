"""`--dry-run` for commands built of many short transactions (`ingest`): run the real code on
one connection whose transaction is rolled back at the end, with a backend that refuses.

A Session bound to a connection already inside a transaction joins it (SQLAlchemy's
"conservative_savepoint" mode): its commits do not commit the outer transaction, so
everything the real code writes is seen by its own later reads and then rolled back.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from .core.errors import BackendError
from .db import repo
from .db.models import Exposure, Job
from .orchestrate import Context


class _NoSubmit:
    """A dry run reaches no backend: anything that would is a bug, so it fails loudly."""

    name = "dry-run"
    poll_warning = None

    def __getattr__(self, attr: str):
        def refuse(*_a, **_k):
            raise BackendError(f"dry run: backend.{attr} must not be called")
        return refuse


@contextmanager
def rolled_back(ctx: Context) -> Iterator[Context]:
    engine = ctx.sessions.kw["bind"]
    conn = engine.connect()
    outer = conn.begin()
    try:
        yield replace(ctx, sessions=sessionmaker(bind=conn, expire_on_commit=False),
                      backend=_NoSubmit(), on_event=lambda event, fields: None)
    finally:
        outer.rollback()
        conn.close()


def ingest_preview(ctx: Context, night: int, closed: bool) -> dict:
    """What `desinight ingest NIGHT` would record and plan: the exposures it would ingest
    (or quarantine) and the jobs it would plan, with the ones it would submit now."""
    from . import orchestrate as O
    from .ingest import ingest_night
    problems: list[tuple[str, str]] = []
    with rolled_back(ctx) as dry:
        with dry.sessions() as s:
            prod = repo.get_production(s, dry.production)
            had_exp = set(s.scalars(select(Exposure.expid).where(Exposure.production_id == prod.id)))
            had_job = set(s.scalars(select(Job.key).where(Job.production_id == prod.id)))
        ingest_night(dry, night, O.utc_now(), problems=problems)
        O.plan(dry, night, closed=closed)
        with dry.sessions() as s:
            prod = repo.get_production(s, dry.production)
            exps = [e for e in s.scalars(select(Exposure).where(
                Exposure.production_id == prod.id, Exposure.night == night).order_by(Exposure.expid))
                if e.expid not in had_exp]
            jobs = [j for j in s.scalars(select(Job).where(Job.production_id == prod.id)
                                         .order_by(Job.id)) if j.key not in had_job]
            ready = [j.key for j in jobs if j.state == "planned"]
            return {"exposures": [(e.expid, e.obstype, e.status, e.laststep) for e in exps],
                    "jobs": [(j.key, j.state, j.hold_reason) for j in jobs],
                    "submit": ready, "problems": [line for _, line in problems]}
