"""Every attempt knows its SLURM id, also when the daemon died between sbatch and recording it
(real daemon, real cluster; DESINIGHT_TEST_CRASH_AT makes it exit right after sbatch)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from desinight import orchestrate as O
from desinight.app import open_context
from desinight.batch.exitfile import read_exit
from desinight.config import load_config
from desinight.db.models import Attempt
from desinight.testhooks import CRASH_EXIT
from tests.daemonkit import cli, fast_templates, night_completed, stop_daemon, wait_for, write_config
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CALIBS = [(0, "ZERO"), (1, "ARC"), (2, "FLAT")]   # 5 jobs: bias, arc, psfnight, flat, fiberflatnight


def unique_production(root: Path, **kw) -> tuple[Path, str]:
    """An initialised production with a name of its own: the cluster is shared, and find()
    matches every job whose comment carries this production's tag."""
    name = f"ids{uuid.uuid4().hex[:8]}"
    conf = write_config(root, backend="slurm", templates=fast_templates(root / "templates"), **kw)
    conf.write_text(conf.read_text().replace('production = "test"', f'production = "{name}"'))
    cli(conf, "init")
    return conf, name


def daemon(conf: Path, log: Path, crash_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DESINIGHT_TEST_CRASH_AT", None)
    if crash_at:
        env["DESINIGHT_TEST_CRASH_AT"] = crash_at
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=f, stderr=subprocess.STDOUT, env=env)


def attempts(root: Path) -> list[tuple[str, str | None, str, str]]:
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        rows = c.execute(select(Attempt.comment, Attempt.backend_id, Attempt.state,
                                Attempt.attempt_dir)).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def slurm_comments(name: str) -> dict[str, list[str]]:
    """{comment: [job ids]} of every job SLURM ran for this production (sacct by its tag)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hour", "-o", "JobID,Comment"],
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        jobid, _, comment = line.partition("|")
        if comment.startswith(f"desinight:{name}:"):
            found.setdefault(comment, []).append(jobid)
    return found


def test_killed_between_sbatch_and_id_write_every_attempt_gets_its_id(tmp_path, slurm_cluster):
    conf, name = unique_production(tmp_path)
    for seq, obstype in CALIBS:
        write_exposure(tmp_path / "raw", N, seq, obstype)
    # 1st run dies right after the first sbatch; its job (0.2 s) completes while no daemon runs.
    p = daemon(conf, tmp_path / "d1.out", crash_at="after_sbatch")
    assert p.wait(timeout=120) == CRASH_EXIT
    (orphan,) = attempts(tmp_path)
    assert orphan[1] is None                                   # submitted, id never written
    wait_for(lambda: read_exit(Path(orphan[3])), 60, what="the orphan's job to complete")
    # 2nd run: reconciles that one, then dies right after its own first sbatch.
    p = daemon(conf, tmp_path / "d2.out", crash_at="after_sbatch")
    assert p.wait(timeout=120) == CRASH_EXIT
    assert [a for a in attempts(tmp_path) if a[0] == orphan[0]][0][1]   # the completed one: id found
    # 3rd run, no crash: reconciles the second orphan and completes the night.
    p = daemon(conf, tmp_path / "d3.out")
    try:
        wait_for(lambda: night_completed(conf, N, 5), 180, what="the night to complete")
        assert stop_daemon(p)[0] == 0
    finally:
        if p.poll() is None:
            p.kill()
    rows = attempts(tmp_path)
    assert len(rows) == 5 and all(bid for _, bid, _, _ in rows)     # one attempt per job, all ids
    # SLURM's own record: each tag submitted once, under the id the database holds.
    def all_in_sacct():
        got = slurm_comments(name)
        return got if len(got) == 5 else None
    got = wait_for(all_in_sacct, 30, what="sacct to list the production's jobs")
    assert got == {comment: [bid] for comment, bid, _, _ in rows}


def test_attempt_settled_without_id_gets_it_at_start(tmp_path, slurm_cluster):
    """Left by older versions: a completed attempt with no SLURM id. The daemon's start-up
    reconcile asks SLURM by the attempt's tag and records the id."""
    conf, name = unique_production(tmp_path)
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    p = daemon(conf, tmp_path / "d1.out")
    try:
        wait_for(lambda: night_completed(conf, N, 1), 120, what="the bias job to complete")
    finally:
        stop_daemon(p)
    (comment, bid, _, _) = attempts(tmp_path)[0]
    wait_for(lambda: slurm_comments(name).get(comment), 30, what="sacct to list the job's tag")
    engine = create_engine(f"sqlite:///{tmp_path / 'state' / 'desinight.db'}")
    with engine.begin() as c:
        c.execute(Attempt.__table__.update().values(backend_id=None))
    engine.dispose()
    ctx = open_context(load_config(conf))
    assert O.reconcile(ctx, O.utc_now(), settled=True) == 1
    assert attempts(tmp_path)[0][1] == bid


def test_intent_of_a_job_that_just_ended_gets_its_id(tmp_path, slurm_cluster):
    """The window of the old loss: the daemon died after sbatch, the job ended a moment ago
    (gone from plain squeue, not yet in `sacct -S`, which lags an end by 2.5-4 s). Reconcile
    still finds the id (squeue -t all) instead of settling the attempt from its exit record."""
    conf, name = unique_production(tmp_path)
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    p = daemon(conf, tmp_path / "d1.out", crash_at="after_sbatch")
    assert p.wait(timeout=120) == CRASH_EXIT
    (comment, bid, _, adir) = attempts(tmp_path)[0]
    assert bid is None
    ctx = open_context(load_config(conf))
    rec = wait_for(lambda: read_exit(Path(adir)), 60, interval=0.05, what="the job's exit record")
    assert O.reconcile(ctx, O.utc_now(), settled=True) == 1
    (_, bid, state, _) = attempts(tmp_path)[0]
    assert bid == rec["backend_id"] and state == "submitted"   # the poll asks SLURM how it ended
    wait_for(lambda: (O.poll(ctx, O.utc_now()), attempts(tmp_path)[0][2] == "completed")[1], 30,
             what="the poll to record the end from SLURM")
