"""The raw-data simulator: layout, headers, determinism, bad-data modes, CLI."""

from __future__ import annotations

import json

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desinight.core.errors import BadExposure, DesinightError
from desinight.rawdata import inspect_exposure
from desinight.sim import simulate_night
from desinight.sim.badmodes import BAD_MODES

NIGHT = 20261124


@pytest.fixture(scope="module")
def night_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    dirs = simulate_night(NIGHT, root, preset="small", seed=3, bad=BAD_MODES)
    return root, dirs


def test_layout_and_headers(night_dir):
    root, dirs = night_dir
    good = dirs[:6]
    assert [d.name for d in good] == [f"{26112400 + i:08d}" for i in range(6)]
    types = []
    for d in good:
        expid = int(d.name)
        raw = d / f"desi-{expid:08d}.fits.fz"
        assert (d / f"request-{expid:08d}.json").exists()
        assert not [p for p in d.iterdir() if p.name.startswith(".")]
        hdr = fitsio.read_header(str(raw), 0)
        for key in ("EXPID", "NIGHT", "OBSTYPE", "TILEID", "EXPTIME", "PROGRAM", "DATE-OBS",
                    "MJD-OBS", "CAMERAS", "SEQNUM", "SEQTOT"):
            assert key in hdr, key
        assert hdr["EXPID"] == expid and hdr["NIGHT"] == NIGHT and hdr["CAMERAS"] == "b0,r0,z0"
        types.append(hdr["OBSTYPE"])
        with fits.open(raw) as hd:       # astropy reads the compressed images too
            assert [h.name for h in hd[1:]] == ["B0", "R0", "Z0"]
            assert hd["B0"].header["EXPID"] == expid
            assert hd["B0"].data.dtype == np.int16
        exp = inspect_exposure(d)
        assert exp.cameras == ("b0", "r0", "z0") and not exp.bad_cameras
        req = json.loads((d / f"request-{expid:08d}.json").read_text())
        assert req["OBSTYPE"] == hdr["OBSTYPE"]
    assert types == ["ZERO", "ARC", "FLAT", "SCIENCE", "SCIENCE", "SCIENCE"]
    last = inspect_exposure(good[-1])
    assert last.seqnum == last.seqtot == 3 and last.tileid is not None
    fa = fitsio.read(str(good[3] / f"fiberassign-{last.tileid}.fits"), ext="FIBERASSIGN")
    assert len(fa) == 50 and {"SKY", "TGT"} == set(fa["OBJTYPE"])
    assert {"SKY", "STD", "BGS", "ELG", "LRG", "QSO", "STAR"} == set(fa["TARGET_TYPE"])
    truth = fitsio.read(str(root / "truth" / f"truth-{NIGHT}.fits"))
    assert set(truth["TARGETID"]) == set(fa["TARGETID"])
    assert truth["TRUEZ"].max() > 1.0


def test_bad_modes_are_rejected(night_dir):
    _, dirs = night_dir
    extra = dict(zip(BAD_MODES, dirs[6:]))
    for mode, d in extra.items():
        if mode == "missing-camera":
            exp = inspect_exposure(d)
            assert exp.bad_cameras == ("z0",), mode
            continue
        with pytest.raises(BadExposure):
            inspect_exposure(d)


def test_deterministic_by_seed(tmp_path):
    a = simulate_night(NIGHT, tmp_path / "a", seed=7)
    b = simulate_night(NIGHT, tmp_path / "b", seed=7)
    c = simulate_night(NIGHT, tmp_path / "c", seed=8)
    for x, y, z in zip(a, b, c):
        name = f"desi-{x.name}.fits.fz"
        ia = fitsio.read(str(x / name), ext="R0")
        assert np.array_equal(ia, fitsio.read(str(y / name), ext="R0"))
        if x.name.endswith("03"):
            assert not np.array_equal(ia, fitsio.read(str(z / name), ext="R0"))


def test_errors():
    with pytest.raises(DesinightError):
        simulate_night(NIGHT, "/tmp/never", preset="huge")
    with pytest.raises(DesinightError):
        simulate_night(NIGHT, "/tmp/never", bad=["nope"])


