"""`--dry-run` on resubmit and cancel: the same answer as the real command, and the database
before and after is identical (jobs, attempts, events, requested resources)."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select

from desinight.db.models import Attempt, Job, StateEvent
from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night


def _snapshot(root) -> tuple:
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        jobs = c.execute(select(Job.key, Job.state, Job.reason, Job.resources).order_by(Job.key)).all()
        atts = c.execute(select(func.count()).select_from(Attempt)).scalar()
        events = c.execute(select(func.count()).select_from(StateEvent)).scalar()
    engine.dispose()
    return tuple(map(tuple, jobs)), atts, events


def test_dry_run_resubmit_and_cancel_change_nothing(tmp_path):
    tpl = fast_templates(tmp_path / "tpl", overrides={"stdstars": "exit 3", "redshift": "sleep 60"})
    conf = write_config(tmp_path, templates=tpl)
    cli(conf, "init")
    write_night(tmp_path / "raw")
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)
    std = f"{N}/stdstars/1000"

    before = _snapshot(tmp_path)
    dry = cli(conf, "resubmit", std, "--time", "9", "--dry-run").stdout
    assert _snapshot(tmp_path) == before
    assert f"{std}: time_minutes 15 -> 9 (operator)" in dry
    assert dry.count("(operator)") == 1          # not for the dependents it re-plans
    would = dry.split("would resubmit ", 1)[1].split(": ", 1)[1].strip().split(", ")
    real = cli(conf, "resubmit", std, "--time", "9").stdout
    assert real.split("submitted now): ", 1)[1].strip().split(", ") == would
    assert _snapshot(tmp_path) != before

    before = _snapshot(tmp_path)
    dry = cli(conf, "cancel", str(N), "--dry-run").stdout
    assert _snapshot(tmp_path) == before
    assert dry.startswith("dry run: would cancel ")
    real = cli(conf, "cancel", str(N)).stdout
    assert real.replace("cancelled", "", 1) == dry.replace("dry run: would cancel", "", 1)
    assert _snapshot(tmp_path) != before
