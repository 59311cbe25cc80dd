"""Ingest: record each complete exposure directory in the database, once.

Bad data never raises past this module: a bad exposure is quarantined with the reason the
operator reads in `status`, a second file claiming a known EXPID is a rejection, and a file
still in transfer is looked at again later (and listed in `status` as a sighting).

The files are read in reader processes (readers.py), never here: a reader that crashes,
hangs or runs out of memory quarantines that exposure only. Each exposure is recorded in
its own SAVEPOINT, so an error recording one (a value the database refuses, anything else)
quarantines that one with the error's class and message, and the others are recorded.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, Integer, String, delete, select
from sqlalchemy.orm import Session

from . import rawdata, readers
from .core.states import ExposureStatus
from .db import repo
from .db.engine import transaction
from .db.models import Exposure, Production, Rejection, Sighting
from .exposure_edit import auto_laststep
from .orchestrate import Context
from .transitions import daemon_actor, transition

log = logging.getLogger("desinight")

#: integer ranges of the column types (PostgreSQL refuses beyond them; SQLite would not)
_INT_RANGE = {Integer: (-2**31, 2**31 - 1), BigInteger: (-2**63, 2**63 - 1)}
#: what an outcome leaves in the sightings list: only 'incomplete' stays listed
RECORDED = ("ingested", "quarantined", "rejected", "known")


def column_problem(fields: dict) -> str | None:
    """The first value that does not fit its Exposure column (length or integer range),
    read from the model, as the reason an operator reads; None when all fit."""
    cols = Exposure.__table__.columns
    for name, value in fields.items():
        if value is None or name not in cols:
            continue
        typ = cols[name].type
        if isinstance(value, str) and isinstance(typ, String) and typ.length and len(value) > typ.length:
            return (f"{name.upper()} is {len(value)} characters, longer than the "
                    f"{typ.length} the database column holds")
        if isinstance(value, int) and not isinstance(value, bool):
            for t, (lo, hi) in _INT_RANGE.items():
                if type(typ) is t and not lo <= value <= hi:
                    bits = 32 if t is Integer else 64
                    return f"{name.upper()} {value} is beyond the database column's range ({bits}-bit integer)"
    return None


def inspect_dirs(cfg, dirs: list[Path], verify_data: bool = True) -> dict[Path, readers.Reply]:  # noqa: ANN001
    """Each directory read by a reader process, all in one batch."""
    if not dirs:
        return {}
    root = str(cfg.raw_root.resolve())
    reqs = [{"op": "inspect", "expdir": str(d), "raw_root": root, "verify": verify_data} for d in dirs]
    return dict(zip(dirs, readers.pool_for(cfg).run(reqs)))


def ingest_exposure(s: Session, prod: Production, expdir: Path, now: datetime,
                    verify_data: bool = True, settle_s: float = 0.0, cfg=None) -> str:  # noqa: ANN001
    """Record one exposure directory (read by a reader process). Returns 'ingested',
    'quarantined', 'rejected', 'known' or 'incomplete'. Never raises on bad data."""
    from .config import Config
    cfg = cfg or Config(raw_root=expdir.parent.parent)
    known = repo.known_expids(s, prod)
    if not _needs_look(s, prod, expdir, known):
        return "known"
    reply = inspect_dirs(cfg, [expdir], verify_data)[expdir]
    return _record_one(s, prod, expdir, reply, now, settle_s, known)[0]


def _needs_look(s: Session, prod: Production, expdir: Path, known: dict[int, str]) -> bool:
    """False for a directory already recorded (and, if quarantined, unchanged since)."""
    expid = int(expdir.name)
    if expid in known and Path(known[expid]).parent == expdir:
        existing = _existing(s, prod, expid)
        return existing.status == ExposureStatus.QUARANTINED.value and _changed_since(
            expdir, expid, existing.ingested_at)
    return not s.scalar(select(Rejection.id).where(Rejection.production_id == prod.id,
                                                   Rejection.path == str(expdir)))


def _existing(s: Session, prod: Production, expid: int) -> Exposure | None:
    return s.scalar(select(Exposure).where(Exposure.production_id == prod.id, Exposure.expid == expid))


def _record_one(s: Session, prod: Production, expdir: Path, reply: readers.Reply, now: datetime,
                settle_s: float, known: dict[int, str]) -> tuple[str, str | None]:
    """Record one reader's answer in a SAVEPOINT; (outcome, reason). Any error recording
    it rolls back that savepoint only and quarantines the exposure with the error."""
    sp = s.begin_nested()
    try:
        out = _record(s, prod, expdir, reply, now, settle_s, known)
        sp.commit()
        return out
    except Exception as e:  # noqa: BLE001 - one exposure must never roll back the others
        sp.rollback()
        reason = f"{type(e).__name__}: {_one_line(e)}"
        log.warning("ingest_error", extra={"fields": {"dir": str(expdir), "error": reason}})
    sp = s.begin_nested()
    try:
        _quarantine(s, prod, expdir, reason, now, known)
        sp.commit()
        return "quarantined", reason
    except Exception as e:  # noqa: BLE001 - even the quarantine row refused: leave it listed
        sp.rollback()
        return "error", f"{reason}; and could not quarantine: {type(e).__name__}: {_one_line(e)}"


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _quarantine(s: Session, prod: Production, expdir: Path, reason: str, now: datetime,
                known: dict[int, str]) -> str:
    expid, night = int(expdir.name), int(expdir.parent.name)
    existing = _existing(s, prod, expid) if expid in known else None
    if existing is not None and Path(existing.raw_path).parent == expdir:
        if existing.status != ExposureStatus.QUARANTINED.value:
            transition(s, [existing.id], ExposureStatus.QUARANTINED, reason, daemon_actor())
        existing.quarantine_reason, existing.ingested_at = reason, now
        return "known"
    if existing is not None:
        return _reject(s, prod, night, expdir, f"duplicate EXPID {expid} (also {known[expid]}); "
                                               f"and bad: {reason}")
    repo.add_exposure(s, prod, expid=expid, night=night, obstype="UNKNOWN", tileid=None,
                      raw_path=str(rawdata.raw_file(expdir, expid)),
                      status=ExposureStatus.QUARANTINED.value, quarantine_reason=reason,
                      arrived_at=now, ingested_at=now)
    known[expid] = str(rawdata.raw_file(expdir, expid))
    return "quarantined"


def _record(s: Session, prod: Production, expdir: Path, reply: readers.Reply, now: datetime,
            settle_s: float, known: dict[int, str]) -> tuple[str, str | None]:
    night, expid = int(expdir.parent.name), int(expdir.name)
    existing = None
    if expid in known and Path(known[expid]).parent == expdir:
        existing = _existing(s, prod, expid)
    if reply.kind == "incomplete":
        return "incomplete", reply.message
    if reply.kind is not None:
        reason = reply.message
        if reply.kind == "bad" and reply.extra.get("truncated") and _age(expdir, expid, now) < settle_s:
            return "incomplete", "raw file still being transferred"
        if existing is not None:
            existing.quarantine_reason, existing.ingested_at = reason, now
            return "known", reason
        return _quarantine(s, prod, expdir, reason, now, known), reason
    raw = rawdata.exposure_from_json(reply.ok) if isinstance(reply.ok, dict) else None
    if raw is None:
        return _quarantine(s, prod, expdir, "reader answer not understood", now, known), None
    if raw.bad_cameras and _age(expdir, expid, now) < settle_s:
        return "incomplete", "cameras missing from a fresh raw file"
    if raw.expid in known and existing is None:
        return _reject(s, prod, night, expdir,
                       f"duplicate EXPID {raw.expid}: already ingested from {known[raw.expid]}"), None
    status, reason = ExposureStatus.INGESTED, None
    if raw.night != night:
        status, reason = ExposureStatus.QUARANTINED, (f"header NIGHT {raw.night} does not match "
                                                      f"directory night {night}")
    fields = dict(expid=raw.expid, night=night, obstype=raw.obstype, tileid=raw.tileid,
                  exptime=raw.exptime, program=raw.program, seqnum=raw.seqnum, seqtot=raw.seqtot,
                  cameras=",".join(raw.cameras), bad_cameras=",".join(raw.bad_cameras),
                  raw_path=str(raw.raw_path), status=status.value, quarantine_reason=reason,
                  ingested_at=now)
    problem = column_problem(fields)
    if problem is not None:
        return _quarantine(s, prod, expdir, problem, now, known), problem
    if existing is not None:   # a re-transferred exposure, now good
        to = ExposureStatus(fields.pop("status"))
        for k, v in fields.items():
            setattr(existing, k, v)
        transition(s, [existing.id], to, "raw file re-transferred", daemon_actor())
    else:
        repo.add_exposure(s, prod, arrived_at=now, **fields)
        known[raw.expid] = str(raw.raw_path)
    return ("ingested" if status is ExposureStatus.INGESTED else "quarantined"), reason


def _raw_mtime(expdir: Path, expid: int) -> float:
    try:
        return rawdata.raw_file(expdir, expid).lstat().st_mtime
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
                 settle_s: float = 0.0,
                 problems: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Scan a night (or just the given exposure dirs) and record what is complete.

    ``problems`` (when given) receives (outcome, one line) per exposure quarantined,
    rejected, incomplete or left unrecorded, and per directory that cannot complete as it
    stands (`desinight ingest` prints them)."""
    counts: dict[str, int] = {}
    dirs = only if only is not None else rawdata.list_exposure_dirs(ctx.cfg.raw_root, night)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.ensure_night(s, prod, night)
        known = repo.known_expids(s, prod)
        todo = [d for d in dirs if _needs_look(s, prod, d, known)]
    # Outside any transaction: a slow reader never holds the database.
    replies = inspect_dirs(ctx.cfg, todo)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        known = repo.known_expids(s, prod)
        seen: dict[Path, tuple[str, str]] = {}
        found: list[tuple[Path, str, str]] = []
        for d in dirs:
            if d not in replies:
                counts["known"] = counts.get("known", 0) + 1
                continue
            outcome, reason = _record_one(s, prod, d, replies[d], now, settle_s, known)
            if outcome == "ingested":
                auto_laststep(s, prod, int(d.name), ctx.cfg)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in ("ingested", "quarantined", "rejected"):
                # quarantined/rejected: the daemon's alert line names why and where
                why = {} if outcome == "ingested" else {"reason": reason, "path": str(d)}
                ctx.event(f"exposure_{outcome}", night=night, expid=d.name, **why)
            if outcome in ("quarantined", "rejected", "error", "incomplete"):
                found.append((d, outcome, reason or "waiting for files"))
            if outcome in ("incomplete", "error"):
                seen[d] = ("incomplete" if outcome == "incomplete" else "error",
                           reason or "waiting for files")
        # The daemon's ticks look at a few dirs; its full scan surveys the nights (note_sightings).
        odd = rawdata.survey_night(ctx.cfg.raw_root, night) if only is None else []
        done = _recorded_dirs(s, prod, night)
        odd = [o for o in odd if o.path not in done]   # quarantined already says why
        record_sightings(s, prod, night, now, seen, odd, recorded=[d for d in dirs if d not in seen],
                         full=only is None)
        if problems is not None:
            oddp = {o.path for o in odd}   # a FIFO says more than "incomplete"
            problems.extend((k, f"{d}: {k}: {r}") for d, k, r in found if k != "incomplete" or d not in oddp)
            problems.extend((o.kind, f"{o.path}: {o.kind}: {o.reason}") for o in odd)
        if counts.get("ingested") or counts.get("quarantined"):
            repo.set_service(s, prod, "last_ingest", now.isoformat(), now)
    return counts


