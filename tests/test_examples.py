"""Every file in examples/ is exercised: the config through the real loader, the campaign
manifests through `campaign plan`, the calibration override through the loader and planner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from desinight import orchestrate as O
from desinight.app import open_context
from desinight.calib_choice import load_override
from desinight.config import load_config
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.ingest import ingest_night
from tests.daemonkit import cli, write_config
from tests.fakes import FakeBackend
from tests.rawfixture import N, write_night

EX = Path(__file__).resolve().parent.parent / "examples"
N2 = 20261125


def test_production_config_loads(tmp_path, monkeypatch):
    for var, sub in (("DESI_SPECTRO_DATA", "raw"), ("DESI_SPECTRO_REDUX", "redux"),
                     ("DESINIGHT_STATE", "state")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    cfg = load_config(EX / "desinight.toml", env={})
    assert cfg.backend == "slurm" and cfg.db_url.startswith("postgresql+psycopg://")
    assert cfg.raw_root == tmp_path / "raw" and cfg.state_dir == tmp_path / "state"
    assert (cfg.slurm_qos, cfg.watch_mode, cfg.max_calib_age_nights) == ("realtime", "polling", 7)
    assert cfg.kinds["redshift"]["mem_mb"] == 64000
    assert cfg.calib_overrides == tmp_path / "state" / "calib-overrides"


def _daily(tmp_path: Path, before_planning=None):
    """Production 'daily' with two nights ingested and planned, as the examples expect."""
    conf = write_config(tmp_path)
    conf.write_text(conf.read_text().replace('production = "test"', 'production = "daily"'))
    cfg = load_config(conf, env={})
    ctx = open_context(cfg, backend=FakeBackend(), create=True)
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, "daily", str(cfg.raw_root), str(cfg.prod_dir))
    if before_planning:
        before_planning(cfg)
    for n in (N, N2):
        write_night(cfg.raw_root, n)
        ingest_night(ctx, n, O.utc_now())
        O.plan(ctx, n, closed=True)
    return conf, ctx


@pytest.fixture
def daily(tmp_path):
    conf, ctx = _daily(tmp_path)
    yield conf, ctx
    ctx.sessions.kw["bind"].dispose()


@pytest.mark.slow
def test_campaign_manifests_plan(daily, tmp_path):
    conf, ctx = daily
    full = json.loads(cli(conf, "campaign", "plan", str(EX / "campaign-full.toml"), "--json").stdout)
    assert full["campaign"] == "reproc-2027a" and full["nights"] == 2 and full["new_total"] == 22
    r = cli(conf, "campaign", "plan", str(EX / "campaign-partial.toml"), check=False)
    assert r.returncode == 2 and f"production daily has no completed {N}/biasnight" in r.stderr
    from tests.test_campaign import _run_calibrations
    _run_calibrations(ctx, N)
    _run_calibrations(ctx, N2)
    part = json.loads(cli(conf, "campaign", "plan", str(EX / "campaign-partial.toml"),
                          "--json").stdout)
    assert part["steps"] == ["science", "stdstars", "fluxcalib", "redshift", "cumulative"]
    assert part["new_jobs"] == {"science": 4, "stdstars": 2, "fluxcalib": 4, "redshift": 2}


def test_calib_override_example_loads_and_plans(tmp_path):
    ov = load_override(EX / "calib-20261125.toml", N2)
    assert ov.ref_night == N and ov.exclude == {26112501}

    def put_in_place(cfg):
        cfg.calib_overrides.mkdir(parents=True)
        shutil.copy(EX / "calib-20261125.toml", cfg.calib_overrides)
    conf, ctx = _daily(tmp_path, put_in_place)
    try:
        with transaction(ctx.sessions) as s:
            prod = repo.get_production(s, "daily")
            assert f"{N2}/arc/26112501" not in repo.job_keys(s, prod, N2)
            assert repo.get_job(s, prod, f"{N2}/science/26112503").calib_night == N
            assert repo.get_job(s, prod, f"{N}/science/{N - 20000000:06d}03").calib_night is None
        shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
        assert shown["choice"]["comment"] == "arc lamp 3 off during the first arc"
        assert shown["cameras"]["b0"]["psfnight"] == N and shown["science_calib_nights"] == [N]
    finally:
        ctx.sessions.kw["bind"].dispose()
