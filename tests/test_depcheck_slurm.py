"""Dependencies without --kill-on-invalid-dep, on the real cluster in both of its modes
(DependencyParameters=kill_invalid_depend on and off, switched by scripts/local-slurm up):
a failed parent, a purged parent and a never-satisfiable dependency, through the orchestrator."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from desinight import orchestrate as O
from desinight.app import make_backend, open_context
from desinight.batch.exitfile import read_exit
from desinight.batch.render import job_name
from desinight.config import Config
from desinight.core.states import JobState
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Attempt, Job
from desinight.ingest import ingest_night
from tests.daemonkit import fast_templates, wait_for
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def cluster_kills_invalid_depend() -> bool:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                           check=True).stdout
    return "kill_invalid_depend" in shown


@pytest.fixture(params=["kill_invalid_depend", "no_kill_invalid_depend"])
def mode(request, slurm_cluster):
    """The cluster in one dependency mode for the test; the mode it had is restored after."""
    on = request.param == "kill_invalid_depend"
    original = cluster_kills_invalid_depend()
    if on != original:
        slurm_cluster.up(kill_invalid_depend=on)
    try:
        assert cluster_kills_invalid_depend() is on
        yield on
    finally:
        if on != original:
            slurm_cluster.up(kill_invalid_depend=original)


def make_ctx(root: Path, bias: str) -> O.Context:
    cfg = Config(production=f"dep{uuid.uuid4().hex[:8]}", raw_root=root / "raw",
                 redux_root=root / "redux", state_dir=root / "state", backend="slurm",
                 templates_dir=fast_templates(root / "tpl", overrides={"biasnight": bias}))
    ctx = open_context(cfg, backend=make_backend(cfg), create=True)
    assert ctx.backend.kill_on_invalid_dep is False          # the default under test
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    return ctx


def add(ctx: O.Context, *specs: tuple[int, str]) -> None:
    for seq, obstype in specs:
        write_exposure(ctx.cfg.raw_root, N, seq, obstype)
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N)


def jobs(ctx: O.Context) -> dict[str, dict]:
    """{kind: state, reason, attempts [(backend id, depends_on)], name} of the night's jobs."""
    with transaction(ctx.sessions) as s:
        return {j.kind: {"state": j.state, "reason": j.reason, "id": j.id,
                         "name": job_name(ctx.production, j.id, j.kind),
                         "attempts": [(a.backend_id, a.depends_on, a.attempt_dir) for a in j.attempts]}
                for j in s.scalars(select(Job).options(selectinload(Job.attempts)))}


def slurm_knows_name(name: str) -> bool:
    """Did SLURM ever see a job of this name (live in slurmctld, or in accounting)?"""
    q = subprocess.run(["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"],
                       capture_output=True, text=True).stdout.strip()
    a = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hour", "--name", name, "-o", "JobID"],
                       capture_output=True, text=True).stdout.strip()
    return bool(q or a)


def drive(ctx: O.Context, timeout: float = 120) -> None:
    def step() -> bool:
        now = O.utc_now()
        O.submit_ready(ctx, now)
        O.poll(ctx, now)
        return O.night_done(ctx, N)
    wait_for(step, timeout, interval=0.5, what="the night's jobs to settle")


def ended_in_slurm(ctx: O.Context, bid: str) -> bool:
    got = ctx.backend.poll([bid])
    return bid in got and got[bid].state is JobState.FAILED


def test_failed_parent_settles_child_without_sbatch(mode, tmp_path):
    ctx = make_ctx(tmp_path, "exit 3")
    add(ctx, (0, "ZERO"))
    assert O.submit_ready(ctx, O.utc_now()) == 1
    bias_id = jobs(ctx)["biasnight"]["attempts"][0][0]
    # The bias fails in SLURM; the daemon has not polled yet, so its record still says queued.
    wait_for(lambda: ended_in_slurm(ctx, bias_id), 60, what="the bias job to fail in SLURM")
    add(ctx, (1, "ARC"))
    assert jobs(ctx)["biasnight"]["state"] in ("submitted", "pending", "running")
    assert O.submit_ready(ctx, O.utc_now()) == 0     # checked in SLURM: arc is not submitted
    assert jobs(ctx)["arc"]["attempts"] == [] and jobs(ctx)["arc"]["state"] == "planned"
    # The poll records the failure; the children are settled without ever reaching SLURM.
    O.poll(ctx, O.utc_now())
    O.submit_ready(ctx, O.utc_now())
    got = jobs(ctx)
    assert got["biasnight"]["state"] == "failed"
    for kind in ("arc", "psfnight"):
        assert got[kind]["state"] == "dep_failed" and got[kind]["attempts"] == []
        assert "biasnight failed" in got[kind]["reason"]
        assert not slurm_knows_name(got[kind]["name"])


