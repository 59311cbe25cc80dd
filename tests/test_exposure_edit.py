"""`desinight exposure EXPID`: bad cameras/amplifiers, LASTSTEP, flags and comments, what they
do to the night's jobs (cancel, re-plan, release), the [laststep] rules at ingest, and
`--dry-run` (the database before and after is identical). Local backend, SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select

from desinight.db.models import Attempt, Exposure, ExposureEdit, Job, JobEdge, JobExposure, StateEvent
from tests.daemonkit import fast_templates, write_config
from tests.rawfixture import N, write_night

E3, E4 = (N - 20000000) * 100 + 3, (N - 20000000) * 100 + 4   # the two science exposures
STD, Z = f"{N}/stdstars/1000", f"{N}/redshift/1000/{E4:08d}"
#: science of E3 fails while its cameras include b0 (a "bad b0 tonight"); the rest runs
FAIL_E3_B0 = ('{% if "' + str(E3) + '" in job_key and "b0" in command|join(" ") %}exit 3'
              '{% else %}sleep 0.2{% endif %}')


def _snapshot(root) -> tuple:
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        out = (tuple(c.execute(select(Job.key, Job.state, Job.reason, Job.cameras).order_by(Job.key))),
               tuple(c.execute(select(JobExposure.job_id, JobExposure.expid).order_by(
                   JobExposure.job_id, JobExposure.expid))),
               tuple(c.execute(select(JobEdge.parent_id, JobEdge.child_id).order_by(
                   JobEdge.parent_id, JobEdge.child_id))),
               tuple(c.execute(select(Exposure.expid, Exposure.bad_cameras, Exposure.bad_amps,
                                      Exposure.laststep, Exposure.flags).order_by(Exposure.expid))),
               c.execute(select(func.count()).select_from(Attempt)).scalar(),
               c.execute(select(func.count()).select_from(StateEvent)).scalar(),
               c.execute(select(func.count()).select_from(ExposureEdit)).scalar())
    engine.dispose()
    return out


def _jobs(root) -> dict[str, tuple[str, str, list[int]]]:
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        rows = c.execute(select(Job.id, Job.key, Job.state, Job.cameras)).all()
        exps = c.execute(select(JobExposure.job_id, JobExposure.expid)).all()
    engine.dispose()
    return {k: (st, cams, sorted(e for j, e in exps if j == i)) for i, k, st, cams in rows}


def _run(capsys, conf, *args: str) -> str:
    """A desinight command in this process (no interpreter start-up per call): its stdout;
    an error exit (5 for a night with failures) is allowed, as with check=False."""
    from desinight.cli.main import main
    capsys.readouterr()
    try:
        main(["--config", str(conf), *args])
    except SystemExit as e:
        assert e.code in (0, 5), capsys.readouterr().err
    return capsys.readouterr().out


def _commands(root, key: str) -> list[str]:
    """The step command line of each attempt of a job (what the batch script runs)."""
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        out = list(c.scalars(select(Attempt.command).join(Job).where(Job.key == key)
                             .order_by(Attempt.number)))
    engine.dispose()
    return out


@pytest.fixture
def failed_night(tmp_path, capsys):
    """A night whose science job of E3 failed (b0), and its tile's jobs dep_failed."""
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl",
                                                           overrides={"science": FAIL_E3_B0}))
    _run(capsys, conf, "init")
    write_night(tmp_path / "raw")
    _run(capsys, conf, "ingest", str(N), "--wait", "--timeout", "120")
    jobs = _jobs(tmp_path)
    assert jobs[f"{N}/science/{E3:08d}"][0] == "failed" and jobs[STD][0] == "dep_failed"
    return conf


@pytest.mark.slow
def test_ignore_drops_exposure_and_releases_its_tile(failed_night, tmp_path, capsys):
    conf = failed_night
    before = _snapshot(tmp_path)
    dry = _run(capsys, conf, "exposure", str(E3), "--laststep", "ignore", "--comment",
               "guider lost", "--dry-run")
    assert _snapshot(tmp_path) == before
    real = _run(capsys, conf, "exposure", str(E3), "--laststep", "ignore", "--comment",
                "guider lost")
    # the dry run printed exactly what the real edit did
    assert dry.replace("dry run: would ", "").replace("cancel ", "cancelled ") \
        .replace("re-plan ", "re-planned ").replace("release ", "released ") == \
        real.rsplit("\n", 2)[0] + "\n"
    assert f"exposure {E3}: laststep all -> ignore" in real
    assert f"cancelled 2 jobs: {N}/fluxcalib/{E3:08d}, {N}/science/{E3:08d}" in real
    assert f"re-planned 2 jobs: {Z}, {STD}" in real
    assert f"released 3 jobs: {N}/fluxcalib/{E4:08d}, {Z}, {STD}" in real
    # the released tile runs without E3 and completes
    _run(capsys, conf, "ingest", str(N), "--wait", "--timeout", "60")   # waits for the night
    jobs = _jobs(tmp_path)
    assert jobs[STD][0] == "completed" and jobs[STD][2] == [E4]
    assert jobs[Z][2] == [E4] and jobs[f"{N}/science/{E3:08d}"][0] == "cancelled"
    shown = json.loads(_run(capsys, conf, "show", "exposure", str(E3), "--json"))
    assert shown["laststep"] == "ignore"
    (ed,) = shown["edits"]
    assert ed["comment"] == "guider lost" and ed["actor"].startswith("operator:")
    assert ed["changes"] == {"laststep": ["all", "ignore"]}
    assert "edit " in _run(capsys, conf, "show", "exposure", str(E3))


