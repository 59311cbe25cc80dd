"""[OII] at the fitted redshift and DESI's per-class quality cuts in ZWARN (steps/emline.py).

Synthetic spectra only: a doublet of known flux on a sloped continuum with Gaussian noise.
"""

from __future__ import annotations

import numpy as np

from desinight.steps.emline import OII, QUALITY_CUT, class_cut, flag_quality, oii_flux


def _cams(rng, ntarg, z, total, width_kms=60.0, sigma=0.3):
    """b/r/z cameras of ntarg targets, each an [OII] doublet of total flux ``total`` at z."""
    cams = {}
    for arm, (lo, hi) in {"b": (3600, 5900), "r": (5700, 7700), "z": (7500, 9800)}.items():
        w = np.linspace(lo, hi, 1000)
        lsf = np.full((ntarg, w.size), 1.8)
        f = np.tile(0.4 + 0.2 * (w - lo) / (hi - lo), (ntarg, 1))
        for t in range(ntarg):
            for lam, share in zip(OII, (0.42, 0.58)):
                c = lam * (1 + z[t])
                s = np.hypot(1.8, width_kms / 299792.458 * c)
                f[t] += total * share * np.exp(-0.5 * ((w - c) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
        f += rng.normal(0, sigma, f.shape)
        cams[arm] = (w, f, np.full(f.shape, 1 / sigma**2), lsf)
    return cams


def test_oii_flux_is_unbiased_and_its_ivar_is_near_its_scatter():
    """Doublets at z 0.7-1.55 (b to z camera), 300 noise draws: at S/N ~17 the mean flux is
    within 2% and the pulls (flux - truth) * sqrt(ivar) have a width of 1-1.2 (the free line
    width adds a little scatter that the fixed-width covariance leaves out); at S/N ~5 choosing
    the width on the noise lifts the flux, by under 10% (0.3 sigma)."""
    for total, bias in ((30.0, 0.02), (8.0, 0.10)):
        rng = np.random.default_rng(5)
        z = rng.uniform(0.7, 1.55, 300)
        fl, iv = oii_flux(_cams(rng, 300, z, total), z)
        assert np.all(iv > 0)
        assert 0 <= fl.mean() / total - 1 < bias, (total, fl.mean())
        pull = (fl - total) * np.sqrt(iv)
        assert 0.95 < pull.std() < 1.2, (total, pull.std())


def test_no_line_gives_a_small_snr_and_out_of_range_gives_zero():
    rng = np.random.default_rng(6)
    z = np.full(200, 1.1)
    fl, iv = oii_flux(_cams(rng, 200, z, 0.0), z)
    snr = fl * np.sqrt(iv)
    assert 0.85 < snr.std() < 1.15 and np.mean(np.abs(snr) > 4) < 0.01
    # [OII] of a z = 2.5 target lies past the reddest camera; of z = -0.5 before the bluest
    fl, iv = oii_flux(_cams(rng, 2, np.array([1.0, 1.0]), 5.0), np.array([2.5, -0.5]))
    assert np.all(fl == 0) and np.all(iv == 0)


def test_class_cut_follows_desis_published_selections():
    cls = np.array(["BGS", "BGS", "LRG", "LRG", "ELG", "ELG", "ELG", "QSO", "STAR", "STD"])
    dchi2 = np.array([41.0, 39.0, 16.0, 14.0, 100.0, 100.0, 100.0, 1.0, 1.0, 1.0])
    # ELG: log10(S/N) > 0.9 - 0.2 log10(DELTACHI2): at DELTACHI2 100 the S/N must beat 3.16
    snr = np.array([0, 0, 0, 0, 3.3, 3.0, 8.0, 0, 0, 0])
    got = class_cut(cls, dchi2, snr, np.ones(cls.size))
    # classes without a published cut beyond ZWARN pass whatever their DELTACHI2
    assert got.tolist() == [True, False, True, False, True, False, True, True, True, True]
    # a negative or unmeasured [OII] never passes
    assert not class_cut(np.array(["ELG"]), [1e4], [-5.0], [1.0])[0]
    assert not class_cut(np.array(["ELG"]), [1e4], [0.0], [0.0])[0]


def test_flag_quality_sets_the_afterburner_bit_and_keeps_redrocks():
    """ZWARN gains QUALITY_CUT (bit 16, a bit redrock reserves for afterburners) exactly where
    the class cut fails; redrock's own bits stay, so ZWARN & 0xFFFF is still redrock's."""
    assert QUALITY_CUT == 1 << 16
    cls = np.array(["ELG", "ELG", "LRG", "LRG", "QSO", ""])
    zwarn = np.array([0, 4, 0, 32, 4, 0])
    dchi2 = np.array([100.0, 100.0, 10.0, 10.0, 1.0, 1.0])
    snr = np.array([1.0, 8.0, 0, 0, 0, 0])
    out = flag_quality(cls, zwarn, dchi2, snr, np.ones(cls.size))
    assert out.tolist() == [QUALITY_CUT, 4, QUALITY_CUT, 32 | QUALITY_CUT, 4, 0]
    assert np.array_equal(out & 0xFFFF, zwarn)