def test_purged_parent_adds_no_afterok(mode, tmp_path):
    """Completed long ago (SLURM purged its id): no afterok at all. Recorded queued but unknown
    to SLURM (purged while no daemon polled) and in fact failed: the child is not submitted
    (afterok on a purged id would run it at once), the exit record settles the parent."""
    ctx = make_ctx(tmp_path, "true")
    add(ctx, (0, "ZERO"))
    drive(ctx)
    with transaction(ctx.sessions) as s:   # as if purged: SLURM knows no job 999999
        s.scalars(select(Attempt)).one().backend_id = "999999"
    add(ctx, (1, "ARC"))
    drive(ctx)
    got = jobs(ctx)
    assert got["arc"]["state"] == got["psfnight"]["state"] == "completed"
    assert got["arc"]["attempts"][0][1] == ""            # no --dependency for a completed parent

    ctx2 = make_ctx(tmp_path / "b", "exit 3")
    add(ctx2, (0, "ZERO"))
    O.submit_ready(ctx2, O.utc_now())
    _, _, adir = jobs(ctx2)["biasnight"]["attempts"][0]
    wait_for(lambda: read_exit(Path(adir)), 60, what="the bias job's exit record")
    rec = json.loads((Path(adir) / "exit.json").read_text())
    (Path(adir) / "exit.json").write_text(json.dumps({**rec, "backend_id": "999999"}))
    with transaction(ctx2.sessions) as s:
        s.scalars(select(Attempt)).one().backend_id = "999999"
    add(ctx2, (1, "ARC"))
    assert O.submit_ready(ctx2, O.utc_now()) == 0
    assert jobs(ctx2)["arc"]["attempts"] == []
    drive(ctx2)
    got = jobs(ctx2)
    assert got["biasnight"]["state"] == "failed"
    assert got["arc"]["state"] == "dep_failed" and got["arc"]["attempts"] == []
    assert not slurm_knows_name(got["arc"]["name"])


def test_never_satisfied_dependency_is_settled(mode, tmp_path):
    """Submitted with afterok while the parent ran, then the parent failed: SLURM cancels the
    child (kill_invalid_depend on) or leaves it PENDING DependencyNeverSatisfied (off), where
    the daemon scancels it. Either way dep_failed, and the child never ran."""
    ctx = make_ctx(tmp_path, "sleep 4; exit 3")
    add(ctx, (0, "ZERO"), (1, "ARC"))
    O.submit_ready(ctx, O.utc_now())
    got = jobs(ctx)
    bias_id = got["biasnight"]["attempts"][0][0]
    arc_id, arc_deps, _ = got["arc"]["attempts"][0]
    assert arc_deps == bias_id                           # afterok on a parent SLURM had queued
    drive(ctx)
    got = jobs(ctx)
    assert got["biasnight"]["state"] == "failed"
    assert got["arc"]["state"] == got["psfnight"]["state"] == "dep_failed"
    assert "biasnight failed" in got["arc"]["reason"]
    # In SLURM too the child is over (not pending forever) and never ran.
    def cancelled() -> str | None:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", arc_id, "-o", "State,NodeList"],
                             capture_output=True, text=True).stdout.strip()
        return out if out.startswith("CANCELLED") else None
    row = wait_for(cancelled, 30, what="the child to be cancelled in SLURM")
    assert row.endswith("None assigned")
    assert read_exit(Path(got["arc"]["attempts"][0][2])) is None