def record_sightings(s: Session, prod: Production, night: int, now: datetime,
                     waiting: dict[Path, tuple[str, str]], odd: list[rawdata.Oddity],
                     recorded: list[Path], full: bool) -> None:
    """Upsert the night's sightings: directories still waiting and odd entries; drop those
    recorded since. ``full``: the whole night was looked at, so a sighting not seen again
    (the directory went away or was fixed) is dropped too."""
    rows = {r.path: r for r in s.scalars(select(Sighting).where(
        Sighting.production_id == prod.id, Sighting.night == night))}
    want: dict[str, tuple[str, str]] = {str(p): v for p, v in waiting.items()}
    for o in odd:   # more telling than "incomplete": a loop or a FIFO never completes
        want[str(o.path)] = (o.kind, o.reason)
    for path, (kind, reason) in want.items():
        row = rows.get(path)
        if row is None:
            s.add(Sighting(production_id=prod.id, night=night, path=path, kind=kind,
                           reason=reason[:1000], first_seen=now, last_seen=now))
        else:
            row.kind, row.reason, row.last_seen = kind, reason[:1000], now
    gone = {str(p) for p in recorded} - set(want)
    if full:
        gone |= set(rows) - set(want)
    if gone:
        s.execute(delete(Sighting).where(Sighting.production_id == prod.id,
                                         Sighting.night == night, Sighting.path.in_(gone)))


def note_sightings(ctx: Context, dirs: list[Path], now: datetime, nights: list[int]) -> None:
    """The daemon's full scan: list what in ``nights`` is not ingested and why (exposure
    directories still waiting, odd entries), and drop what has been recorded since."""
    by_night: dict[int, list[Path]] = {n: [] for n in nights}
    for d in dirs:
        by_night.setdefault(int(d.parent.name), []).append(d)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        for night, ndirs in by_night.items():
            known = _recorded_dirs(s, prod, night)
            waiting = {d: ("incomplete", rawdata.waiting_reason(d)) for d in ndirs if d not in known}
            odd = [o for o in rawdata.survey_night(ctx.cfg.raw_root, night) if o.path not in known]
            record_sightings(s, prod, night, now, waiting, odd,
                             recorded=[d for d in ndirs if d in known], full=True)


def _recorded_dirs(s: Session, prod: Production, night: int) -> set[Path]:
    """Exposure directories of the night with an exposure row or a rejection."""
    known = {Path(p).parent for p in repo.known_expids(s, prod, night).values()}
    return known | {Path(p) for p in s.scalars(select(Rejection.path).where(
        Rejection.production_id == prod.id, Rejection.night == night))}
