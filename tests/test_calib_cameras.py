"""`calib use NIGHT --from REF --cameras ...` (issue 15): only the named cameras take their
psfnight and fiberflatnight from REF; the others keep theirs; choices compose and revert; the
reference must cover each camera; --dry-run changes nothing; the per-camera night reaches the
rendered script (`step run --calib-nights`) and the calibnight files the step reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from desinight import orchestrate as O
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Base
from desinight.ingest import ingest_night
from tests.daemonkit import cli_inproc, write_config
from tests.rawfixture import N, write_exposure, write_night

N1, N2 = N + 1, N + 2                 # N and N1: reference nights; N2: the night steered
#: SQLite only: the choice is plain SQL, and the whole-night choice's tests already run both
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def cli(conf: Path, *args: str, check: bool = True):
    """The CLI's own entry point in this process (one-shot commands: no interpreter start-up)."""
    r = cli_inproc(conf, *args)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def _expid(night: int, seq: int) -> int:
    return (night - 20000000) * 100 + seq


SCI = f"{N2}/science/{_expid(N2, 3):08d}"


def _dump(url: str) -> list[tuple]:
    """Every row of every table, in order: the database before and after a dry run."""
    engine = create_engine(url)
    with engine.connect() as c:
        rows = [(t.name, tuple(r)) for t in Base.metadata.sorted_tables
                for r in c.execute(select(t).order_by(*t.primary_key.columns))]
    engine.dispose()
    return rows


def _planned(ctx, nights) -> None:
    """Ingest and plan (not submit): the steered night's jobs are still open to re-planning."""
    for n in nights:
        ingest_night(ctx, n, O.utc_now())
        O.plan(ctx, n, closed=True)


def _job(ctx, key: str):
    with transaction(ctx.sessions) as s:
        job = repo.get_job(s, repo.get_production(s, "test"), key)
        return job.state, job.calib_night, job.calib_nights, sorted(
            p.key for p in repo.parents_of(s, [job.id])[job.id])


