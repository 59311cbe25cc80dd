"""Sky subtraction through each fibre's line-spread function (issue 17), fast and synthetic.

Fibres see one sky through LSFs that differ by up to 25% (as the simulator's focus varies over
the CCD): the sky model convolved to each fibre's own LSF leaves only noise on held-out sky
fibres, bright lines included; told a single LSF for every fibre, the same model leaves the
bright lines' residuals far above the noise. The whole night is in tests/test_steps.py.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from desinight.steps.sky import sky_model

NFIB, NY = 30, 600
LINES = np.linspace(5030.0, 5970.0, 24)       # bright sky lines, electrons per line


def _observe(rng, lsf_rows):
    """Electron density per A of NFIB fibres (each its own wavelength phase and LSF) for a
    continuum of 50 e/A plus lines of 20000 e, with Gaussian noise of the Poisson variance."""
    step = 1000.0 / NY
    wave = 5000.0 + step * (np.arange(NY)[None, :] + rng.uniform(-0.5, 0.5, (NFIB, 1)))
    sig = lsf_rows * step                                      # A
    d = np.full((NFIB, NY), 50.0)
    for w0 in LINES:            # each row integrates the line over its own width
        lo, hi = wave - step / 2, wave + step / 2
        r2s = np.sqrt(2) * sig
        d += 2e4 * 0.5 * (erf((hi - w0) / r2s) - erf((lo - w0) / r2s)) / step
    var = d / step + 10.0
    return wave, sig, d + rng.normal(0, np.sqrt(var)), 1 / var


def _pulls(wave, lsf_told, d, div, sky):
    model, var_model, _, inside, div = sky_model(wave, lsf_told, d, div, sky)
    iv = np.where((div > 0) & inside, 1 / (1 / np.maximum(div, 1e-30) + var_model), 0.0)
    ok = iv[sky] > 0
    p = ((d - model)[sky] * np.sqrt(iv[sky]))[ok]
    bright = model[sky][ok] > np.quantile(model[sky][ok], 0.95)
    return float(np.std(p)), float(np.std(p[bright]))


def test_sky_model_follows_each_fibres_lsf_and_is_judged_on_held_out_fibres():
    rng = np.random.default_rng(17)
    lsf_rows = np.linspace(0.9, 1.15, NFIB)[:, None] * np.ones((1, NY))   # focus across the CCD
    wave, sig, d, div = _observe(rng, lsf_rows)
    sky = np.arange(0, NFIB, 3)
    every, bright = _pulls(wave, sig, d, div, sky)
    assert 0.93 < every < 1.07 and bright < 1.15, (every, bright)
    # told one (the median) width for every fibre, the model misses the lines' shapes
    _, bright_one = _pulls(wave, np.full_like(sig, np.median(sig)), d, div, sky)
    assert bright_one > 2.0, bright_one


def test_rows_no_sky_fibre_saw_get_no_model():
    """A dead amplifier over every sky fibre's rows 200-260: the other fibres get no sky model
    (and so IVAR 0) there, rather than the spline's unconstrained guess."""
    rng = np.random.default_rng(3)
    wave, sig, d, div = _observe(rng, np.ones((NFIB, NY)))
    sky = np.arange(0, NFIB, 3)
    div[sky, 200:260] = 0.0
    _, _, _, inside, _ = sky_model(wave, sig, d, div, sky)
    science = np.setdiff1d(np.arange(NFIB), sky)
    assert not inside[science][:, 205:255].any()
    assert inside[science][:, 20:180].all() and inside[science][:, 280:580].all()
