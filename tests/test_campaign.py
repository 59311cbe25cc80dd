"""Campaigns against a real database: preview, enqueue (idempotent), throttle, bad manifests
through the CLI, and an end-to-end reprocessing on the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from desinight import campaign as C
from desinight import orchestrate as O
from desinight.ingest import ingest_night
from desinight.core.manifest import ManifestError, parse_manifest
from desinight.core.states import JobState
from desinight.db.engine import transaction
from desinight.db.models import Attempt, Exposure, Job, Production
from tests.daemonkit import cli, cli_inproc, fast_templates, start_daemon, stop_daemon, wait_for, write_config
from tests.rawfixture import N, write_night

N2 = 20261125
N3 = 20261126   # on disk only: never ingested by the nightly production


def manifest(tmp_path: Path, body: str = "", name: str = "reproc", nights=(N, N2),
             throttle: int = 3) -> Path:
    p = tmp_path / "campaign.toml"
    p.write_text(f'[campaign]\nname = "{name}"\nsource = "test"\ncode_version = "0.4.0"\n'
                 f"throttle = {throttle}\n\n[selection]\nnights = {list(nights)}\n{body}")
    return p


def _snapshot(ctx, production: str = "test") -> list[tuple]:
    with transaction(ctx.sessions) as s:
        prod = s.scalar(select(Production).where(Production.name == production))
        jobs = s.execute(select(Job.key, Job.state, Job.campaign).where(
            Job.production_id == prod.id).order_by(Job.key)).all()
        exps = s.execute(select(Exposure.expid, Exposure.status, Exposure.bad_cameras).where(
            Exposure.production_id == prod.id).order_by(Exposure.expid)).all()
        atts = s.scalar(select(func.count()).select_from(Attempt).join(Job).where(
            Job.production_id == prod.id))
    return [tuple(jobs), tuple(exps), atts]


@pytest.fixture
def nightly(ctx, cfg):
    """The nightly production 'test' with two ingested, planned nights, and a third night on
    disk that it never ingested."""
    write_night(cfg.raw_root, N)
    write_night(cfg.raw_root, N2, science=3, tile=2000)
    write_night(cfg.raw_root, N3, science=1, tile=3000)
    now = O.utc_now()
    for n in (N, N2):
        ingest_night(ctx, n, now)
        O.plan(ctx, n, closed=True)
    return ctx


def _preview(ctx, m):
    with transaction(ctx.sessions) as s:
        return C.preview(s, ctx.cfg, m)


def test_preview_counts_and_idempotent_enqueue(nightly, tmp_path):
    ctx = nightly
    before = _snapshot(ctx)
    m = parse_manifest(manifest(tmp_path, nights=(N, N2, N3)).read_text(), "campaign.toml")
    pv = _preview(ctx, m)
    s = pv.summary()
    assert s["nights"] == 3 and s["exposures"] == 5 + 6 + 4 and not s["exists"]
    # per night: bias, arc, psf, flat, ff, one science per exposure, stdstars, fluxcalib, redshift
    assert s["new_jobs"] == {"biasnight": 3, "arc": 3, "psfnight": 3, "flat": 3,
                             "fiberflatnight": 3, "science": 6, "stdstars": 3, "fluxcalib": 6,
                             "redshift": 3}
    assert s["node_hours"] > 0 and s["node_hours_limit"] >= s["node_hours"]
    assert _snapshot(ctx) == before   # a dry run writes nothing

    pv = C.enqueue(ctx.sessions, ctx.cfg, m)
    assert pv.new_total == 33 and pv.jobs == []   # saved in batches, counted
    assert _snapshot(ctx) == before   # the nightly production is untouched
    again = C.enqueue(ctx.sessions, ctx.cfg, m)
    assert again.new_total == 0 and again.new_exposures == [] and again.exists
    assert sum(again.summary()["existing_jobs"].values()) == 33
    camp = _snapshot(ctx, "reproc")
    assert {j[2] for j in camp[0]} == {"reproc"} and {j[1] for j in camp[0]} == {"planned"}
    with transaction(ctx.sessions) as s:
        prod = s.scalar(select(Production).where(Production.name == "reproc"))
        assert prod.kind == "campaign" and prod.redux_dir.endswith("/redux/reproc")
        assert prod.settings["source"] == "test" and "[campaign]" in prod.settings["manifest"]
        # the edges are there: a campaign science job waits on its night's calibrations
        from desinight.db import repo
        sci = repo.get_job(s, prod, f"{N}/science/{(N - 20000000) * 100 + 3:08d}")
        assert {p.key for p in repo.parents_of(s, [sci.id])[sci.id]} == {
            f"{N}/biasnight", f"{N}/psfnight", f"{N}/fiberflatnight"}
    # the same selection written differently adds nothing
    m2 = parse_manifest(manifest(tmp_path, nights=(N, N2, N3)).read_text().replace(
        f"nights = {[N, N2, N3]}", f"nights = {[N, N2, N3]}\nexclude_expids = []"), "c.toml")
    assert C.enqueue(ctx.sessions, ctx.cfg, m2).new_total == 0


def test_widening_a_campaign_adds_only_the_new_nights_jobs(nightly, tmp_path):
    ctx = nightly
    narrow = parse_manifest(manifest(tmp_path, name="widen", nights=(N,)).read_text(), "c.toml")
    first = C.enqueue(ctx.sessions, ctx.cfg, narrow)
    assert first.new_total == 11
    wide = parse_manifest(manifest(tmp_path, name="widen", nights=(N, N3)).read_text(), "c.toml")
    added = _preview(ctx, wide)     # the dry run keeps the new jobs themselves
    # night N3 (one science exposure): bias, arc, psf, flat, ff, science, stdstars, cal, z
    assert sorted(j.kind for j in added.jobs) == sorted(
        ["biasnight", "arc", "psfnight", "flat", "fiberflatnight", "science", "stdstars",
         "fluxcalib", "redshift"])
    assert {j.night for j in added.jobs} == {N3}
    assert {e["night"] for e in added.new_exposures} == {N3}
    assert C.enqueue(ctx.sessions, ctx.cfg, wide).new_by_kind == added.new_by_kind
    with transaction(ctx.sessions) as s:
        prod = s.scalar(select(Production).where(Production.name == "widen"))
        count = s.scalar(select(func.count()).select_from(Job).where(Job.production_id == prod.id))
        by_night = dict(s.execute(select(Job.night, func.count()).where(
            Job.production_id == prod.id).group_by(Job.night)).all())
    assert count == 11 + 9 and by_night == {N: 11, N3: 9}


def test_steps_from_extract_and_bad_cameras(nightly, tmp_path):
    ctx = nightly
    sci = (N - 20000000) * 100 + 3
    body = (f'[selection.bad_cameras]\n"{sci}" = "b0"\n\n[steps]\nfrom = "extract"\n'
            '[kinds.science]\ntime_minutes = 45\n')
    m = parse_manifest(manifest(tmp_path, body, nights=(N,)).read_text(), "c.toml")
    # the source has not run its calibrations yet: refused, naming what is missing
    with pytest.raises(ManifestError, match=f"production test has no completed {N}/biasnight "
                                            r"\(planned; needed by"):
        C.enqueue(ctx.sessions, ctx.cfg, m)
    _run_calibrations(ctx, N)
    pv = C.enqueue(ctx.sessions, ctx.cfg, m)
    assert pv.new_by_kind == {"science": 2, "stdstars": 1, "fluxcalib": 2, "redshift": 1}
    # their outputs are linked into the campaign's directory, where its steps read them
    link = ctx.cfg.redux_root / "reproc" / "calibnight" / str(N) / f"psfnight-b0-{N}.fits"
    assert link.is_symlink() and link.resolve() == (ctx.cfg.prod_dir / "calibnight" / str(N) /
                                                    f"psfnight-b0-{N}.fits").resolve()
    with transaction(ctx.sessions) as s:
        from desinight.db import repo
        prod = repo.get_production(s, "reproc")
        job = repo.get_job(s, prod, f"{N}/science/{sci:08d}")
        assert job.cameras == "r0,z0" and job.resources["time_minutes"] == 45
        assert repo.parents_of(s, [job.id])[job.id] == []   # calibrations come from 'test'
        assert prod.settings["input_production"] == "test"
        # cumulative: a step of the list, though campaigns plan no cumulative jobs (yet)
        assert prod.settings["steps"] == ["science", "stdstars", "fluxcalib", "redshift",
                                          "cumulative"]


def _run_calibrations(ctx, night: int) -> None:
    """Complete the source's calibration jobs of ``night`` on the fake backend and write
    their (empty) outputs, as a finished nightly production would have them."""
    calibs = ("biasnight", "arc", "psfnight", "flat", "fiberflatnight")
    for _ in range(10):
        O.submit_ready(ctx, O.utc_now())
        for bid, req in ctx.backend.requests.items():
            if any(req.name.endswith("-" + k) for k in calibs):
                ctx.backend.finish(bid)
        O.poll(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        states = dict(s.execute(select(Job.key, Job.state).where(
            Job.night == night, Job.kind.in_(calibs))).all())
    assert set(states.values()) == {"completed"}, states
    for kind in ("biasnight", "psfnight", "fiberflatnight"):
        for cam in ("b0", "r0", "z0"):
            f = ctx.cfg.prod_dir / "calibnight" / str(night) / f"{kind}-{cam}-{night}.fits"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")


def test_tile_selection_keeps_only_its_nights(nightly, tmp_path):
    m = parse_manifest(manifest(tmp_path, "tiles = [2000]\n", nights=(N, N2, N3)).read_text(),
                       "c.toml")
    pv = _preview(nightly, m)
    assert pv.nights == [N2] and pv.selected_exposures == 3 + 3
    assert pv.new_by_kind["science"] == 3 and pv.new_by_kind["biasnight"] == 1


def test_throttle_is_respected(nightly, tmp_path, fake_backend):
    ctx = nightly
    m = parse_manifest(manifest(tmp_path, nights=(N, N2), throttle=2).read_text(), "c.toml")
    C.enqueue(ctx.sessions, ctx.cfg, m)
    cctx = C.campaign_context(ctx, "reproc")
    assert cctx.max_queued == 2 and cctx.production == "reproc"
    seen_max = 0
    for _ in range(60):
        C.run_tick(cctx, O.utc_now())
        with transaction(ctx.sessions) as s:
            p = C.progress(s, "reproc")
            _same_ready(s, "reproc")
        seen_max = max(seen_max, p["queued"])
        assert p["queued"] <= 2
        if p["done"]:
            break
        for bid, job in list(fake_backend.jobs.items()):   # the queue drains
            if job.state in (JobState.PENDING, JobState.RUNNING):
                fake_backend.finish(bid)
    assert p["done"] and p["completed"] == p["jobs"] == 24 and seen_max == 2
    # the campaign's moves are recorded as its own (the one door, bulk path included)
    from desinight.db.models import StateEvent
    with transaction(ctx.sessions) as s:
        prod_id = s.scalar(select(Production.id).where(Production.name == "reproc"))
        actors = set(s.scalars(select(StateEvent.actor).where(StateEvent.production_id == prod_id)))
        done = s.scalar(select(func.count()).select_from(StateEvent).where(
            StateEvent.production_id == prod_id, StateEvent.to_state == "completed"))
    assert actors == {"campaign:reproc"} and done == 24
    # the nightly production was never submitted anything
    with transaction(ctx.sessions) as s:
        assert not any(r.comment.startswith("desinight:test:") for r in fake_backend.requests.values())
        assert s.scalar(select(func.count()).select_from(Attempt).join(Job).join(Production).where(
            Production.name == "test")) == 0


def test_resubmit_and_cancel_on_a_campaign_production(nightly, tmp_path, fake_backend):
    """`--production CAMPAIGN` reaches the generic commands: a failed campaign job is
    resubmitted into the campaign's own directory, the nightly production untouched."""
    from desinight.app import open_context
    from desinight.retry import cancel, resubmit
    ctx = nightly
    before = _snapshot(ctx)
    m = parse_manifest(manifest(tmp_path, nights=(N,), throttle=20).read_text(), "c.toml")
    C.enqueue(ctx.sessions, ctx.cfg, m)
    cctx = open_context(ctx.cfg.with_overrides(production="reproc"), backend=fake_backend)
    assert cctx.production == "reproc" and cctx.max_queued == 20
    assert cctx.cfg.prod_dir == tmp_path / "redux" / "reproc"
    for _ in range(20):
        C.run_tick(cctx, O.utc_now())
        for bid, job in list(fake_backend.jobs.items()):   # afterok: parents completed first
            if job.state is JobState.PENDING and all(
                    fake_backend.jobs[d].state is JobState.COMPLETED
                    for d in fake_backend.requests[bid].depends_on):
                kind = fake_backend.requests[bid].name.rsplit("-", 1)[1]
                fake_backend.finish(bid, JobState.FAILED if kind == "stdstars" else
                                    JobState.COMPLETED, 1 if kind == "stdstars" else 0)
    states = {k: st for k, st, _ in _snapshot(ctx, "reproc")[0]}
    assert states[f"{N}/stdstars/1000"] == "failed"
    assert sorted(st for st in states.values() if st != "completed") == \
        ["dep_failed"] * 3 + ["failed"]
    res = resubmit(cctx, job=f"{N}/stdstars/1000")
    assert set(res.replanned) == {f"{N}/stdstars/1000", f"{N}/fluxcalib/{(N - 20000000) * 100 + 3:08d}",
                                  f"{N}/fluxcalib/{(N - 20000000) * 100 + 4:08d}",
                                  f"{N}/redshift/1000/{(N - 20000000) * 100 + 4:08d}"}
    O.submit_ready(cctx, O.utc_now())
    new = fake_backend.by_name("stdstars")[-1]
    req = fake_backend.requests[new]
    assert req.comment.startswith("desinight:reproc:") and "redux/reproc/run/" in str(req.attempt_dir)
    assert sorted(cancel(cctx, night=N)) == sorted(res.replanned)
    assert _snapshot(ctx) == before        # nothing of this reached the nightly production


