"""Campaign plan+save at scale, small: batches of nights and PostgreSQL's bulk path (ids from
the sequence, COPY, ``= ANY`` lookups) write exactly the jobs, links, edges and moves of one
unbatched save on SQLite. bench/bench_campaign.py times the same path at 1,000+ nights."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import aliased

from desinight import campaign as C
from desinight.app import open_context
from desinight.config import Config
from desinight.core.manifest import parse_manifest
from desinight.db import bulk, repo
from desinight.db.engine import transaction
from desinight.db.models import Exposure, Job, JobEdge, JobExposure, Production, StateEvent

NIGHTS = [int((date(2025, 3, 1) + timedelta(days=i)).strftime("%Y%m%d")) for i in range(24)]
CAMERAS = "b0,r0,z0,b1,r1,z1"


def _exposures() -> list[dict]:
    """Two tiles of three science exposures a night after its calibrations; every fifth
    night has no arcs or flats (its science falls back to an earlier night's psf and
    fiberflat, often in an earlier batch); one exposure a night has a bad camera."""
    rows, expid = [], 500000
    for i, night in enumerate(NIGHTS):
        kinds = ["ZERO", "ZERO"] + ([] if i % 5 == 3 else ["ARC", "ARC", "FLAT", "FLAT"])
        kinds += ["SCIENCE"] * 6
        for k, obstype in enumerate(kinds):
            expid += 1
            sci = obstype == "SCIENCE"
            rows.append({"expid": expid, "night": night, "obstype": obstype,
                         "tileid": 4000 + 2 * i + (k % 2) if sci else None,
                         "exptime": 900.0 if sci else 1.0, "program": "dark",
                         "seqnum": 1 + kinds[:k].count(obstype) if not sci else None,
                         "seqtot": kinds.count(obstype) if not sci else None,
                         "cameras": CAMERAS, "bad_cameras": "r1" if k == len(kinds) - 1 else "",
                         "status": "ingested", "raw_path": f"/raw/{night}/{expid:08d}"})
    return rows


def _source(url: str, root: Path):
    """A source production "daily" of NIGHTS (exposures ingested, nothing planned): (cfg, ctx)."""
    cfg = Config(production="daily", raw_root=root / "raw", redux_root=root / "redux",
                 state_dir=root / "state", db_url=url)
    ctx = open_context(cfg, backend=None, create=True)
    with transaction(ctx.sessions) as s:
        prod, _ = repo.ensure_production(s, "daily", str(cfg.raw_root), str(cfg.redux_root / "daily"))
        bulk.insert_nights(s, prod, NIGHTS)
        bulk.insert_exposures(s, prod, _exposures())
    return cfg, ctx


def _save_campaign(url: str, root: Path, batch: int | None, monkeypatch=None) -> tuple[list, int]:
    """A source production of NIGHTS, a campaign over them enqueued in batches of ``batch``
    jobs; returns (what was written, how many save_jobs calls it took)."""
    cfg, ctx = _source(url, root)
    calls = []
    if monkeypatch is not None:
        monkeypatch.setattr(bulk, "ANALYZE_AFTER", 100)   # the statistics refresh, small
        real = bulk.save_jobs
        monkeypatch.setattr(bulk, "save_jobs", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    m = parse_manifest(f'[campaign]\nname = "scale"\nsource = "daily"\ncode_version = "t"\n'
                       f'[selection]\nnight_ranges = [[{NIGHTS[0]}, {NIGHTS[-1]}]]\n', "c.toml")
    pv = C.enqueue(ctx.sessions, cfg, m, batch=batch)
    try:
        if monkeypatch is not None and url.startswith("postgresql"):
            with transaction(ctx.sessions) as s:   # ANALYZE ran: the planner knows the rows
                assert s.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'job'")) > 400
        return _dump(ctx, pv.new_total), len(calls)
    finally:
        ctx.sessions.kw["bind"].dispose()


def _dump(ctx, total: int) -> list:
    parent = aliased(Job)
    child = aliased(Job)
    with transaction(ctx.sessions) as s:
        pid = s.scalar(select(Production.id).where(Production.name == "scale"))
        jobs = s.execute(select(Job.key, Job.kind, Job.night, Job.tileid, Job.cameras, Job.state,
                                Job.hold_reason, Job.calib_night, Job.calib_nights, Job.campaign,
                                Job.resources)
                         .where(Job.production_id == pid).order_by(Job.key)).all()
        edges = s.execute(select(parent.key, child.key).join(JobEdge, JobEdge.parent_id == parent.id)
                          .join(child, child.id == JobEdge.child_id)
                          .where(child.production_id == pid).order_by(parent.key, child.key)).all()
        links = s.execute(select(Job.key, JobExposure.expid).join(JobExposure)
                          .where(Job.production_id == pid).order_by(Job.key, JobExposure.expid)).all()
        exps = s.execute(select(Exposure.expid, Exposure.status, Exposure.bad_cameras)
                         .where(Exposure.production_id == pid).order_by(Exposure.expid)).all()
        moves = s.execute(select(StateEvent.from_state, StateEvent.to_state, func.count())
                          .where(StateEvent.production_id == pid)
                          .group_by(StateEvent.from_state, StateEvent.to_state)
                          .order_by(StateEvent.from_state, StateEvent.to_state)).all()
    return [total, [tuple(r) for r in jobs], [tuple(r) for r in edges], [tuple(r) for r in links],
            [tuple(r) for r in exps], [tuple(r) for r in moves]]


def test_batched_save_writes_what_one_sqlite_save_writes(db_url, tmp_path, monkeypatch):
    want, _ = _save_campaign(f"sqlite:///{tmp_path / 'ref' / 'state' / 'desinight.db'}",
                             tmp_path / "ref", batch=None)
    got, batches = _save_campaign(db_url, tmp_path / "got", batch=40, monkeypatch=monkeypatch)
    assert batches > 5          # many batches of whole nights, the first ones long saved
    total, jobs, edges, links, exps, moves = want
    assert total == len(jobs) > 400 and len(edges) > len(jobs)
    # the fallback nights' science waits on an earlier night's calibrations
    assert any(p.split("/")[0] != c.split("/")[0] and p.endswith("/psfnight") for p, c in edges)
    assert {e[1] for e in exps} == {"planned"} and moves == [("ingested", "planned", len(exps))]
    assert got == want


def test_dry_run_counts_what_submit_saves(tmp_path):
    """`campaign plan` counts its jobs in batches without keeping them; same figures."""
    cfg, ctx = _source(f"sqlite:///{tmp_path / 'state' / 'desinight.db'}", tmp_path)
    m = parse_manifest(f'[campaign]\nname = "scale"\nsource = "daily"\ncode_version = "t"\n'
                       f'[selection]\nnight_ranges = [[{NIGHTS[0]}, {NIGHTS[-1]}]]\n', "c.toml")
    with transaction(ctx.sessions) as s:
        kept = C.preview(s, cfg, m)
        counted = C.preview(s, cfg, m, keep_jobs=False)
    assert counted.jobs == [] and len(kept.jobs) == counted.new_total > 400
    assert counted.summary() == kept.summary()
    assert C.enqueue(ctx.sessions, cfg, m).summary()["new_jobs"] == kept.summary()["new_jobs"]
    ctx.sessions.kw["bind"].dispose()


def test_head_revision_is_alembics_head():
    """migrate() skips alembic when the database is at the head it reads from the files."""
    from alembic.script import ScriptDirectory

    from desinight.db.engine import _alembic_config, _head_revision
    assert _head_revision() == ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def test_covering_indexes_migration_up_and_down(db_url, monkeypatch):
    """0007 swaps job/exposure indexes for covering ones on both databases, and back; migrate()
    upgrades a database behind the head (its fast path skips only a database at the head)."""
    from alembic import command
    from sqlalchemy import inspect

    from desinight.db.engine import _alembic_config, make_engine, migrate

    def names(engine, table):
        return {ix["name"] for ix in inspect(engine).get_indexes(table)}

    engine = make_engine(db_url)
    try:
        migrate(engine)
        new = {"ix_job_prod_night_state", "ix_job_prod_state_kind"}
        old = {"ix_job_prod_night", "ix_job_prod_state"}
        assert new <= names(engine, "job") and not old & names(engine, "job")
        assert "ix_exposure_prod_night_obstype" in names(engine, "exposure")
        command.downgrade(_alembic_config(engine), "0006_calib_cameras")
        assert old <= names(engine, "job") and not new & names(engine, "job")
        assert "ix_exposure_prod_night" in names(engine, "exposure")
        migrate(engine)
        assert new <= names(engine, "job") and not old & names(engine, "job")
        # at the head: alembic is not asked at all (a command's start-up skips importing it)
        import alembic.command
        monkeypatch.setattr(alembic.command, "upgrade", lambda *a, **k: pytest.fail("upgrade at head"))
        migrate(engine)
    finally:
        engine.dispose()