def test_cli(tmp_path):
    from click.testing import CliRunner

    from desinight.cli.sim_cmd import sim
    r = CliRunner().invoke(sim, ["night", "--night", str(NIGHT), "--out", str(tmp_path),
                                 "--seed", "2", "--bad", "wrong-obstype",
                                 "--truth-dir", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t" / f"truth-{NIGHT}.fits").exists()
    assert len(list((tmp_path / str(NIGHT)).iterdir())) == 7


def test_realtime_partial_file_then_request(tmp_path):
    """In realtime mode the raw file is visible half-written before it completes, and the
    request file (what marks an exposure complete) only appears after it."""
    import threading
    import time

    from desinight.rawdata import Incomplete
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    p = I.PRESETS["small"]
    e = N.schedule(p, NIGHT, 0)[0]
    images = dict(N.render_camera((p, c, e, 0)) for c in e.cameras)
    t = threading.Thread(target=N.write_exposure, args=(tmp_path, p, e, images, None, e.expid, 1.5))
    t.start()
    expdir = tmp_path / str(NIGHT) / f"{e.expid:08d}"
    raw = expdir / f"desi-{e.expid:08d}.fits.fz"
    deadline = time.time() + 10
    # the first bytes written (the writer paces the rest over 1.5 s)
    while not (raw.exists() and raw.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.02)
    partial = raw.stat().st_size
    assert not (expdir / f"request-{e.expid:08d}.json").exists()
    with pytest.raises(Incomplete):
        inspect_exposure(expdir)
    t.join()
    assert raw.stat().st_size > partial
    assert inspect_exposure(expdir).obstype == "ZERO"


def test_realtime_night_in_order(tmp_path):
    dirs = simulate_night(NIGHT, tmp_path, realtime=1e6)
    mtimes = [(d / f"request-{d.name}.json").stat().st_mtime for d in dirs]
    assert mtimes == sorted(mtimes)


# --- observing-condition knobs: each changes the headers and the light as documented ---------
BASE = ["--exptime", "1000", "--seeing", "1.0", "--airmass", "1.0", "--moon", "0"]


def _fibre_signal(raw, cam):
    """Electrons per fibre (sum of +-3 columns around the true trace over the central rows),
    from a raw image alone: overscan-subtracted, gain-corrected."""
    from desinight.sim import ccd
    from desinight.sim import instrument as I
    p = I.PRESETS["small"]
    raw = raw.astype(float)
    img = np.zeros((p.ny, p.nx))
    for amp, reg in I.amp_layout(p).items():
        y0, y1, x0, x1 = reg["DATA"]
        b = reg["BIAS"]
        cy0, cy1, cx0, cx1 = reg["CCD"]
        level = np.median(raw[b[0]:b[1], b[2]:b[3]])
        img[cy0:cy1, cx0:cx1] = (raw[y0:y1, x0:x1] - level) * ccd.amp_params(cam)[amp]["GAIN"]
    rows = np.arange(p.ny // 2 - 150, p.ny // 2 + 150)
    xc = I.true_trace(p, cam, rows)
    near = np.abs(np.arange(p.nx)[None, None, :] - xc[:, :, None]) <= 3     # (fibre, row, col)
    return (near * img[rows][None]).sum(axis=(1, 2))


KNOBS = {"base": {}, "exptime": {"exptime": 250.0}, "seeing": {"seeing": 2.0},
         "moon": {"moon": 1.0}, "airmass": {"airmass": 2.0}}


@pytest.fixture(scope="module")
def knob_nights():
    """The first science exposure (b0, z0) at fixed conditions and with each knob changed, same
    seed (same targets and noise draws): differences come from the knob alone."""
    from desinight.sim import conditions as C
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    from desinight.sim import targets as TG
    p = I.PRESETS["small"]
    out = {}
    for name, change in KNOBS.items():
        cond = C.Conditions(**{"exptime": 1000.0, "seeing": 1.0, "airmass": 1.0, "moon": 0.0,
                               **change})
        e = next(x for x in N.schedule(p, NIGHT, 11, (), cond) if x.obstype == "SCIENCE")
        tile = TG.make_tile(p, e.tileid, np.random.default_rng([11, e.tileid, 5]))
        N.TILES[e.tileid] = tile
        out[name] = {"sig": {c: _fibre_signal(N.render_camera((p, c, e, 11))[1], c)
                             for c in ("b0", "z0")}, "fa": tile.fiberassign}
    return out


def _ratio(nights, knob, cam, kinds, skysub=False):
    """Median ratio (knob night / base night) of the fibres of these kinds; skysub: of the
    fibre signal less the median sky fibre (the object's own light)."""
    kind = np.char.strip(nights["base"]["fa"]["TARGET_TYPE"].astype(str))
    m = np.isin(kind, kinds)

    def sig(name):
        s = nights[name]["sig"][cam]
        return s - np.median(s[kind == "SKY"]) if skysub else s
    return float(np.median(sig(knob)[m] / sig("base")[m]))


@pytest.mark.slow
def test_knob_cli_headers_and_truth(tmp_path):
    from click.testing import CliRunner

    from desinight.cli.sim_cmd import sim
    r = CliRunner().invoke(sim, ["night", "--night", str(NIGHT), "--out", str(tmp_path),
                                 "--seed", "11", "--exptime", "250", "--seeing", "2.0",
                                 "--moon", "0.5", "--airmass", "1.7"])
    assert r.exit_code == 0, r.output
    dirs = sorted((tmp_path / str(NIGHT)).iterdir())
    hdr = fitsio.read_header(str(dirs[3] / f"desi-{dirs[3].name}.fits.fz"), 0)
    assert (hdr["OBSTYPE"], hdr["EXPTIME"], hdr["SEEING"], hdr["MOONFRAC"], hdr["AIRMASS"]) == \
        ("SCIENCE", 250, 2.0, 0.5, 1.7)
    assert json.loads((dirs[3] / f"request-{dirs[3].name}.json").read_text())["EXPTIME"] == 250
    assert fitsio.read_header(str(dirs[1] / f"desi-{dirs[1].name}.fits.fz"), 0)["EXPTIME"] == 5
    ex = fitsio.read(str(tmp_path / "truth" / f"truth-{NIGHT}.fits"), "EXPOSURES")
    assert len(ex) == 3 and np.all(ex["AIRMASS"] == np.float32(1.7))
    assert np.all(ex["EFFTIME"] < 0.5 * 250)      # bad seeing, moon, airmass: far below EXPTIME


@pytest.mark.slow
def test_exptime_scales_all_light(knob_nights):
    for cam in ("b0", "z0"):
        assert _ratio(knob_nights, "exptime", cam, ["SKY"]) == pytest.approx(0.25, abs=0.03)
        assert _ratio(knob_nights, "exptime", cam, ["STD"], True) == pytest.approx(0.25, abs=0.03)


@pytest.mark.slow
def test_seeing_dims_targets_not_sky(knob_nights):
    """Fibre acceptance at 2.0" vs 1.0": point sources keep ~40% (Gaussian PSF in a 1.5"
    fibre); extended galaxies lose less; the sky (fills the fibre) is unchanged."""
    assert _ratio(knob_nights, "seeing", "z0", ["SKY"]) == pytest.approx(1.0, abs=0.02)
    star = _ratio(knob_nights, "seeing", "z0", ["STD"], True)
    assert 0.35 < star < 0.55
    assert _ratio(knob_nights, "seeing", "b0", ["STD"], True) < star   # worse seeing in the blue


@pytest.mark.slow
def test_moon_brightens_the_sky_bluer(knob_nights):
    b, z = (_ratio(knob_nights, "moon", c, ["SKY"]) for c in ("b0", "z0"))
    assert b > 5 and z > 1.5 and b > 2 * z
    assert _ratio(knob_nights, "moon", "z0", ["STD"], True) == pytest.approx(1.0, abs=0.03)


@pytest.mark.slow
def test_airmass_extinguishes_blue_and_adds_sky(knob_nights):
    assert _ratio(knob_nights, "airmass", "z0", ["SKY"]) == pytest.approx(2**0.8, rel=0.05)
    b_star = _ratio(knob_nights, "airmass", "b0", ["STD"], True)
    z_star = _ratio(knob_nights, "airmass", "z0", ["STD"], True)
    assert 0.75 < b_star < 0.9 and z_star > 0.93                     # extinction is blue


def test_knob_errors_are_one_line():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "desinight", "sim", "night", "--night", str(NIGHT),
                        "--out", "/tmp/never-written", "--moon", "1.5"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "--moon" in r.stderr


def test_targets_follow_desi_class_depths():
    """Magnitudes, redshifts and [OII] fluxes of each class in the documented ranges; several
    stellar types; the truth's magnitudes are those of the spectra."""
    from desinight.sim import instrument as I
    from desinight.sim import targets as TG
    p = I.Preset("t", 1, 8, 1000, 1, 1, 1, 1, 3, 1000.0)       # 200 fibres, 140 targets
    tile = TG.make_tile(p, 7, np.random.default_rng(99))
    t = tile.truth
    cls = np.char.strip(t["TRUESUBTYPE"].astype(str))
    of = {c: t[cls == c] for c in ("BGS", "LRG", "ELG", "QSO", "STAR", "STD")}
    assert all(len(v) >= 10 for v in of.values())
    assert np.all(of["BGS"]["MAG_R"] <= 19.5 + 1e-4) and np.all(of["BGS"]["TRUEZ"] < 0.61)
    assert np.all((of["LRG"]["MAG_Z"] >= 18.5 - 1e-4) & (of["LRG"]["MAG_Z"] <= 21 + 1e-4))
    elg = of["ELG"]
    assert np.all((elg["MAG_G"] >= 22 - 1e-4) & (elg["MAG_G"] <= 23.5 + 1e-4))
    assert np.all((elg["OII_FLUX"] >= 0.99e-17) & (elg["OII_FLUX"] <= 3.01e-16))
    assert np.all((elg["TRUEZ"] >= 0.6) & (elg["TRUEZ"] <= 1.6))
    assert np.ptp(elg["AV"]) > 0.8 and np.all(elg["HALF_LIGHT"] > 0)
    assert np.all(of["QSO"]["MAG_G"] <= 22.5 + 1e-4) and of["QSO"]["TRUEZ"].max() > 2.1
    assert len(set(of["STAR"]["STARTYPE"])) >= 4
    assert np.all(of["STD"]["HALF_LIGHT"] == 0)
    fa = tile.fiberassign
    assert np.allclose(fa["FLUX_R"], t["FLUX_R"]) and np.all(fa["FLUX_G"][cls == "ELG"] > 0)


def test_truth_records_conditions_and_departures(night_dir):
    """The truth of a night: per-exposure conditions and flexure, a chromatic throughput that
    changes by >= 10% across each arm and from exposure to exposure, per-fibre sky scales; and
    the line-spread width varies over fibres and rows."""
    from desinight.sim import conditions as C
    from desinight.sim import instrument as I
    root, _ = night_dir
    path = str(root / "truth" / f"truth-{NIGHT}.fits")
    ex, th, sk = (fitsio.read(path, h) for h in ("EXPOSURES", "THROUGHPUT", "SKY"))
    assert len(ex) == 3 and np.all(ex["FLEX_Y"] != 0) and np.ptp(ex["SEEING"]) > 0
    assert np.all(ex["EFFTIME"] > 0) and np.all(ex["EFFTIME"] < ex["EXPTIME"] * 1.3)
    assert len(th) == 9 and len(sk) == 150
    for row in th:
        tilt = C.exposure_tilt(row["WAVE"], row["CAMERA"], 3, row["EXPID"])
        assert tilt[-1] / tilt[0] > 1.1 or tilt[0] / tilt[-1] > 1.1
        assert 0.2 < row["FIBERFRAC_PSF"].mean() < 0.95
    r0 = th[th["CAMERA"] == "r0"]
    shape = r0["THROUGHPUT"] / r0["THROUGHPUT"][:, 50:51]            # chromatic, not grey
    assert np.ptp(shape[:, 0] / shape[:, -1]) > 0.02
    assert 0.005 < np.std(sk["LINE_SCALE"]) < 0.03
    lsf = I.lsf_sigma(I.PRESETS["small"], "r0")
    assert lsf.max() / lsf.min() > 1.08


def test_truth_throughput_is_what_the_render_applies():
    """A point source's electrons per A, less the sky, equal flux x 1e-17 x area x EXPTIME x
    lambda/hc x THROUGHPUT x FIBERFRAC_PSF x the fibre's flat throughput (docs/simulator.md):
    the truth a flux-calibration check compares with."""
    from desinight.sim import conditions as C
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    from desinight.sim import targets as TG
    p, seed = I.PRESETS["small"], 5
    e = next(x for x in N.schedule(p, NIGHT, seed) if x.obstype == "SCIENCE")
    tile = TG.make_tile(p, e.tileid, np.random.default_rng(1))
    f = int(np.flatnonzero(np.char.strip(tile.truth["TRUESUBTYPE"].astype(str)) == "STD")[0])
    cam = "r0"
    wave = I.true_wave(p, cam, np.arange(p.ny), e.flex_y)
    tf = N.fiber_throughput(p, 0, wave)
    lsf = I.lsf_sigma(p, cam)
    rows = N._science_rows(p, cam, e, tile, wave, tf, lsf, seed)
    tile.spectra = [None] * len(tile.spectra)
    sky = N._science_rows(p, cam, e, tile, wave, tf, lsf, seed)
    got = (rows - sky)[f] / np.gradient(wave[f])
    tile2 = TG.make_tile(p, e.tileid, np.random.default_rng(1))
    flux = tile2.spectra[f].continuum(wave[f])
    w = np.linspace(*I.ARM_RANGES["r"], 100)
    thr = C.true_throughput(w, cam, e, seed) * C.fiber_acceptance(w, e.seeing)
    want = flux * 1e-17 * I.TEL_AREA_CM2 * e.exptime * wave[f] / I.HC_ERG_A * \
        np.interp(wave[f], w, thr) * tf[f]
    inner = slice(50, p.ny - 50)
    assert np.median(got[inner] / want[inner]) == pytest.approx(1.0, abs=0.01)


def test_continuum_goes_through_the_line_spread_function():
    """A galaxy's stellar absorption lines live in its continuum (desinight.sim.sps): the
    continuum is convolved with the fibre's line-spread sigma and the row's width, as lines are."""
    from desinight.sim import ccd

    wave = np.tile(np.arange(5000.0, 5101.0), (2, 1))        # 1 A per row
    cont = np.ones_like(wave)
    cont[:, 50] = 0.0                                        # a one-row absorption line
    lsf = np.stack([np.full(101, 1.0), np.full(101, 2.0)])
    out = ccd.spectra_to_rows(wave, cont, np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0)), lsf)
    dip = 1.0 - out
    assert dip.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-6)    # flux is conserved
    rows = np.arange(101) - 50
    width = np.sqrt((dip * rows**2).sum(axis=1))
    assert width == pytest.approx(np.sqrt(np.array([1.0, 4.0]) + 1 / 12), rel=0.02)