def _same_ready(s, name):
    """bulk.ready_job_ids (one SQL query) agrees with orchestrate._ready (the ORM walk)."""
    from desinight.db import bulk, repo
    prod = repo.get_production(s, name)
    assert bulk.ready_job_ids(s, prod) == sorted(j.id for j, _ in O._ready(s, prod))


def test_sql_ready_and_broken_agree_with_orchestrate(nightly, tmp_path, fake_backend):
    from desinight.db import bulk, repo
    ctx = nightly
    C.enqueue(ctx.sessions, ctx.cfg, parse_manifest(manifest(tmp_path, nights=(N,), throttle=1)
                                                    .read_text(), "c.toml"))
    cctx = C.campaign_context(ctx, "reproc")
    C.run_tick(cctx, O.utc_now())               # throttle 1: only bias is submitted
    (bias,) = fake_backend.by_name("biasnight")
    fake_backend.finish(bias, JobState.FAILED, exit_code=1)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "reproc")
        from desinight.db.models import Attempt as A
        # record the failure without settling it (what poll does before _settle_dep_failed)
        att = s.scalar(select(A).join(Job).where(Job.production_id == prod.id))
        att.state = att.job.state = JobState.FAILED.value
        s.flush()
        broken = {child for child, key, state, _ in bulk.broken_waiting(s, prod)}
        waiting = repo.jobs_in_state(s, prod, [JobState.PLANNED, JobState.HELD])
        parents = repo.parents_of(s, [j.id for j in waiting])
        expect = {j.id for j in waiting if any(p.state == "failed" for p in parents[j.id])}
        assert broken == expect and expect    # the arc, the flat and the science wait on bias
        _same_ready(s, "reproc")


