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
        w = _grid(lo, hi)
        sig = np.full((2, w.size), 2.0)                     # LSF sigma, Angstrom
        f = np.zeros((2, w.size))
        f[0] = 0.5 + 0.1 * (w / 6000.0)
        for lam, amp in ((3726.03, 10.0), (3728.82, 13.0)):
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
    assert abs(elg["Z"] - Z_ELG) < 0.002 and elg["ZWARN"] == 0 and elg["DELTACHI2"] > 25
    assert elg["SPECTYPE"] == "GALAXY" and 0 < elg["ZERR"] < 0.001
    assert elg["NPIXELS"] == 1200
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
