"""The redshift fit (steps/rrfit.py): redrock with the packaged DESI templates only.

One small synthetic target set (analytic spectra, nothing from the simulator), fitted once:
an emission-line galaxy at z=1.1 ([OII] doublet, no continuum features) and a target of pure
noise. Every file the fit opens is recorded with an audit hook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from desinight.steps import rrfit

Z_ELG = 1.1
_opened: list[str] = []
_recording = [False]


def _audit(event, args):
    if _recording[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


def _grid(lo, hi, n=400):
    return np.linspace(lo, hi, n)


def _targets(rng):
    cams = {}
    for arm, (lo, hi) in {"b": (3600, 5900), "r": (5700, 7700), "z": (7500, 9800)}.items():
        w = _grid(lo, hi, 1200)    # ~2 A pixels as the small preset (5.75 A biases z +90 km/s)
        sig = np.full((2, w.size), 2.0)                     # LSF sigma, Angstrom
        f = np.zeros((2, w.size))
        f[0] = 0.5 + 0.1 * (w / 6000.0)
        for lam, amp in ((3727.09, 10.0), (3729.88, 13.0)):      # vacuum, as the templates
            c = lam * (1 + Z_ELG)
            f[0] += amp * np.exp(-0.5 * ((w - c) / 2.5) ** 2)
        iv = np.full((2, w.size), 1 / 0.2**2)
        f = f + rng.normal(0, 0.2, f.shape)
        cams[arm] = (w, f, iv, sig)
    return cams


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    bogus = tmp_path_factory.mktemp("other-templates")
    mp.setenv("RR_TEMPLATE_DIR", str(bogus))      # must be ignored
    _opened.clear()
    _recording[0] = True
    try:
        out = rrfit.fit([11, 12], _targets(np.random.default_rng(7)))
    finally:
        _recording[0] = False
        mp.undo()
    return out, list(_opened)


@pytest.mark.slow
def test_redrock_finds_the_emission_line_galaxy(fitted):
    out, _ = fitted
    assert list(out["TARGETID"]) == [11, 12]
    elg = out[0]
    # within 60 km/s: the templates are in vacuum (air labels would put it 85 km/s low)
    assert abs(elg["Z"] - Z_ELG) / (1 + Z_ELG) < 2e-4 and elg["ZWARN"] == 0
    assert elg["DELTACHI2"] > 25
    assert elg["SPECTYPE"] == "GALAXY" and 0 < elg["ZERR"] < 0.001
    assert elg["NPIXELS"] == 3600
    for k in ("TARGETID", "Z", "ZERR", "ZWARN", "SPECTYPE", "SUBTYPE", "DELTACHI2", "CHI2",
              "COEFF", "NPIXELS"):
        assert k in out.dtype.names


@pytest.mark.slow
def test_noise_is_flagged(fitted):
    out, _ = fitted
    assert out[1]["ZWARN"] != 0 or out[1]["DELTACHI2"] < 9


@pytest.mark.slow
def test_fitting_reads_only_the_packaged_templates(fitted):
    _, opened = fitted
    tdir = rrfit.template_dir().resolve()
    fits = {Path(p).resolve() for p in opened if ".fits" in Path(p).name}
    assert fits == {tdir / f for f in rrfit.TEMPLATE_FILES}
    assert str(tdir).startswith(str(Path(rrfit.__file__).resolve().parents[1]))
    assert (tdir / "LICENSE.md").exists() and "Calura12" in (tdir / "README.md").read_text()


def test_resolution_matrix_rows_are_normalised_gaussians():
    w = np.linspace(5000, 5100, 101)
    R = rrfit.resolution_matrix(w, np.full(w.size, 1.5)).toarray()
    assert np.allclose(R.sum(1), 1)
    row = R[50]
    mean = (row * w).sum()
    assert abs(mean - w[50]) < 1e-9
    assert abs(np.sqrt((row * (w - mean) ** 2).sum()) - 1.5) < 0.05


@pytest.mark.slow
def test_redshift_job_under_mpi_spreads_targets_over_ranks(tmp_path):
    """`desinight step run redshift` under mpiexec -n 2 on one spectrograph: the two ranks share
    its targets (redrock's MPI mode); rank 0 writes one REDSHIFTS table with every target. Each
    target's class cut is applied to the class it was targeted as: the ELGs' [OII] passes, the
    LRG-targeted fibre of noise alone gets QUALITY_CUT in ZWARN (DELTACHI2 <= 15)."""
    import os
    import shutil
    import subprocess

    import fitsio

    if shutil.which("mpiexec") is None:
        pytest.skip("no mpiexec")
    from desinight.steps import io
    night, expid, tile = 20261124, 26112403, 77
    env = {**os.environ, "DESI_SPECTRO_DATA": str(tmp_path / "raw"),
           "DESI_SPECTRO_REDUX": str(tmp_path / "redux"), "SPECPROD": "t",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    os.environ.update({k: env[k] for k in ("DESI_SPECTRO_DATA", "DESI_SPECTRO_REDUX", "SPECPROD")})
    try:
        rng = np.random.default_rng(3)
        fa = np.zeros(5, [("FIBER", "i4"), ("TARGETID", "i8"), ("OBJTYPE", "U3"),
                          ("TARGET_TYPE", "U4")])
        fa["FIBER"], fa["TARGETID"] = np.arange(5), 500 + np.arange(5)
        fa["OBJTYPE"] = ["TGT", "TGT", "SKY", "TGT", "TGT"]
        fa["TARGET_TYPE"] = ["ELG", "ELG", "SKY", "ELG", "LRG"]
        zfib = {0: 0.9, 1: 1.3, 3: 0.75}           # fibre 2 is a sky fibre: not fitted
        for arm, (lo, hi) in {"b": (3600, 5900), "r": (5700, 7700), "z": (7500, 9800)}.items():
            w = _grid(lo, hi)
            f = np.full((5, w.size), 0.5)          # fibre 4: a flat continuum and noise
            for fib, z in zfib.items():
                for lam, amp in ((3726.03, 10.0), (3728.82, 13.0), (4861.3, 6.0), (5006.8, 15.0)):
                    f[fib] += amp * np.exp(-0.5 * ((w - lam * (1 + z)) / 2.5) ** 2)
            f += rng.normal(0, 0.2, f.shape)
            io.write_fits(io.exposure_path("cframe", night, expid, f"{arm}0"),
                          [("FLUX", f.astype(np.float32), [{"name": "EXPID", "value": expid}]),
                           ("IVAR", np.full(f.shape, 25.0, np.float32), None),
                           ("WAVELENGTH", w, None),
                           ("LSFSIGMA", np.full(f.shape, 2.0, np.float32), None)])
        rawdir = io.raw_path(night, expid).parent
        rawdir.mkdir(parents=True)
        fitsio.write(str(rawdir / f"fiberassign-{tile:06d}.fits"), fa, extname="FIBERASSIGN")
    finally:
        for k in ("DESI_SPECTRO_DATA", "DESI_SPECTRO_REDUX", "SPECPROD"):
            os.environ.pop(k, None)
    r = subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "desinight", "step", "run",
                        "redshift", "--night", str(night), "--expids", str(expid), "--tile",
                        str(tile), "--cameras", "b0,r0,z0"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = fitsio.read(str(tmp_path / "redux" / "t" / "tiles" / str(tile) / str(night) /
                          f"redrock-0-{tile}-{night}.fits"), "REDSHIFTS")
    assert list(out["TARGETID"]) == [500, 501, 503, 504] and list(out["FIBER"]) == [0, 1, 3, 4]
    assert np.allclose(out["Z"][:3], [0.9, 1.3, 0.75], atol=0.002) and (out["ZWARN"][:3] == 0).all()
    assert (out["OII_FLUX"][:3] * np.sqrt(out["OII_FLUX_IVAR"][:3]) > 20).all()
    from desinight.steps.emline import QUALITY_CUT
    assert out["DELTACHI2"][3] <= 15 and out["ZWARN"][3] & QUALITY_CUT
    ranks = sorted((tmp_path / "redux" / "t" / "run" / "steps" / str(night)).glob("redshift-*"))
    assert [p.name for p in ranks] == [f"redshift-tile{tile}-rank0.json", f"redshift-tile{tile}-rank1.json"]


def test_galaxy_scan_ends_where_oii_leaves_the_reddest_camera():
    """Galaxy redshifts are scanned only while [OII] 3729.9 A is inside the data: with DESI's
    z camera (to 9824 A) up to z 1.634, never past redrock's own end (1.7) for a redder one."""
    cams = {"b": (np.linspace(3600, 5900, 50),), "z": (np.linspace(7500, 9824, 50),)}
    lo, hi, step = (float(v) for v in rrfit.galaxy_zscan(cams).split(","))
    assert (lo, step) == (-0.005, 3e-4)
    assert hi == pytest.approx(9824 / 3729.875 - 1, abs=1e-4) and 1.63 < hi < 1.64
    red = {"z": (np.linspace(7500, 11000, 50),)}
    assert float(rrfit.galaxy_zscan(red).split(",")[1]) == 1.7