@pytest.mark.slow
def test_bad_camera_then_resubmit_reruns_without_it(failed_night, tmp_path, capsys):
    conf = failed_night
    out = _run(capsys, conf, "exposure", str(E3), "--bad-cameras", "b0", "--bad-amps", "r0D",
               "--comment", "b0 noisy")
    assert f"exposure {E3}: bad_cameras - -> b0" in out and "bad_amps - -> r0D" in out
    assert f"re-planned 2 jobs: {N}/fluxcalib/{E3:08d}, {N}/science/{E3:08d}\n" in out
    jobs = _jobs(tmp_path)
    sci = jobs[f"{N}/science/{E3:08d}"]
    assert sci[0] == "failed" and sci[1] == "r0,z0"        # re-defined, not re-run by itself
    assert jobs[STD][1] == "b0,r0,z0"                      # E4 still has b0
    _run(capsys, conf, "resubmit", str(E3))
    _run(capsys, conf, "ingest", str(N), "--wait", "--timeout", "60")
    jobs = _jobs(tmp_path)
    assert {k: v[0] for k, v in jobs.items() if v[0] != "completed"} == {}
    cmds = _commands(tmp_path, f"{N}/science/{E3:08d}")
    assert "--cameras b0,r0,z0" in cmds[0] and "--bad-amps" not in cmds[0]
    assert "--cameras r0,z0" in cmds[1] and "--bad-amps r0D" in cmds[1]


@pytest.mark.slow
def test_queued_job_is_cancelled_and_resubmitted_with_new_cameras(tmp_path, capsys):
    """Science queued behind a slow calibration: the edit scancels it and its queued
    dependents, re-plans them and submits them again with the new cameras."""
    conf = write_config(tmp_path, templates=fast_templates(
        tmp_path / "tpl", overrides={"fiberflatnight": "sleep 30"}))
    _run(capsys, conf, "init")
    write_night(tmp_path / "raw")
    _run(capsys, conf, "ingest", str(N))
    assert _jobs(tmp_path)[f"{N}/science/{E3:08d}"][0] in ("submitted", "pending")
    try:
        out = _run(capsys, conf, "exposure", str(E3), "--bad-cameras", "z0")
        assert (f"re-planned 5 jobs: {N}/fluxcalib/{E3:08d}, {N}/fluxcalib/{E4:08d}, {Z}, "
                f"{N}/science/{E3:08d}, {STD}") in out
        assert "5 jobs submitted now" in out
        cmds = _commands(tmp_path, f"{N}/science/{E3:08d}")
        assert len(cmds) == 2 and "--cameras b0,r0 " in cmds[1] + " "
    finally:
        _run(capsys, conf, "cancel", str(N))


@pytest.mark.slow
def test_edit_refuses_bad_input_in_one_line(tmp_path, capsys):
    from desinight.cli.main import main
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl"))
    main(["--config", str(conf), "init"])
    write_night(tmp_path / "raw", science=1)
    main(["--config", str(conf), "ingest", str(N), "--open", "--backend", "local", "--dry-run"])

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as ex:
            main(["--config", str(conf), "exposure", *args])
        return ex.value.code, capsys.readouterr().err

    # an unknown exposure first: nothing was ingested (a dry run)
    assert run("99", "--flag", "test") == (3, "desinight: error: no exposure 99 in production test\n")
    main(["--config", str(conf), "ingest", str(N), "--open", "--no-wait"])
    try:
        for args, word in ((["--bad-cameras", "b5"], "has no camera b5"),
                           (["--bad-amps", "b0X"], "bad amplifier 'b0X'"),
                           ([], "nothing to edit")):
            code, err = run(str(E3), *args)
            assert code == 1 and err.startswith("desinight: error: ") and word in err
            assert len(err.strip().splitlines()) == 1, err
        code, err = run(str(E3), "--laststep", "most")     # click's usage error
        assert code == 2 and "Invalid value for '--laststep'" in err
    finally:
        main(["--config", str(conf), "cancel", str(N)])