def test_preview_errors_name_line_and_field(nightly, tmp_path):
    ctx = nightly
    cases = [
        (manifest(tmp_path, nights=(N, 20261201)).read_text(), "campaign.toml:8: selection.nights: night "
                                                    "20261201 is not in production test"),
        (manifest(tmp_path, name="test").read_text(), "campaign.toml:2: campaign.name: 'test' is already a "
                                          "nightly production"),
        (manifest(tmp_path, "expids = [99999999]\n").read_text(), "campaign.toml:9: selection.expids: "
                                                      "exposure 99999999 is not on a selected night"),
        (manifest(tmp_path, "tiles = [4242]\n").read_text(), "campaign.toml:9: selection.tiles: tile 4242"),
    ]
    for text, expect in cases:
        m = parse_manifest(text, "campaign.toml")
        with pytest.raises(ManifestError) as e:
            _preview(ctx, m)
        assert str(e.value).startswith(expect), str(e.value)
    assert _snapshot(ctx, "test")[2] == 0


# --- through the CLI: one line, non-zero, nothing recorded -----------------------------------------
def _run(conf: Path, *args: str) -> tuple[int, str, str]:
    r = cli(conf, *args, check=False)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def conf(tmp_path, cfg):
    tpl = fast_templates(tmp_path / "templates", run="sleep 0.1")
    c = write_config(tmp_path, templates=tpl, db_url=cfg.db_url)
    cli(c, "init")
    return c


