"""Issue 17's science fixes, fast: vacuum wavelengths, coadd cosmic rejection.

- The arc solution is labelled in vacuum (DESI's templates are vacuum; lamp lists are air).
- The coadd rejects a cosmic ray that preproc left in one exposure, and nothing from noise.
(The simulator's galaxy continua are tested in tests/test_sps.py.)
"""

from __future__ import annotations

import numpy as np

from desinight import desimodel
from desinight.steps.redshift import cosmic_outliers


def test_air_to_vacuum_matches_the_standard_conversion():
    # H-alpha, [OIII] 5007, [OII] 3726 (air -> vacuum, Morton 2000 / NIST)
    air = np.array([6562.80, 5006.84, 3726.03])
    np.testing.assert_allclose(desimodel.air_to_vacuum(air), [6564.61, 5008.24, 3727.09], atol=0.02)
    w = np.linspace(3500, 10000, 50)
    np.testing.assert_allclose(desimodel.vacuum_to_air(desimodel.air_to_vacuum(w)), w, atol=1e-6)


def test_psf_labels_the_arc_solution_in_vacuum():
    """steps/psf.py fits the lamp lines at their vacuum wavelengths (source check, the full arc
    fit is covered by tests/test_steps.py against the simulator's true solution)."""
    import inspect

    from desinight.steps import psf
    assert "air_to_vacuum(I.arc_lines(" in inspect.getsource(psf)


def test_coadd_rejects_a_cosmic_and_nothing_else():
    rng = np.random.default_rng(4)
    fl = rng.normal(size=(3, 50, 1000))
    iv = np.ones_like(fl)
    fl[1, 7, 300:302] += [40.0, 12.0]          # a cosmic ray: a spike and its wing
    bad = cosmic_outliers(fl, iv)
    assert bad[1, 7, 300] and bad[1, 7, 301]
    assert bad.sum() == 2                       # no Gaussian pixel of 150000 is rejected
    two = cosmic_outliers(fl[:2], iv[:2])        # two exposures: the one above goes
    assert two[1, 7, 300] and not two[0, 7, 300]
    assert not cosmic_outliers(fl[:1], iv[:1]).any()


def test_bias_noise_factor_is_the_variance_of_the_nightly_median():
    """The nightly bias is the median of the night's zeros: its noise variance, in units of
    one zero's, is 1 for one zero, 1/2 for two (their mean), near pi/(2N) for more (pi/(2N)
    itself is 17% high at N = 3)."""
    from desinight.steps.preproc import bias_noise_factor

    rng = np.random.default_rng(9)
    for n in (1, 2, 3, 4, 5, 10, 25):
        med = np.median(rng.normal(size=(n, 200_000)), axis=0)
        assert abs(np.var(med) / bias_noise_factor(n) - 1) < 0.02, n


def test_overscan_read_noise_is_not_quantised_by_integer_adu():
    """Raw pixels are integers and the read noise is 1.5-3.5 ADU: the MAD of an overscan takes
    few values, so 1.4826 x MAD was 20-40% off per amplifier (extracted pulls 0.8 in one half
    of a camera, 1.5 in the other). The clipped r.m.s. is within 2% of the noise the data
    pixels carry (read noise and rounding), and the level within 0.05 ADU, for any noise; a
    hot overscan pixel does not move either."""
    from desinight.steps.preproc import overscan_level_noise

    rng = np.random.default_rng(3)
    mad_err = []
    for sigma in np.linspace(1.2, 3.6, 13):
        level = 1500.3 + sigma
        over = np.rint(level + sigma * rng.standard_normal((2000, 32)))
        over[5, 7] = 30000                                   # one hot pixel
        lv, rn = overscan_level_noise(over)
        truth = np.sqrt(sigma**2 + 1 / 12)                   # read noise and rounding
        assert abs(rn / truth - 1) < 0.02, (sigma, rn, truth)
        assert abs(lv - level) < 0.05, (sigma, lv, level)
        mad = 1.4826 * np.median(np.abs(over - np.median(over)))
        mad_err.append(abs(mad / truth - 1))
    assert max(mad_err) > 0.15            # what it replaces: the quantised MAD is this far off


def test_coadd_variance_counts_shared_noise_once():
    """Three exposures with a noise part they share (one bias subtracted from all) and their own:
    the coadd's variance from calvar.coadd_variance matches the scatter of many draws; the
    independent formula 1/sum(ivar) claims too little; different CALVARIDs share nothing."""
    from desinight.steps import calvar

    rng = np.random.default_rng(5)
    own = np.array([4.0, 6.0, 9.0])[:, None]          # each exposure's own variance
    shared = np.array([3.0, 3.0, 3.0])[:, None]       # the bias's noise, the same draw in all
    iv = 1.0 / (own + shared)
    ndraw = 200_000
    common = rng.normal(0, np.sqrt(3.0), ndraw)
    draws = rng.normal(0, np.sqrt(own), (3, ndraw)) + common
    mean = (draws * iv).sum(0) / iv.sum(0)
    var = calvar.coadd_variance(iv, shared, ["bias-a"] * 3)[0]
    assert abs(var / np.var(mean) - 1) < 0.02
    assert 1.0 / iv.sum() < 0.8 * var                 # the old ivar sum: ~1.5x too little
    apart = calvar.coadd_variance(iv, shared, ["bias-a", "bias-b", ""])[0]
    assert np.isclose(apart, 1.0 / iv.sum())
    two = calvar.coadd_variance(iv, shared, ["bias-a", "bias-a", "bias-b"])[0]
    assert 1.0 / iv.sum() < two < var