def test_efftime_goal_sets_each_exposure_for_its_conditions():
    """--efftime S (an exposure-time calculator): every tile's EFFTIME sums to S whatever the
    drawn transparency, seeing and airmass, and worse conditions get longer exposures; moon
    makes the whole tile longer."""
    from desinight.sim import conditions as C
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    p = I.PRESETS["small"]
    ex = N.truth_tables(p, N.schedule(p, NIGHT, 11, (), C.Conditions(efftime=900.0)), 11)[0]
    assert len(ex) == 3 and float(ex["EFFTIME"].sum()) == pytest.approx(900.0, rel=1e-4)
    np.testing.assert_allclose(ex["EFFTIME"], 300.0, rtol=1e-4)
    assert ex["EXPTIME"].max() > 1.05 * ex["EXPTIME"].min()        # conditions differ
    rate = ex["EFFTIME"] / ex["EXPTIME"]
    slow = np.argsort(rate)
    assert np.all(np.diff(ex["EXPTIME"][slow]) <= 0)                # slower -> longer
    moon = N.truth_tables(p, N.schedule(p, NIGHT, 11, (), C.Conditions(efftime=900.0, moon=1.0)),
                          11)[0]
    assert float(moon["EFFTIME"].sum()) == pytest.approx(900.0, rel=1e-4)
    assert moon["EXPTIME"].sum() > 1.5 * ex["EXPTIME"].sum()


