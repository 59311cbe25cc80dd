"""Calibrations chosen, not guessed: the automatic fallback (one night, within
calib.max_calib_age_nights, covering the cameras), `calib use` / `calib show`, its --dry-run,
and the per-night override file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from desinight import calib_choice as CC
from desinight import orchestrate as O
from desinight.core.errors import ConfigError, DesinightError
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.ingest import ingest_night
from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_exposure, write_night

N2 = 20261126          # two nights after N


def _science_only(root: Path, night: int, cameras=("b0", "r0", "z0"), tile: int = 2000) -> None:
    for i in range(2):
        write_exposure(root, night, 3 + i, "SCIENCE", tile, i + 1, 2, cameras=cameras)


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return list(c.iterdump())


def _jobs(conf: Path, night: int) -> dict[str, dict]:
    data = json.loads(cli(conf, "status", "--json", "--night", str(night)).stdout)
    return {j["key"]: j for j in data["jobs"]}


@pytest.mark.slow
def test_too_old_calibrations_hold_then_calib_use_releases(tmp_path):
    """Last night's calibrations are two nights old with max_calib_age_nights = 1: the science
    is held with the reason in `status --json`; `calib use --dry-run` changes nothing;
    `calib use` re-plans the held jobs onto that night and they run."""
    tpl = fast_templates(tmp_path / "tpl", run="sleep 0.05")
    conf = write_config(tmp_path, templates=tpl, extra="[calib]\nmax_calib_age_nights = 1\n")
    cli(conf, "init")
    write_night(tmp_path / "raw", N)
    _science_only(tmp_path / "raw", N2)
    cli(conf, "ingest", str(N), "--wait", "--timeout", "60")
    cli(conf, "ingest", str(N2))
    jobs = _jobs(conf, N2)
    sci = jobs[f"{N2}/science/{(N2 - 20000000) * 100 + 3:08d}"]
    assert {j["state"] for j in jobs.values()} == {"held"}
    assert sci["reason"] == (f"no psfnight or fiberflatnight calibration on night {N2}; none "
                             "within 1 nights before (calib.max_calib_age_nights) covers a0 "
                             f"(nearest: {N}, 2 nights before)")
    shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
    assert shown["cameras"]["b0"]["psfnight"] is None
    assert shown["cameras"]["b0"]["source"].startswith("held: none within 1 nights before")
    text = cli(conf, "calib", "show", str(N2)).stdout
    assert "no reference night chosen" in text and "held (below)" in text
    assert f"held, 6 jobs ({N2}/fluxcalib/" in text and "(nearest: 20261124" in text

    db = tmp_path / "state" / "desinight.db"
    before = _dump(db)
    r = cli(conf, "calib", "use", str(N2), "--from", str(N), "--dry-run")
    assert f"dry run: would re-plan {sci['key']}: calibrations none -> {N}; held -> planned" \
        in r.stdout
    assert "(dry run: nothing changed)" in r.stdout
    assert _dump(db) == before

    r = cli(conf, "calib", "use", str(N2), "--from", str(N), "--reason", "arcs saturated")
    assert f"re-planned {sci['key']}: calibrations none -> {N}; held -> planned" in r.stdout
    assert f"night {N2} takes psfnight and fiberflatnight from {N}: 6 jobs re-planned" in r.stdout
    assert _dump(db) != before
    shown = json.loads(cli(conf, "calib", "show", str(N2), "--json").stdout)
    assert shown["choice"]["from"] == N and shown["choice"]["comment"] == "arcs saturated"
    assert shown["cameras"]["z0"] == {"psfnight": N, "fiberflatnight": N, "source": shown[
        "cameras"]["z0"]["source"]}
    assert shown["cameras"]["z0"]["source"].startswith("chosen (calib use by operator:")
    text = cli(conf, "calib", "show", str(N2)).stdout
    assert f"calibrations from {N}, calib use by operator:" in text and "chosen (calib use by operator:" in text
    cli(conf, "ingest", str(N2), "--wait", "--timeout", "60")
    jobs = _jobs(conf, N2)
    assert {j["state"] for j in jobs.values()} == {"completed"}
    shown = json.loads(cli(conf, "show", "job", sci["key"], "--json").stdout)
    assert shown["calib_night"] == N
    # a choice the reference cannot honour is refused, one line, nothing changed
    before = _dump(db)
    r = cli(conf, "calib", "use", str(N2), "--from", "20261101", check=False)
    assert r.returncode == 3 and r.stderr == ("desinight: error: night 20261101 has no psfnight or "
                                              "fiberflatnight in production test (not planned, "
                                              "or failed)\n")
    assert _dump(db) == before
    r = cli(conf, "calib", "use", "20261201", "--from", str(N), check=False)
    assert r.returncode == 3 and "night 20261201 has no exposures in production test" in r.stderr
    bad = tmp_path / "state" / "calib-overrides" / f"calib-{N}.toml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(f"night = {N}\nform = {N2}\n")
    r = cli(conf, "calib", "show", str(N), check=False)
    assert r.returncode == 2 and r.stderr == (f"desinight: error: {bad}: unknown key form (known: "
                                              "comment, exclude_expids, from, include_expids, "
                                              "night)\n")


def test_automatic_fallback_takes_one_night_covering_the_cameras(ctx, cfg):
    """Science on b1 cannot use a night whose calibrations lack b1 (held, and `calib use`
    refuses it); science on a0 takes both kinds from that night."""
    write_night(cfg.raw_root, N)
    _science_only(cfg.raw_root, N + 1, cameras=("b0", "r0", "z0", "b1"), tile=2000)
    _science_only(cfg.raw_root, N + 2, tile=3000)
    now = O.utc_now()
    for n in (N, N + 1, N + 2):
        ingest_night(ctx, n, now)
        O.plan(ctx, n, closed=True)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "test")
        wide = repo.get_job(s, prod, f"{N + 1}/science/{(N + 1 - 20000000) * 100 + 3:08d}")
        assert wide.state == "held" and "covers a0,b1" in wide.hold_reason
        ok = repo.get_job(s, prod, f"{N + 2}/science/{(N + 2 - 20000000) * 100 + 3:08d}")
        assert ok.state == "planned" and ok.calib_night == N
        parents = {p.key for p in repo.parents_of(s, [ok.id])[ok.id]}
        assert {f"{N}/psfnight", f"{N}/fiberflatnight"} <= parents
        with pytest.raises(DesinightError, match=f"night {N}'s psfnight lacks b1"):
            CC.use(s, cfg, prod, N + 1, N, "operator:test")
        assert CC.show(s, cfg, prod, N + 2)["cameras"]["b0"] == {
            "psfnight": N, "fiberflatnight": N, "source": "automatic fallback (2 nights before)"}
        assert CC.show(s, cfg, prod, N)["cameras"]["z0"]["source"] == \
            "own (this night's arcs and flats)"
        assert CC.show(s, cfg, prod, N + 1)["cameras"]["b1"]["psfnight"] is None


def test_override_file_takes_a_reference_night_and_drops_an_arc(ctx, cfg):
    """calib-NIGHT.toml: `from` wins over the night's own arcs and flats; exclude_expids keeps
    an exposure out of the night's own calibrations."""
    write_night(cfg.raw_root, N)
    write_night(cfg.raw_root, N2, tile=2000)
    arc2 = (N2 - 20000000) * 100 + 1
    cfg.calib_overrides.mkdir(parents=True)
    (cfg.calib_overrides / f"calib-{N2}.toml").write_text(
        f'night = {N2}\nfrom = {N}\nexclude_expids = [{arc2}]\ncomment = "arc lamp off"\n')
    now = O.utc_now()
    for n in (N, N2):
        ingest_night(ctx, n, now)
        O.plan(ctx, n, closed=True)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "test")
        keys = repo.job_keys(s, prod, N2)
        assert f"{N2}/arc/{arc2:08d}" not in keys and f"{N2}/flat/{arc2 + 1:08d}" in keys
        sci = repo.get_job(s, prod, f"{N2}/science/{arc2 + 2:08d}")
        assert sci.calib_night == N
        assert {f"{N}/psfnight", f"{N}/fiberflatnight"} <= {
            p.key for p in repo.parents_of(s, [sci.id])[sci.id]}
        shown = CC.show(s, cfg, prod, N2)
    assert shown["choice"]["exclude_expids"] == [arc2]
    assert shown["cameras"]["b0"]["source"].startswith(f"chosen (file {cfg.calib_overrides}")


