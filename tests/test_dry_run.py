"""`--dry-run` on resubmit and cancel: the same answer as the real command, and the database
before and after is identical (jobs, attempts, events, requested resources)."""

from __future__ import annotations

import pytest
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


@pytest.mark.slow
def test_dry_run_ingest_changes_nothing_and_matches_the_real_one(tmp_path, capsys):
    from desinight.cli.main import main
    from desinight.db.models import Exposure, Night
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl"))

    def run(*args: str) -> str:     # in-process: no interpreter start-up per call
        capsys.readouterr()
        main(["--config", str(conf), *args])
        return capsys.readouterr().out

    run("init")
    write_night(tmp_path / "raw")

    def dump() -> tuple:
        engine = create_engine(f"sqlite:///{tmp_path / 'state' / 'desinight.db'}")
        with engine.connect() as c:
            n = tuple(c.execute(select(func.count()).select_from(t)).scalar() for t in (Exposure, Night))
        engine.dispose()
        return _snapshot(tmp_path), n

    before = dump()
    dry = run("ingest", str(N), "--dry-run")
    assert dump() == before
    assert f"dry run: night {N}: would ingest 5 exposures" in dry
    assert "would plan 11 jobs" in dry and "would submit 11 jobs now" in dry
    assert f"  {N}/redshift/1000/{(N - 20000000) * 100 + 4:08d} planned" in dry
    real = run("ingest", str(N))
    assert "5 exposures ingested" in real and "11 jobs submitted" in real
    run("cancel", str(N))