@pytest.mark.slow
def test_efftime_cli_writes_each_exposure_its_time(tmp_path):
    """`sim night --efftime 600`: the tile's truth EFFTIME sums to 600 s, and every science
    exposure's header and request carry the EXPTIME the calculator chose for it."""
    from click.testing import CliRunner

    from desinight.cli.sim_cmd import sim
    r = CliRunner().invoke(sim, ["night", "--night", str(NIGHT), "--out", str(tmp_path),
                                 "--seed", "12", "--efftime", "600"])
    assert r.exit_code == 0, r.output
    ex = fitsio.read(str(tmp_path / "truth" / f"truth-{NIGHT}.fits"), "EXPOSURES")
    assert float(ex["EFFTIME"].sum()) == pytest.approx(600.0, rel=1e-3)
    for row in ex:
        d = tmp_path / str(NIGHT) / f"{row['EXPID']:08d}"
        hdr = fitsio.read_header(str(d / f"desi-{d.name}.fits.fz"), 0)
        assert hdr["OBSTYPE"] == "SCIENCE"
        assert hdr["EXPTIME"] == pytest.approx(float(row["EXPTIME"]), rel=1e-5)
        assert json.loads((d / f"request-{d.name}.json").read_text())["EXPTIME"] == \
            pytest.approx(float(row["EXPTIME"]), rel=1e-5)
    assert len(set(np.round(ex["EXPTIME"], 1))) == 3              # one time per exposure


@pytest.mark.parametrize("args", [["--efftime", "900", "--exptime", "300"], ["--efftime", "0"],
                                  ["--efftime", "15000", "--moon", "1", "--airmass", "3"]])
def test_efftime_errors_are_one_line(tmp_path, args):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "desinight", "sim", "night", "--night", str(NIGHT),
                        "--out", str(tmp_path), *args], capture_output=True, text=True)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(err) == 1 and "--efftime" in err[0], r.stderr
    assert not list(tmp_path.glob("*/*/desi-*.fits.fz"))