def test_broken_override_file_holds_the_science_with_its_error(ctx, cfg):
    write_night(cfg.raw_root, N)
    cfg.calib_overrides.mkdir(parents=True)
    (cfg.calib_overrides / f"calib-{N}.toml").write_text(f"night = {N}\nfrom = 2026\n")
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "test")
        sci = repo.get_job(s, prod, f"{N}/science/{(N - 20000000) * 100 + 3:08d}")
        assert sci.state == "held" and "calibration override refused: " in sci.hold_reason
        assert "from must be a YYYYMMDD night, got 2026" in sci.hold_reason
        assert repo.get_job(s, prod, f"{N}/psfnight").state == "planned"   # the rest goes on


@pytest.mark.parametrize("body,expect", [
    ("night = 20261126\nfrom = 20261124\nfrm = 1\n", "unknown key frm"),
    ("night = 20261127\n", "night = 20261127 but the file is for night 20261126"),
    ("night = 20261126\nfrom = 2026112\n", "from must be a YYYYMMDD night, got 2026112"),
    ("night = 20261126\ninclude_expids = [5]\nexclude_expids = [5]\n",
     "EXPID 5 is in both include_expids and exclude_expids"),
    ("night = 20261126\nfrom = [\n", "not valid TOML"),
])
def test_bad_override_file_is_one_line(tmp_path, body, expect):
    p = tmp_path / f"calib-{N2}.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match="^" + str(p).replace(".", r"\.") + ": ") as e:
        CC.load_override(p, N2)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_max_calib_age_nights_is_range_checked(tmp_path):
    conf = write_config(tmp_path, extra="[calib]\nmax_calib_age_nights = -1\n")
    r = cli(conf, "status", check=False)
    assert r.returncode == 2
    assert "calib.max_calib_age_nights must be between 0 and 366, got -1" in r.stderr