#: each bad manifest (the text edit that makes it bad) and the one error line it must give
BAD_MANIFESTS = {
    "unknown_key": (("throttle = 3", "throttle = 3\nthrotle = 4"),
                    "campaign.toml:6: campaign.throtle: unknown key"),
    "bad_night": ((f"[{N}]", "[2026113]"),
                  "campaign.toml:8: selection.nights: 2026113 is not a YYYYMMDD night"),
    "missing_night": ((f"[{N}]", "[20250101]"),
                      "campaign.toml:8: selection.nights: night 20250101 is not in production test"),
    "overlap": (('name = "reproc"', 'name = "test"'),
                "campaign.toml:2: campaign.name: 'test' is already a nightly production"),
    "unreadable": (None, "cannot read manifest: no such file"),
    "malformed": (("[selection]", "[selection"), "campaign.toml:7: not valid TOML"),
}


def test_bad_manifest_cli(tmp_path, conf):
    """Every kind of bad manifest, on one ingested production per database (the set-up is
    most of the cost): one line, exit 2, from both plan and submit, and nothing recorded."""
    write_night(tmp_path / "raw", N)
    cli(conf, "ingest", str(N))
    good = manifest(tmp_path, nights=(N,)).read_text()
    for kind, (edit, expect) in BAD_MANIFESTS.items():
        if edit is None:
            p = tmp_path / "nope.toml"
        else:
            p = tmp_path / kind / "campaign.toml"
            p.parent.mkdir()
            p.write_text(good.replace(*edit))
        for cmd in ("plan", "submit"):
            r = cli_inproc(conf, "campaign", cmd, str(p))
            rc, out, err = r.returncode, r.stdout, r.stderr
            assert rc == 2, (kind, rc, out, err)
            assert err.count("\n") == 1 and expect in err, (kind, err)
    rc, out, err = _run(conf, "status", "--json", "--production", "reproc")
    assert rc == 3 and "no production named 'reproc'" in err   # nothing was recorded


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_end_to_end_local_backend(tmp_path, conf):
    """Two nights processed nightly, then reprocessed by a campaign into its own directory.
    SQLite only: the campaign's database work is proven on PostgreSQL by the tests above and
    by the daemon + `campaign run` test below; this one is about the flow (~25 s each)."""
    for n in (N, N2):
        write_night(tmp_path / "raw", n)
        cli(conf, "ingest", str(n), "--wait", "--timeout", "120")
    nightly = json.loads(cli(conf, "status", "--json", "--range", f"{N}:{N2}").stdout)
    p = manifest(tmp_path, nights=(N, N2), throttle=4)
    rc, out, err = _run(conf, "campaign", "plan", str(p))
    assert rc == 0 and "new jobs: 22" in out and "node-hours" in out, err
    plan = json.loads(cli(conf, "campaign", "plan", str(p), "--json").stdout)
    assert plan["new_total"] == 22 and plan["new_jobs"]["science"] == 4
    out = cli(conf, "campaign", "submit", str(p)).stdout
    assert "new jobs: 22" in out
    assert "new jobs: 0" in cli(conf, "campaign", "plan", str(p)).stdout
    assert "new jobs: 0" in cli(conf, "campaign", "submit", str(p)).stdout
    out = cli(conf, "campaign", "run", "reproc", "--poll", "0.3", "--timeout", "150",
              timeout=200).stdout
    assert "22/22 completed, 0 failed" in out
    st = json.loads(cli(conf, "campaign", "status", "reproc", "--json").stdout)
    assert st["done"] and st["completed"] == 22 and st["failed"] == 0
    text = cli(conf, "campaign", "status", "reproc").stdout
    assert "100.0%" in text and "done" in text
    # the same tables: the generic status/show see the campaign's jobs
    cs = json.loads(cli(conf, "status", "--json", "--production", "reproc", "--night", str(N)).stdout)
    assert {j["state"] for j in cs["jobs"]} == {"completed"}
    assert all("/redux/reproc/run/" in j["log"] for j in cs["jobs"])
    # the global --production reaches show (and resubmit/cancel/rerun) the same way
    shown = json.loads(cli(conf, "--production", "reproc", "show", "job", f"{N}/psfnight",
                           "--json").stdout)
    assert shown["state"] == "completed" and "/redux/reproc/run/" in shown["attempts"][0]["script"]
    rc, _, err = _run(conf, "--production", "reproc", "resubmit", "--job", f"{N}/psfnight")
    assert rc != 0 and "nothing to resubmit" in err
    # the nightly production is untouched
    assert json.loads(cli(conf, "status", "--json", "--range", f"{N}:{N2}").stdout)["nights"] == \
        nightly["nights"]
    assert not (tmp_path / "redux" / "test" / "run" / "reproc").exists()


