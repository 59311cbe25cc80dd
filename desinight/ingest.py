"""Ingest: record each complete exposure directory in the database, once.

Bad data never raises past this module: a bad exposure is quarantined with the reason the
operator reads in `status`, a second file claiming a known EXPID is a rejection, and a file
still in transfer is looked at again later.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import rawdata
from .core.errors import BadExposure
from .core.states import ExposureStatus
from .db import repo
from .db.engine import transaction
from .db.models import Exposure, Production, Rejection
from .orchestrate import Context
from .transitions import daemon_actor, transition


def ingest_exposure(s: Session, prod: Production, expdir: Path, now: datetime,
                    verify_data: bool = True, settle_s: float = 0.0) -> str:
    """Record one complete exposure directory. Returns 'ingested', 'quarantined',
    'rejected', 'known' or 'incomplete'. Never raises on bad data.

    settle_s: a truncated raw file younger than this is taken as still in transfer
    ('incomplete') rather than quarantined. A quarantined exposure whose raw file changed
    after it was quarantined (re-transferred) is inspected again."""
    night = int(expdir.parent.name)
    expid = int(expdir.name)
    known = repo.known_expids(s, prod)
    existing = None
    if expid in known and Path(known[expid]).parent == expdir:
        existing = s.scalar(select(Exposure).where(Exposure.production_id == prod.id,
                                                   Exposure.expid == expid))
        if existing.status != ExposureStatus.QUARANTINED.value or not _changed_since(
                expdir, expid, existing.ingested_at):
            return "known"
    if existing is None and s.scalar(select(Rejection.id).where(
            Rejection.production_id == prod.id, Rejection.path == str(expdir))):
        return "known"
    try:
        raw = rawdata.inspect_exposure(expdir, verify_data=verify_data)
    except rawdata.Incomplete:
        return "incomplete"
    except BadExposure as e:
        if isinstance(e, rawdata.Truncated) and _age(expdir, expid, now) < settle_s:
            return "incomplete"
        if existing is not None:
            existing.quarantine_reason, existing.ingested_at = str(e), now
            return "known"
        if expid in known:
            return _reject(s, prod, night, expdir, f"duplicate EXPID {expid} (also {known[expid]}); "
                                                    f"and bad: {e}")
        repo.add_exposure(s, prod, expid=expid, night=night, obstype="UNKNOWN", tileid=None,
                          raw_path=str(rawdata.raw_file(expdir, expid)),
                          status=ExposureStatus.QUARANTINED.value, quarantine_reason=str(e),
                          arrived_at=now, ingested_at=now)
        return "quarantined"
    if raw.bad_cameras and _age(expdir, expid, now) < settle_s:
        return "incomplete"   # cameras missing from a fresh file: maybe still being written
    if raw.expid in known and existing is None:
        return _reject(s, prod, night, expdir,
                       f"duplicate EXPID {raw.expid}: already ingested from {known[raw.expid]}")
    status, reason = ExposureStatus.INGESTED, None
    if raw.night != night:
        status, reason = ExposureStatus.QUARANTINED, (f"header NIGHT {raw.night} does not match "
                                                      f"directory night {night}")
    fields = dict(expid=raw.expid, night=night, obstype=raw.obstype, tileid=raw.tileid,
                  exptime=raw.exptime, program=raw.program, seqnum=raw.seqnum, seqtot=raw.seqtot,
                  cameras=",".join(raw.cameras), bad_cameras=",".join(raw.bad_cameras),
                  raw_path=str(raw.raw_path), status=status.value, quarantine_reason=reason,
                  ingested_at=now)
    if existing is not None:   # a re-transferred exposure, now good
        to = ExposureStatus(fields.pop("status"))
        for k, v in fields.items():
            setattr(existing, k, v)
        transition(s, [existing.id], to, "raw file re-transferred", daemon_actor())
    else:
        repo.add_exposure(s, prod, arrived_at=now, **fields)
    return "ingested" if status is ExposureStatus.INGESTED else "quarantined"


def _raw_mtime(expdir: Path, expid: int) -> float:
    try:
        return rawdata.raw_file(expdir, expid).stat().st_mtime
    except OSError:
        return 0.0


def _age(expdir: Path, expid: int, now: datetime) -> float:
    return now.timestamp() - _raw_mtime(expdir, expid)


def _changed_since(expdir: Path, expid: int, when: datetime) -> bool:
    return _raw_mtime(expdir, expid) > when.timestamp()


def _reject(s: Session, prod: Production, night: int, expdir: Path, reason: str) -> str:
    s.add(Rejection(production_id=prod.id, night=night, path=str(expdir), reason=reason))
    s.flush()
    return "rejected"


def ingest_night(ctx: Context, night: int, now: datetime, only: list[Path] | None = None,
                 settle_s: float = 0.0) -> dict[str, int]:
    """Scan a night (or just the given exposure dirs) and record what is complete."""
    counts: dict[str, int] = {}
    dirs = only if only is not None else rawdata.list_exposure_dirs(ctx.cfg.raw_root, night)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.ensure_night(s, prod, night)
        for d in dirs:
            outcome = ingest_exposure(s, prod, d, now, settle_s=settle_s)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in ("ingested", "quarantined", "rejected"):
                ctx.event(f"exposure_{outcome}", night=night, expid=d.name)
        if counts.get("ingested") or counts.get("quarantined"):
            repo.set_service(s, prod, "last_ingest", now.isoformat(), now)
    return counts