@pytest.mark.slow
def test_laststep_rules_at_ingest(tmp_path, capsys):
    """[laststep] min_exptime_s: a shorter science exposure stops after sky subtraction: no
    stdstars, flux calibration or redshift is planned for its tile. In-process CLI calls
    (one interpreter start-up for the whole test)."""
    from desinight.cli.main import main
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl"),
                        extra="[laststep]\nmin_exptime_s = 1000")

    def run(*args: str) -> str:
        capsys.readouterr()
        main(["--config", str(conf), *args])
        return capsys.readouterr().out

    run("init")
    write_night(tmp_path / "raw")
    run("ingest", str(N))
    try:
        kinds = {k.split("/")[1] for k in _jobs(tmp_path)}
        assert "science" in kinds and not kinds & {"stdstars", "fluxcalib", "redshift"}
        shown = run("show", "exposure", str(E3))
        assert "laststep skysub (EXPTIME 900 s < laststep.min_exptime_s 1000)" in shown
        assert "(to skysub)" in run("status", "--night", str(N))
        run("exposure", str(E3), "--flag", "short", "--comment", "30 s")
        assert json.loads(run("show", "exposure", str(E3), "--json"))["flags"] == "short"
    finally:
        run("cancel", str(N))
    # skysub_programs: by PROGRAM header (any case), seen by an ingest dry run of a new night
    conf.write_text(conf.read_text().replace("min_exptime_s = 1000",
                                             'min_exptime_s = 0\nskysub_programs = ["DARK"]'))
    write_night(tmp_path / "raw", night=N + 1)
    dry = run("ingest", str(N + 1), "--dry-run")
    assert "SCIENCE planned (laststep skysub)" in dry and "stdstars" not in dry


@pytest.mark.slow
def test_bad_amp_quadrant_has_zero_ivar(tmp_path, monkeypatch):
    """`step run arc --bad-amps b0D,r0A` on camera b0: preproc gives amplifier D's quadrant zero ivar, the rest
    of the camera is processed."""
    from desinight import desimodel as I
    from desinight.cli.main import cli as dcli
    from desinight.sim import simulate_night
    from desinight.steps import io
    dirs = simulate_night(N, tmp_path / "raw", preset="small", seed=5)
    monkeypatch.setenv("DESI_SPECTRO_DATA", str(tmp_path / "raw"))
    monkeypatch.setenv("DESI_SPECTRO_REDUX", str(tmp_path / "redux"))
    monkeypatch.setenv("SPECPROD", "test")
    arc = next(int(d.name) for d in dirs
               if fitsio.read_header(str(d / f"desi-{d.name}.fits.fz"), 0)["OBSTYPE"] == "ARC")
    r = CliRunner().invoke(dcli, ["step", "run", "arc", "--night", str(N), "--expids",
                                  str(arc), "--cameras", "b0", "--bad-amps", "b0D,r0A"])
    assert r.exit_code == 0, r.output
    ivar = fitsio.read(str(io.preproc_path(N, arc, "b0")), "IVAR")
    hdr = fitsio.read_header(str(io.raw_path(N, arc)), "B0")
    for amp in I.AMPS:
        y0, y1, x0, x1 = I.parse_section(hdr[f"CCDSEC{amp}"])
        quad = ivar[y0:y1, x0:x1]
        assert (np.all(quad == 0) if amp == "D" else np.mean(quad > 0) > 0.9), amp
    mask = fitsio.read(str(io.preproc_path(N, arc, "b0")), "MASK")
    y0, y1, x0, x1 = I.parse_section(hdr["CCDSECD"])
    assert np.all(mask[y0:y1, x0:x1] & 4)


def test_planner_follows_laststep():
    """ignore: no job at all; skysub: science only; fluxcal: stdstars and fluxcalib but not
    the tile's redshift; all: everything (the redshift keeps its key whatever the last
    exposure's LASTSTEP)."""
    from desinight.core.planner import ExposureInfo, plan_night
    cams = ("b0", "r0", "z0")
    base = [ExposureInfo(1, N, "ZERO", None, cams), ExposureInfo(2, N, "ARC", None, cams),
            ExposureInfo(3, N, "FLAT", None, cams)]
    sci = [ExposureInfo(10 + i, N, "SCIENCE", 1000, cams, laststep=ls)
           for i, ls in enumerate(("ignore", "skysub", "fluxcal", "all"))]
    jobs = {j.key: j for j in plan_night(N, base + sci, closed=True).jobs}
    assert f"{N}/science/{10:08d}" not in jobs and f"{N}/science/{11:08d}" in jobs
    assert jobs[f"{N}/stdstars/1000"].expids == (12, 13)
    assert f"{N}/fluxcalib/{11:08d}" not in jobs and f"{N}/fluxcalib/{12:08d}" in jobs
    assert jobs[f"{N}/redshift/1000/{13:08d}"].expids == (13,)
    last_skysub = [*sci[:3], ExposureInfo(13, N, "SCIENCE", 1000, cams, laststep="skysub")]
    jobs = {j.key: j for j in plan_night(N, base + last_skysub, closed=True).jobs}
    assert not any(k.startswith(f"{N}/redshift/") for k in jobs)   # no exposure goes that far