@pytest.mark.slow
def test_daemon_and_campaign_run_drive_a_campaign_together(tmp_path, cfg):
    """A submitted campaign is carried on by the running daemon; a `campaign run` started
    beside it takes turns with it (one lock per round): every job submitted exactly once."""
    import subprocess
    import sys
    tpl = fast_templates(tmp_path / "templates", run="sleep 0.3")
    conf = write_config(tmp_path, templates=tpl, db_url=cfg.db_url, extra="campaign_tick_s = 0.5")
    cli(conf, "init")
    write_night(tmp_path / "raw", N)
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120")
    nightly = json.loads(cli(conf, "status", "--json").stdout)
    assert "new jobs: 11" in cli(conf, "campaign", "submit", str(manifest(tmp_path, nights=(N,)))).stdout
    proc = start_daemon(conf, tmp_path / "daemon.out")
    try:
        wait_for(lambda: (lambda p: p["queued"] > 0 or p["done"])(json.loads(
            cli(conf, "campaign", "status", "reproc", "--json").stdout)), 30,
            what="the daemon to submit campaign jobs")
        run = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "campaign",
                              "run", "reproc", "--poll", "0.2", "--timeout", "150"],
                             capture_output=True, text=True, timeout=200)
        assert run.returncode == 0 and "11/11 completed, 0 failed" in run.stdout, run.stderr
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    cs = json.loads(cli(conf, "status", "--json", "--production", "reproc").stdout)
    assert len(cs["jobs"]) == 11 and {(j["state"], j["attempts"]) for j in cs["jobs"]} == {("completed", 1)}
    assert "campaign_tick" in (tmp_path / "state" / "daemon-test.log").read_text() or \
        "campaign_tick" in (tmp_path / "daemon.out").read_text()
    after = json.loads(cli(conf, "status", "--json").stdout)
    assert [(j["key"], j["state"], j["attempts"]) for j in after["jobs"]] == \
        [(j["key"], j["state"], j["attempts"]) for j in nightly["jobs"]]