def test_override_file_include_expids_keeps_only_those(ctx, cfg):
    """include_expids: the night's own calibrations are built from these exposures only."""
    write_night(cfg.raw_root, N)
    write_exposure(cfg.raw_root, N, 6, "ARC")
    arc1, arc2 = (N - 20000000) * 100 + 1, (N - 20000000) * 100 + 6
    cfg.calib_overrides.mkdir(parents=True)
    (cfg.calib_overrides / f"calib-{N}.toml").write_text(f"night = {N}\ninclude_expids = [{arc1}, "
                                                         f"{arc1 + 1}, {arc1 - 1}]\n")
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "test")
        assert repo.get_job(s, prod, f"{N}/psfnight").expids == [arc1]
        assert f"{N}/arc/{arc2:08d}" not in repo.job_keys(s, prod, N)
        assert repo.get_job(s, prod, f"{N}/science/{arc1 + 2:08d}").calib_night is None


def test_calib_use_leaves_submitted_jobs_alone(ctx, cfg):
    """Jobs already submitted keep their calibrations: listed, not re-planned."""
    N4 = N + 3
    write_night(cfg.raw_root, N)
    write_night(cfg.raw_root, N4, tile=4000)
    for n in (N, N4):
        ingest_night(ctx, n, O.utc_now())
        O.plan(ctx, n, closed=True)
    O.submit_ready(ctx, O.utc_now())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, "test")
        sci = f"{N4}/science/{(N4 - 20000000) * 100 + 3:08d}"
        assert repo.get_job(s, prod, sci).state == "submitted"
        change = CC.use(s, cfg, prod, N4, N, "operator:test")
        assert change.replanned == [] and f"{sci} (submitted)" in change.untouched
        assert repo.get_job(s, prod, sci).calib_night is None
