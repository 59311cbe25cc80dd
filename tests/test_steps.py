"""Science steps: biasnight and preproc on a small simulated night; job failure isolation."""

from __future__ import annotations

import json

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from desinight.desimodel import ARM_RANGES, vacuum_to_air
from desinight.sim import simulate_night
from desinight.steps import io
from desinight.steps.jobs import run_job

NIGHT = 20261124
CAMS = ["b0", "r0", "z0"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    raw, redux = root / "raw", root / "redux"
    dirs = simulate_night(NIGHT, raw, preset="small", seed=5)
    mp = pytest.MonkeyPatch()
    mp.setenv("DESI_SPECTRO_DATA", str(raw))
    mp.setenv("DESI_SPECTRO_REDUX", str(redux))
    mp.setenv("SPECPROD", "test")
    by_type: dict[str, list[int]] = {}
    for d in dirs:
        h = fitsio.read_header(str(d / f"desi-{d.name}.fits.fz"), 0)
        by_type.setdefault(h["OBSTYPE"], []).append(int(h["EXPID"]))
    assert run_job("biasnight", NIGHT, by_type["ZERO"], None, CAMS) == 0
    yield by_type
    mp.undo()


def _nightly_calibrations(env) -> None:
    assert run_job("arc", NIGHT, env["ARC"], None, CAMS) == 0
    assert run_job("psfnight", NIGHT, env["ARC"], None, CAMS) == 0
    assert run_job("flat", NIGHT, env["FLAT"], None, CAMS) == 0
    assert run_job("fiberflatnight", NIGHT, env["FLAT"], None, CAMS) == 0


def test_biasnight_outputs(env):
    for cam in CAMS:
        path = io.calibnight_path("biasnight", NIGHT, cam)
        hdr = fitsio.read_header(str(path), "IMAGE")
        assert hdr["DNSTEP"] == "biasnight" and hdr["NZERO"] == 1


def test_preproc_zero_is_noise(env):
    """A zero without its bias: the overscan, gain and read-noise path alone. Away from the
    fixed pattern's ramps, less each row's median, every amplifier's scatter is the read noise
    preproc's variance holds (its signal term, max(pixel, 0), aside) within 3%. (From the MAD
    of integer ADU it was 20-40% off per amplifier; this test then allowed 0.75-1.25.)"""
    expid = env["ZERO"][0]
    from desinight import desimodel
    from desinight.steps import preproc
    for cam in CAMS:
        out = io.preproc_path(NIGHT, expid, cam)
        preproc.preproc_camera(io.raw_path(NIGHT, expid), cam, None, out)
        img = fitsio.read(str(out), "IMAGE")
        ivar = fitsio.read(str(out), "IVAR")
        hdr = fitsio.read_header(str(io.raw_path(NIGHT, expid)), cam.upper())
        # without the nightly bias, the fixed pattern remains: small (few e) but nonzero
        assert abs(np.median(img)) < 10
        nx = img.shape[1]
        for amp in desimodel.AMPS:
            y0, y1, x0, x1 = desimodel.parse_section(hdr[f"CCDSEC{amp}"])
            cols = np.arange(x0, x1)
            far = np.minimum(cols, nx - 1 - cols) > 100          # the ramps are 25 columns
            d = img[y0:y1, x0:x1][:, far]
            rn2 = 1 / ivar[y0:y1, x0:x1][:, far] - np.maximum(d, 0)
            ratio = np.std(d - np.median(d, axis=1, keepdims=True)) / np.sqrt(np.median(rn2))
            assert 0.97 < ratio < 1.03, (cam, amp, ratio)


def test_arc_job_preprocs_and_fits_psf(env):
    from desinight.sim import instrument as I
    from desinight.steps.psf import read_lsf, read_psf
    expid = env["ARC"][0]
    assert run_job("arc", NIGHT, [expid], None, CAMS) == 0
    p = I.PRESETS["small"]
    y = np.arange(p.ny)
    for cam in CAMS:
        x, wave, sig = read_psf(io.exposure_path("psf", NIGHT, expid, cam))
        assert np.abs(x - I.true_trace(p, cam, y)).max() < 0.2           # columns
        dwdy = np.gradient(wave, axis=1)
        # the lamp list is in air, the solution in vacuum (DESI's templates are)
        assert (np.abs(wave - I.air_to_vacuum(I.true_wave(p, cam, y))) / dwdy).max() < 0.2
        # the line-spread width measured on the arc lines: the simulator's, within 10%
        lsf = read_lsf(io.exposure_path("psf", NIGHT, expid, cam))
        assert lsf.shape == x.shape and abs(np.median(lsf) / I.PSF_SIGMA_Y - 1) < 0.1
        # and its variation over the CCD (focus: ~17% between centre and corners) fibre by
        # fibre and row by row: r.m.s. 0.3-0.4% (a line in y per fibre alone: 2.6%), at worst
        # 2-3% in a corner on seeds 3-5
        rel = lsf / I.lsf_sigma(p, cam) - 1
        assert np.sqrt(np.mean(rel**2)) < 0.01 and np.abs(rel).max() < 0.05, cam
    for cam in CAMS:
        path = io.preproc_path(NIGHT, expid, cam)
        img = fitsio.read(str(path), "IMAGE")
        mask = fitsio.read(str(path), "MASK")
        assert img.shape == (1000, 412)
        # arc lines are not cosmics: very few masked pixels
        assert (mask & 2).sum() < 0.002 * mask.size
    status = io.redux_dir() / "run" / "steps" / str(NIGHT) / f"arc-{expid:08d}-rank0.json"
    tasks = json.loads(status.read_text())["tasks"]
    assert {t["camera"] for t in tasks} == set(CAMS)


def test_flat_preproc_noise_consistent(env):
    """Flat minus a smoothed version of itself along y is consistent with its ivar."""
    expid = env["FLAT"][0]
    run_job("flat", NIGHT, [expid], None, ["r0"])
    path = io.preproc_path(NIGHT, expid, "r0")
    img = fitsio.read(str(path), "IMAGE").astype(float)
    ivar = fitsio.read(str(path), "IVAR")
    # pairs of adjacent rows see (nearly) the same light: their difference is pure noise
    d = img[1:] - img[:-1]
    v = np.where((ivar[1:] > 0) & (ivar[:-1] > 0), 1 / np.maximum(ivar[1:], 1e-12) +
                 1 / np.maximum(ivar[:-1], 1e-12), 0)
    bright = (v > 0) & (img[1:] > 2000)
    chi2 = np.mean(d[bright] ** 2 / v[bright])
    assert 0.8 < chi2 < 1.3


@pytest.mark.slow
def test_chain_to_sframe_sky_residuals_are_noise(env):
    """arc -> psfnight -> flat -> fiberflatnight -> science (all three exposures); the sky
    fibres' residual pulls (flux - sky) * sqrt(ivar), each sky fibre predicted by the model of
    the other sky fibres, have a standard deviation of 1 +- 0.05 in every camera (the issue's
    goal). Measured on this seed: b 1.005, r 1.012, z 1.021 (0.98, 1.02, 1.04 with the read
    noise from the overscan's MAD; z 1.06-1.09 on other seeds). On the brightest 1% of sky
    pixels (the cores of the OH lines, where a sky model that ignores each fibre's line-spread
    width reached 1.8) they are 1.0-1.17: bounded at 1.2, printed with -s. The sframes' wavelengths
    are shifted by the flexure the sky lines show."""
    from desinight.steps.jobs import sky_fibers
    n = env["ARC"] + env["FLAT"]
    _nightly_calibrations(env)
    for expid in env["SCIENCE"]:
        assert run_job("science", NIGHT, [expid], None, CAMS) == 0
    exposures = fitsio.read(str(io.raw_root() / "truth" / f"truth-{NIGHT}.fits"), "EXPOSURES")
    flex = dict(zip(exposures["EXPID"].tolist(), exposures["FLEX_Y"].tolist()))
    for cam in CAMS:
        pulls, level = [], []
        for expid in env["SCIENCE"]:
            path = io.exposure_path("sframe", NIGHT, expid, cam)
            flux, ivar = fitsio.read(str(path), "FLUX"), fitsio.read(str(path), "IVAR")
            hdr = fitsio.read_header(str(path), "FLUX")
            assert hdr["DNSTEP"] == "sky"
            # the flexure since the arcs, from the sky lines: the simulator's (0.1-0.22 rows
            # on this seed) within 0.03 rows (measured within 0.02), in every camera
            assert hdr["NFLEXLN"] >= 1 and abs(hdr["FLEXURE"] - flex[expid]) < 0.03, \
                (expid, cam, hdr["FLEXURE"], flex[expid])
            frame_wave = fitsio.read(str(io.exposure_path("frame", NIGHT, expid, cam)), "WAVELENGTH")
            shift = (frame_wave - fitsio.read(str(path), "WAVELENGTH")) / np.gradient(frame_wave, axis=1)
            assert np.allclose(shift, hdr["FLEXURE"], atol=1e-3)    # relabelled by it
            sky = sky_fibers(NIGHT, expid, cam, flux.shape[0])
            # outliers masked on sky fibres (cosmic-ray hits) are rare: they hide no model error
            assert hdr["NSKYREJ"] < 1e-3 * ivar[sky].size
            ok = ivar[sky] > 0
            assert ok.mean() > 0.98
            pulls.append((flux[sky] * np.sqrt(ivar[sky]))[ok])
            level.append(fitsio.read(str(path), "SKY")[sky][ok])
        p, lv = np.concatenate(pulls), np.concatenate(level)
        bright = lv > np.quantile(lv, 0.99)
        std_all, std_bright = float(np.std(p)), float(np.std(p[bright]))
        print(f"{cam}: sky-fibre pulls std {std_all:.3f}, brightest 1% {std_bright:.3f}, "
              f"mean {np.mean(p):.3f}")
        assert n and 0.95 < std_all < 1.05, (cam, std_all)
        # no offset: with each pixel's shot noise from its own counts the sky model sat 0.05-0.09
        # sigma below every sky fibre (sky.expected_ivar)
        assert abs(np.mean(p)) < 0.04, (cam, np.mean(p))
        assert std_bright < 1.2, (cam, std_bright)


def test_cli_bad_kind_and_failure_exit(env):
    from desinight.cli.step_cmd import step
    r = CliRunner().invoke(step, ["run", "redshift", "--night", str(NIGHT), "--cameras", "b0",
                                  "--tile", "1"])
    assert r.exit_code == 1
    r = CliRunner().invoke(step, ["run", "nope", "--night", str(NIGHT), "--cameras", "b0"])
    assert r.exit_code != 0


@pytest.mark.slow
def test_stdstars_and_fluxcalib_recover_star_fluxes(env):
    """After the chain test: cframes of the standard stars match their catalogue r flux."""
    from desinight.steps.fluxcalib import nmgy_to_flambda
    sci = env["SCIENCE"]
    if not io.calibnight_path("psfnight", NIGHT, "r0").exists():
        _nightly_calibrations(env)   # run alone or first: build what the chain test builds
    for e in sci:
        if not io.exposure_path("sframe", NIGHT, e, "r0").exists():
            assert run_job("science", NIGHT, [e], None, CAMS) == 0
    tile = fitsio.read_header(str(io.exposure_path("sframe", NIGHT, sci[0], "r0")), "FLUX")["TILEID"]
    assert run_job("stdstars", NIGHT, sci, tile, CAMS) == 0
    std_hdr = fitsio.read_header(str(io.tile_path("stdstars", tile, NIGHT, 0)), "STDSTARS")
    assert std_hdr["CHROMA"] is True and std_hdr["BANDS"] == "G,R,Z"  # the catalogue's g, r, z
    assert run_job("fluxcalib", NIGHT, [sci[0]], tile, CAMS) == 0
    truth = fitsio.read(str(io.raw_root() / "truth" / f"truth-{NIGHT}.fits"))
    cf = io.exposure_path("cframe", NIGHT, sci[0], "r0")
    flux, wave = fitsio.read(str(cf), "FLUX"), fitsio.read(str(cf), "WAVELENGTH")
    band = np.abs(wave - 6400) < 150
    std = truth[np.char.strip(truth["TRUESUBTYPE"].astype(str)) == "STD"]
    ratio = [np.median(flux[s["FIBER"], band]) / nmgy_to_flambda(s["FLUX_R"], 6400) for s in std]
    assert np.all(np.abs(np.array(ratio) - 1) < 0.1)


@pytest.mark.slow
def test_step_fiberflat_and_run_calib_night(env, tmp_path):
    """`step fiberflat --frame F` reproduces the flat job's fiberflat; `step run --calib-night M`
    takes the nightly calibrations of night M (none for a night never processed: exit 1)."""
    from desinight.cli.step_cmd import step
    _nightly_calibrations(env)
    flat = env["FLAT"][0]
    out = tmp_path / "fiberflat.fits"
    r = CliRunner().invoke(step, ["fiberflat", "--frame", str(io.exposure_path("frame", NIGHT, flat, "b0")),
                                  "--camera", "b0", "--out", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    np.testing.assert_allclose(fitsio.read(str(out)),
                               fitsio.read(str(io.exposure_path("fiberflat", NIGHT, flat, "b0"))),
                               rtol=1e-6, atol=1e-6)
    sci = str(env["SCIENCE"][0])
    base = ["run", "science", "--night", str(NIGHT), "--expids", sci, "--cameras", "b0"]
    io.exposure_path("sframe", NIGHT, int(sci), "b0").unlink(missing_ok=True)   # remade below
    assert CliRunner().invoke(step, base + ["--calib-night", "20261001"]).exit_code == 1
    assert not io.exposure_path("sframe", NIGHT, int(sci), "b0").exists()
    r = CliRunner().invoke(step, base + ["--calib-night", str(NIGHT)])
    assert r.exit_code == 0, (r.output, r.exception)
    assert io.exposure_path("sframe", NIGHT, int(sci), "b0").exists()
def _true_spectra(tileid: int, seed: int = 5):
    """The simulator's own spectra of a tile's targets (regenerated from its seed: the test
    may know the simulator, the steps may not)."""
    from desinight.sim import targets as TG
    from desinight.sim.instrument import PRESETS
    return TG.make_tile(PRESETS["small"], tileid, np.random.default_rng([seed, tileid, 5])).spectra


@pytest.mark.slow
def test_flux_calibration_is_within_2_percent_rms_of_truth_per_camera(env):
    """The fibre map carries the imaging catalogue's g, r, z fluxes (DECam curves), so stdstars
    fits a chromatic correction per exposure and camera (the simulator tilts each exposure's
    throughput by 10-18% across an arm, and extinction grows to the blue). The standards'
    cframes against their true spectra (the simulator's, which the steps never see), in
    40-row bins over each camera's full range, 3570-3600 A included: r.m.s. of calibrated /
    true - 1 below 2% in each camera, and no bin of the median star off by more than 5%.
    Measured on this seed: b 0.8-1.3%, r 0.4-0.8%, z 0.8-1.1%, worst bin 2.4%."""
    sci = env["SCIENCE"]
    if not io.exposure_path("sframe", NIGHT, sci[-1], "z0").exists():
        test_stdstars_and_fluxcalib_recover_star_fluxes(env)
    tile = fitsio.read_header(str(io.exposure_path("sframe", NIGHT, sci[0], "r0")), "FLUX")["TILEID"]
    assert run_job("stdstars", NIGHT, sci, tile, CAMS) == 0
    std_hdr = fitsio.read_header(str(io.tile_path("stdstars", tile, NIGHT, 0)), "STDSTARS")
    assert std_hdr["CHROMA"] is True and std_hdr["BANDS"] == "G,R,Z"
    assert run_job("fluxcalib", NIGHT, sci, tile, CAMS) == 0
    truth = fitsio.read(str(io.raw_root() / "truth" / f"truth-{NIGHT}.fits"))
    std = truth[np.char.strip(truth["TRUESUBTYPE"].astype(str)) == "STD"]
    spectra = _true_spectra(int(tile))
    for e in sci:
        for cam in CAMS:
            cf = io.exposure_path("cframe", NIGHT, e, cam)
            flux, ivar = fitsio.read(str(cf), "FLUX"), fitsio.read(str(cf), "IVAR")
            wave = fitsio.read(str(cf), "WAVELENGTH")
            dev, starts = [], list(range(0, wave.size - 40, 40))
            for s in std:
                true = spectra[int(s["FIBER"])].evaluate(vacuum_to_air(wave))  # sim: air
                f, iv = flux[s["FIBER"]], ivar[s["FIBER"]]
                dev.append([f[k:k + 40].sum() / true[k:k + 40].sum() - 1
                            if (iv[k:k + 40] > 0).all() else np.nan for k in starts])
            dev = np.array(dev)
            assert np.isfinite(dev).sum() > 20 and wave[0] < ARM_RANGES[cam[0]][0] + 30
            rms = float(np.sqrt(np.nanmean(np.square(dev))))
            seen = np.isfinite(dev).any(axis=0)       # bins some standard covers
            worst = float(np.max(np.abs(np.nanmedian(dev[:, seen], axis=0))))
            print(f"{e} {cam}: flux calibration r.m.s. {rms:.4f}, worst bin {worst:.3f}")
            assert rms < 0.02 and worst < 0.05, (e, cam, rms, worst)