@pytest.mark.slurm
@pytest.mark.slow
def test_end_to_end_real_slurm(tmp_path, slurm_cluster):
    """The same reprocessing through the real (local) SLURM cluster, as CI runs it."""
    import subprocess
    conf = write_config(tmp_path, backend="slurm", templates=fast_templates(tmp_path / "tpl"))
    cli(conf, "init")
    write_night(tmp_path / "raw", N)
    cli(conf, "ingest", str(N), "--wait", "--timeout", "180", timeout=240)
    nightly = json.loads(cli(conf, "status", "--json").stdout)
    assert {j["state"] for j in nightly["jobs"]} == {"completed"}
    p = manifest(tmp_path, nights=(N,), throttle=3)
    assert "new jobs: 11" in cli(conf, "campaign", "submit", str(p)).stdout
    out = cli(conf, "campaign", "run", "reproc", "--poll", "1", "--timeout", "240", timeout=300).stdout
    assert "11/11 completed, 0 failed" in out
    cs = json.loads(cli(conf, "status", "--json", "--production", "reproc").stdout)
    ids = ",".join(j["backend_id"] for j in cs["jobs"])
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,State"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(sacct) == 11 and all(line.endswith("|COMPLETED") for line in sacct)
    assert all("/redux/reproc/run/" in j["log"] for j in cs["jobs"])
    after = json.loads(cli(conf, "status", "--json").stdout)
    assert [(j["key"], j["state"], j["attempts"], j["backend_id"]) for j in after["jobs"]] == \
        [(j["key"], j["state"], j["attempts"], j["backend_id"]) for j in nightly["jobs"]]