def test_edit_on_each_database_scancels_what_it_drops(ctx, raw_night, fake_backend):
    """The library call on SQLite and PostgreSQL: ignoring a queued exposure cancels its
    jobs in the backend (after the commit) and re-plans its tile's queued jobs; the dry run
    before it calls no backend and writes nothing."""
    from desinight import orchestrate as O
    from desinight.db.engine import transaction
    from desinight.exposure_edit import edit_exposure
    from desinight.ingest import ingest_night
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())

    def state() -> dict:
        with transaction(ctx.sessions) as s:
            return {j.key: (j.state, j.cameras, tuple(j.expids)) for j in s.scalars(select(Job))}

    before = state()
    dry = edit_exposure(ctx, E3, laststep="ignore", comment="test", dry_run=True)
    assert state() == before and fake_backend.calls["cancel"] == 0
    res = edit_exposure(ctx, E3, laststep="ignore", comment="test")
    assert (res.cancelled, res.replanned) == (dry.cancelled, dry.replanned)
    assert res.cancelled == [f"{N}/fluxcalib/{E3:08d}", f"{N}/science/{E3:08d}"]
    sci = fake_backend.by_name("science")[0]
    assert fake_backend.jobs[sci].state.value == "cancelled"
    after = state()
    assert after[STD] == ("planned", "b0,r0,z0", (E4,)) and after[Z][2] == (E4,)
    with transaction(ctx.sessions) as s:
        (ed,) = s.scalars(select(ExposureEdit)).all()
        assert ed.effects["cancelled"] == res.cancelled and ed.comment == "test"
    # LASTSTEP back to all: the jobs that edit cancelled are planned again, the tile's
    # jobs take E3 back
    res = edit_exposure(ctx, E3, laststep="all")
    assert res.cancelled == [] and {f"{N}/science/{E3:08d}", f"{N}/fluxcalib/{E3:08d}", STD,
                                    Z} <= set(res.replanned)
    after = state()
    assert after[f"{N}/science/{E3:08d}"][0] == "planned" and after[STD][2] == (E3, E4)
    # every camera of E4 bad: dropped like an ignored exposure; the tile has nothing left
    res = edit_exposure(ctx, E4, bad_cameras="a0")
    assert res.cancelled == [f"{N}/fluxcalib/{E4:08d}", f"{N}/science/{E4:08d}"]
    assert state()[STD][2] == (E3,)


def test_edit_of_a_completed_exposure_waits_for_resubmit_force(ctx, raw_night, fake_backend):
    """Completed jobs are re-defined, not re-run, and not cancelled: `resubmit --force` runs
    them the new way."""
    from desinight.db.engine import transaction
    from desinight.exposure_edit import edit_exposure
    from desinight.retry import resubmit
    from tests.test_orchestrate import run_all
    from desinight import orchestrate as O
    from desinight.ingest import ingest_night
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    run_all(ctx, fake_backend)
    res = edit_exposure(ctx, E4, laststep="skysub")
    assert res.cancelled == [] and res.completed == [Z, STD] == res.replanned
    with transaction(ctx.sessions) as s:
        jobs = {j.key: j for j in s.scalars(select(Job))}
        assert jobs[STD].state == "completed" and jobs[STD].expids == [E3]
        assert jobs[Z].expids == [E3]
    assert STD in resubmit(ctx, job=STD, force=True).replanned


@pytest.mark.parametrize("exptime,program,expect", [
    (900.0, "Dither tile 80000", "PROGRAM Dither tile 80000 matches laststep.skysub_programs 'dither'"),
    (900.0, "DITHER", "PROGRAM DITHER matches laststep.skysub_programs 'dither'"),
    (900.0, "dark", None),
    (900.0, None, None),
    (30.0, "dark", "EXPTIME 30 s < laststep.min_exptime_s 60"),
])
def test_laststep_rules_on_the_program_words_and_exptime(exptime, program, expect):
    """The defaults ([laststep] min_exptime_s 60, skysub_programs ["dither"]): a program
    matches when it contains the word, as DESI's exposure table tests "dither" in PROGRAM."""
    from desinight.config import Config
    from desinight.exposure_edit import laststep_rule
    cfg = Config(production="t", raw_root=Path("/r"), redux_root=Path("/x"), state_dir=Path("/s"))
    assert laststep_rule(exptime, program, cfg) == expect