@pytest.mark.slow
def test_calib_use_cameras_replans_those_cameras_composes_and_reverts(ctx, cfg, tmp_path):
    for n, tile in ((N, 1000), (N1, 1500), (N2, 2000)):
        write_night(cfg.raw_root, n, tile=tile)
    _planned(ctx, (N, N1, N2))
    conf = write_config(tmp_path, db_url=cfg.db_url)
    assert _job(ctx, SCI)[1:3] == (None, None)

    before = _dump(cfg.db_url)
    r = cli(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "b0", "--dry-run")
    assert r.stdout.splitlines() == [
        f"dry run: would re-plan {SCI}: calibrations {N2} -> {N2} (b0={N})",
        f"dry run: would re-plan {N2}/science/{_expid(N2, 4):08d}: calibrations {N2} -> {N2} "
        f"(b0={N})",
        f"night {N2} cameras b0 would take psfnight and fiberflatnight from {N}: 2 jobs "
        "re-planned, 0 already submitted or run (dry run: nothing changed)"]
    assert _dump(cfg.db_url) == before

    r = cli(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "b0",
            "--reason", "b0 arc lamp off")
    assert f"re-planned {SCI}: calibrations {N2} -> {N2} (b0={N})" in r.stdout
    state, cn, cns, parents = _job(ctx, SCI)
    assert (state, cn, cns) == ("planned", None, f"b0={N}")
    assert {f"{N}/psfnight", f"{N}/fiberflatnight", f"{N2}/psfnight",
            f"{N2}/fiberflatnight"} <= set(parents)
    # a second choice, for another camera and another night, composes with the first
    cli(conf, "calib", "use", str(N2), "--from", str(N1), "--cameras", "r0")
    state, cn, cns, parents = _job(ctx, SCI)
    assert (cn, cns) == (None, f"b0={N},r0={N1}")
    assert {f"{N}/psfnight", f"{N1}/psfnight", f"{N1}/fiberflatnight"} <= set(parents)

    shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
    cams = shown["cameras"]
    assert (cams["b0"]["psfnight"], cams["b0"]["fiberflatnight"]) == (N, N)
    assert cams["b0"]["source"].startswith("chosen for b0 (calib use --cameras by operator:")
    assert (cams["r0"]["psfnight"], cams["z0"]["psfnight"]) == (N1, N2)
    assert cams["z0"]["source"] == "own (this night's arcs and flats)"
    assert shown["camera_choices"]["b0"]["from"] == N
    assert shown["camera_choices"]["b0"]["comment"] == "b0 arc lamp off"
    assert shown["science_calib_nights_by_camera"] == {"b0": [N], "r0": [N1]}
    text = cli(conf, "calib", "show", str(N2)).stdout
    assert f"b0: calibrations from {N}, calib use --cameras by operator:" in text
    assert "(b0 arc lamp off)" in text
    assert f"planned science jobs use the calibrations of night {N2}; b0 from {N}; r0 from {N1}" \
        in text
    job = json.loads(cli(conf, "show", "job", SCI, "--json").stdout)
    assert (job["calib_night"], job["calib_nights"]) == (None, f"b0={N},r0={N1}")
    assert f"calibrations per camera: b0={N},r0={N1}" in cli(conf, "show", "job", SCI).stdout

    # a later choice for the same camera replaces the earlier one
    cli(conf, "calib", "use", str(N2), "--from", str(N1), "--cameras", "b0")
    assert _job(ctx, SCI)[2] == f"b0={N1},r0={N1}"
    cli(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "b0")
    # --from the night itself: b0 back to the night's choice; r0 keeps its own
    r = cli(conf, "calib", "use", str(N2), "--from", str(N2), "--cameras", "b0")
    assert f"re-planned {SCI}: calibrations {N2} (b0={N},r0={N1}) -> {N2} (r0={N1})" in r.stdout
    assert f"night {N2} cameras b0 go back to the night's choice: 2 jobs re-planned" in r.stdout
    state, cn, cns, parents = _job(ctx, SCI)
    assert cns == f"r0={N1}" and f"{N}/psfnight" not in parents
    shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
    assert set(shown["camera_choices"]) == {"r0"}
    assert shown["cameras"]["b0"]["source"] == "own (this night's arcs and flats)"

    # a whole-night choice leaves the per-camera one in place: r0 still from N1, the rest N
    cli(conf, "calib", "use", str(N2), "--from", str(N))
    state, cn, cns, parents = _job(ctx, SCI)
    assert (cn, cns) == (N, f"r0={N1}")
    assert f"{N2}/psfnight" not in parents and f"{N1}/psfnight" in parents


def test_calib_use_cameras_refusals_are_one_line_and_change_nothing(ctx, cfg, tmp_path):
    """The reference must hold psfnight and fiberflatnight for each named camera; the camera
    must be one of the night's; otherwise one line, a documented exit code, nothing written."""
    write_night(cfg.raw_root, N)
    wide = ("b0", "r0", "z0", "b1")
    for seq, kind in enumerate(("ZERO", "ARC", "FLAT")):
        write_exposure(cfg.raw_root, N2, seq, kind, cameras=wide)
    write_exposure(cfg.raw_root, N2, 3, "SCIENCE", 2000, 1, 1, cameras=wide)
    _planned(ctx, (N, N2))
    conf = write_config(tmp_path, db_url=cfg.db_url)
    before = _dump(cfg.db_url)
    for args, code, err in [
        (("--from", str(N), "--cameras", "b1"), 3,
         f"night {N}'s psfnight lacks b1 in production test"),
        (("--from", "20261101", "--cameras", "b0"), 3,
         "night 20261101 has no psfnight or fiberflatnight in production test (not planned, "
         "or failed)"),
        (("--from", str(N), "--cameras", "b7"), 3, f"night {N2} has no camera b7 in production test"),
    ]:
        r = cli(conf, "calib", "use", str(N2), *args, check=False)
        assert (r.returncode, r.stderr) == (code, f"desinight: error: {err}\n"), args
    r = cli(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "q9", check=False)
    assert r.returncode == 2 and "Invalid value for --cameras: bad camera word 'q9'" in r.stderr
    assert _dump(cfg.db_url) == before