@pytest.mark.slow
def test_declared_kind_is_planned_like_a_built_in_one(tmp_path):
    """A kind declared by the config's kind_modules (qalook, tests/test_kinds.py) is planned in
    a campaign like a built-in kind, within the manifest's steps: the CLI reads the config (which
    declares it) before the manifest, whose default steps are every kind."""
    # subprocesses (run_cli): the declaration stays out of this process
    from tests.test_kinds import qalook_production, run_cli
    conf = qalook_production(tmp_path, science=2)
    run_cli(conf, "ingest", str(N))      # records the exposures (its jobs need not end)
    # the built-in steps only: no qalook
    (tmp_path / "builtin").mkdir()
    builtin = manifest(tmp_path / "builtin", '[steps]\nonly = ["calibrations", "science", '
                       '"stdstars", "fluxcalib", "redshift"]\n', nights=(N,))
    assert "qalook" not in json.loads(run_cli(conf, "campaign", "plan", str(builtin),
                                              "--json").stdout)["new_jobs"]
    # every step (the default): qalook too, one per science exposure, after its science job,
    # with the resources the manifest gives its kind
    every = manifest(tmp_path, "[kinds.qalook]\ntime_minutes = 9\n", nights=(N,))
    plan = json.loads(run_cli(conf, "campaign", "plan", str(every), "--json").stdout)
    assert plan["steps"][-1] == "qalook" and plan["new_jobs"]["qalook"] == 2
    assert plan["new_total"] == 13, plan["new_jobs"]   # 9 built-in + 2 fluxcalib + 2 qalook
    run_cli(conf, "campaign", "submit", str(every))
    jobs = {j["key"]: j for j in json.loads(run_cli(
        conf, "--production", "reproc", "status", "--night", str(N), "--json").stdout)["jobs"]}
    qa = [k for k in jobs if "/qalook/" in k]
    assert len(qa) == 2 and all(jobs[k]["state"] == "planned" for k in qa)
    shown = json.loads(run_cli(conf, "--production", "reproc", "show", "job", qa[0],
                               "--json").stdout)
    assert [p["key"] for p in shown["parents"]] == [f"{N}/science/{qa[0].rsplit('/', 1)[1]}"]
    assert shown["resources"]["time_minutes"] == 9
