"""The vectorised template redshift fitter (steps/zfit.py) on noisy analytic spectra."""

from __future__ import annotations

import numpy as np

from desinight.sim import templates as T
from desinight.steps.zfit import NODATA, SMALL_DELTA_CHI2, chi2_scan, fit_redshifts

LN = np.arange(np.log(3569.0), np.log(9834.0), 3e-4)
W = np.exp(LN)


def _spectra(n: int, seed: int):
    rng = np.random.default_rng(seed)
    flux, truth = [], []
    for k in range(n):
        kind = ("ELG", "LRG", "QSO", "STAR")[k % 4]
        if kind == "QSO":
            z = rng.uniform(0.5, 3.0)
            s = T.normalise(T.qso(z, rng), 20.5)
        elif kind == "STAR":
            z = 0.0
            s = T.normalise(T.star(float(rng.choice(T.STAR_TEFF_GRID)), 0.0), 18.5)
        elif kind == "LRG":
            z = rng.uniform(0.3, 1.0)
            s = T.normalise(T.galaxy("LRG", z, rng), 20.0 + 1.5 * (z - 0.3))
        else:
            z = rng.uniform(0.6, 1.6)
            s = T.normalise(T.galaxy("ELG", z, rng), 21.5)
        flux.append(s.evaluate(W, 120.0))
        truth.append((kind, z))
    sig = 0.2
    flux = np.array(flux) + sig * rng.standard_normal((n, W.size))
    return flux, np.full(flux.shape, 1 / sig**2), truth


def test_recovers_redshifts_and_types():
    flux, ivar, truth = _spectra(24, 3)
    out = fit_redshifts(LN, flux, ivar, res_kms=120.0)
    want = {"ELG": "GALAXY", "LRG": "GALAXY", "QSO": "QSO", "STAR": "STAR"}
    for (kind, z), row in zip(truth, out):
        assert abs(row["Z"] - z) / (1 + z) < 0.0033, (kind, z, row)
        assert row["SPECTYPE"] == want[kind]
        assert row["ZERR"] > 0 and row["NPIXELS"] == W.size
        assert 0.7 < row["CHI2"] / row["NPIXELS"] < 1.6


def test_noise_only_is_flagged_or_nodata():
    rng = np.random.default_rng(1)
    flux = rng.standard_normal((3, W.size))
    ivar = np.ones_like(flux)
    ivar[2] = 0
    out = fit_redshifts(LN, flux, ivar)
    assert out["ZWARN"][2] & NODATA
    assert all(out["ZWARN"][:2] & SMALL_DELTA_CHI2)


def test_chi2_scan_matches_direct_least_squares():
    rng = np.random.default_rng(2)
    n, nb, nt = 200, 3, 400
    basis = rng.standard_normal((nb, nt))
    flux = rng.standard_normal((2, n))
    ivar = rng.uniform(0.5, 2.0, (2, n))
    i0 = 150
    chi2, shifts = chi2_scan(flux, ivar, basis, i0, -10, 20)
    for t in range(2):
        for j, s in enumerate(shifts[::7]):
            A = basis[:, np.arange(n) + i0 - s].T
            sw = np.sqrt(ivar[t])
            coef, *_ = np.linalg.lstsq(A * sw[:, None], flux[t] * sw, rcond=None)
            direct = np.sum(ivar[t] * (flux[t] - A @ coef) ** 2)
            assert np.isclose(chi2[t, j * 7], direct, rtol=1e-6)