def test_a_chosen_reference_that_fails_later_holds_that_cameras_science(ctx, cfg, tmp_path):
    """The reference night's calibrations cancelled after the choice: a late science exposure
    on that camera is held with the reason, never silently planned on a guess."""
    from desinight.core.states import JobState
    from desinight.transitions import transition
    for n, tile in ((N, 1000), (N2, 2000)):
        write_night(cfg.raw_root, n, tile=tile)
    _planned(ctx, (N, N2))
    conf = write_config(tmp_path, db_url=cfg.db_url)
    cli(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "a0")   # b0,r0,z0
    with transaction(ctx.sessions) as s:
        job = repo.get_job(s, repo.get_production(s, "test"), f"{N}/psfnight")
        transition(s, [job.id], JobState.CANCELLED, "test: the arcs were bad", "operator:test",
                   expect=[JobState.PLANNED])
    write_exposure(cfg.raw_root, N2, 5, "SCIENCE", 2500, 1, 1)
    _planned(ctx, (N2,))
    why = f"the chosen reference night {N} has no psfnight and fiberflatnight for b0"
    with transaction(ctx.sessions) as s:
        late = repo.get_job(s, repo.get_production(s, "test"), f"{N2}/science/{_expid(N2, 5):08d}")
        assert (late.state, late.hold_reason) == ("held", f"b0: {why}")
    shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
    assert shown["cameras"]["b0"] == {"psfnight": None, "fiberflatnight": None,
                                      "source": f"held: {why}"}


@pytest.mark.slow
def test_per_camera_night_reaches_the_script_and_the_step(cfg, ctx, tmp_path):
    """The science job's rendered script passes `--calib-nights b0=N`; run by hand, the real
    step reads b0's calibnight files from N and r0's, z0's from the night itself (here none
    exist, so each camera's failure names the file it looked for)."""
    import subprocess

    from desinight.sim import simulate_night
    write_night(cfg.raw_root, N, science=0)
    simulate_night(N2, cfg.raw_root, preset="small", seed=5)
    _planned(ctx, (N, N2))
    conf = write_config(tmp_path, db_url=cfg.db_url)
    cli_inproc(conf, "calib", "use", str(N2), "--from", str(N), "--cameras", "b0")
    O.submit_ready(ctx, O.utc_now())              # renders every script (fake backend)
    job = json.loads(cli(conf, "show", "job", SCI, "--json").stdout)
    script = Path(job["attempts"][-1]["script"])
    assert f" --calib-nights b0={N}" in script.read_text()
    assert "--calib-night " not in script.read_text()
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    missing = "FAILED (FileNotFoundError: missing psfnight-{}-{}.fits"
    assert f"science {N2} b0: " + missing.format("b0", N) in r.stdout
    assert f"science {N2} r0: " + missing.format("r0", N2) in r.stdout
    assert f"science {N2} z0: " + missing.format("z0", N2) in r.stdout
    # the option itself: a malformed word is a usage error, not a traceback
    r = cli_inproc(conf, "step", "run", "science", "--night", str(N2), "--calib-nights", "b0:1")
    assert r.returncode == 2 and "expected CAMERA=YYYYMMDD, e.g. b3=20261123" in r.stderr


def test_a_camera_choice_does_not_release_science_held_for_the_nights_calibrations(ctx, cfg,
                                                                                  tmp_path):
    """A night with no calibrations of its own and none within max_calib_age_nights: a
    per-camera choice leaves its science held (the other cameras need calibrations too)."""
    far = 20261205                        # 11 nights after N: beyond the 7-night fallback
    write_night(cfg.raw_root, N)
    for i in range(2):
        write_exposure(cfg.raw_root, far, 3 + i, "SCIENCE", 2000, i + 1, 2)
    _planned(ctx, (N, far))
    conf = write_config(tmp_path, db_url=cfg.db_url)
    sci = f"{far}/science/{_expid(far, 3):08d}"
    assert _job(ctx, sci)[0] == "held"
    r = cli(conf, "calib", "use", str(far), "--from", str(N), "--cameras", "b0")
    assert f"still held: {sci} (no psfnight or fiberflatnight calibration on night {far}" \
        in r.stdout
    assert f"night {far} cameras b0 take psfnight and fiberflatnight from {N}: 0 jobs " \
        "re-planned" in r.stdout
    assert _job(ctx, sci)[0] == "held"
