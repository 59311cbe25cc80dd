"""sky: a sky model from the sky fibres, subtracted from every fibre with its variance -> sframe.

After the fiberflat, every fibre sees nearly the same sky S(lambda), sampled at slightly
different wavelengths per fibre: together the sky fibres sample it densely, so a least-squares
cubic B-spline with knots about one row apart follows even the sharp sky lines, and is evaluated
at each fibre's own wavelengths (no resampling of the data).  The sky is not quite the same in
every fibre (its brightness varies over the focal plane, fibre throughputs drift from the
flat's): each sky fibre gets its own scale a_f (least squares of its data on S), the spline is
refitted to the scaled sky fibres, and the other fibres get a_f interpolated smoothly in fibre
number (a quadratic fitted to the sky fibres' scales): only sky fibres inform the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.interpolate import make_lsq_spline

from . import io
from .fiberflat import density

KNOTS_PER_ROW = 1.0
SCALE_DEG = 2        # the sky's drift over a spectrograph's fibres: smooth, a quadratic


def fibre_scales(d, div, model, sky_idx: np.ndarray) -> np.ndarray:
    """a_f for every fibre: sky fibres' own least-squares scales; the others from a quadratic in
    fibre number fitted to those (weighted by their precision)."""
    nfib = d.shape[0]
    m = model[sky_idx]
    num = np.sum(div[sky_idx] * d[sky_idx] * m, axis=1)
    den = np.sum(div[sky_idx] * m * m, axis=1)
    own = np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)
    deg = min(SCALE_DEG, sky_idx.size - 1)
    c = np.polyfit(sky_idx, own, deg, w=np.sqrt(np.maximum(den, 0)))
    a = np.clip(np.polyval(c, np.arange(nfib)), 0.5, 1.5)
    a[sky_idx] = own
    return a


def fit_sky(wave: np.ndarray, d: np.ndarray, div: np.ndarray):
    """B-spline S(lambda) from the sky fibres' samples (wave, d, div all (nsky, ny))."""
    w, v, iv = wave.ravel(), d.ravel(), div.ravel()
    keep = iv > 0
    for _ in range(2):                 # second pass drops >5 sigma outliers (cosmic residuals)
        o = np.argsort(w[keep])
        x, y, wt = w[keep][o], v[keep][o], np.sqrt(iv[keep][o])
        step = np.median(np.diff(wave[0])) / KNOTS_PER_ROW
        inner = np.arange(x[0] + 2 * step, x[-1] - 2 * step, step)
        t = np.r_[[x[0]] * 4, inner, [x[-1]] * 4]
        spl = make_lsq_spline(x, y, t, k=3, w=wt)
        res = (v - spl(w)) * np.sqrt(iv)
        keep = (iv > 0) & (np.abs(res) < 5)
    return spl


def subtract_sky(frame: Path, fiberflat: Path, skyfibers: np.ndarray, cam: str, out: Path) -> Path:
    flux, hdr = io.read_hdu(frame, "FLUX")
    ivar = io.read_hdu(frame, "IVAR")[0]
    wave = io.read_hdu(frame, "WAVELENGTH")[0]
    ff = io.read_hdu(fiberflat, "FIBERFLAT")[0].astype(float)
    ffivar = io.read_hdu(fiberflat, "IVAR")[0].astype(float)
    d, div = density(flux.astype(float), ivar.astype(float), wave)
    d = d / ff
    # the flat's own noise matters on bright sky lines: var(d/ff) = var(d)/ff^2 + d^2 var(ff)/ff^2
    var = 1.0 / np.maximum(div * ff**2, 1e-30) + d**2 / np.maximum(ffivar * ff**2, 1e-30)
    div = np.where((div > 0) & (ffivar > 0), 1.0 / var, 0.0)
    sky_idx = np.flatnonzero(skyfibers)
    if sky_idx.size < 3:
        raise ValueError(f"{cam}: only {sky_idx.size} sky fibres")
    spl = fit_sky(wave[sky_idx], d[sky_idx], div[sky_idx])
    a = fibre_scales(d, div, spl(wave), sky_idx)
    a_s = a[sky_idx][:, None]
    spl = fit_sky(wave[sky_idx], d[sky_idx] / a_s, div[sky_idx] * a_s**2)
    a = fibre_scales(d, div, spl(wave), sky_idx)
    model = a[:, None] * spl(wave)
    # variance of the model ~ one sky fibre's variance / number of sky fibres at that wavelength
    grid = wave[sky_idx[0]]
    vsum = np.sum([np.interp(grid, wave[i], div[i]) for i in sky_idx], axis=0)
    var_model = np.array([np.interp(w, grid, 1 / np.maximum(vsum, 1e-30)) for w in wave]) * \
        a[:, None] ** 2
    sflux = d - model
    # outside the sky fibres' common coverage the spline extrapolates: no valid model there
    inside = (wave > spl.t[4]) & (wave < spl.t[-5])
    sivar = np.where((div > 0) & inside, 1.0 / (1.0 / np.maximum(div, 1e-30) + var_model), 0.0)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME")
             if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/Angstrom"},
              {"name": "NSKYFIB", "value": int(sky_idx.size)},
              {"name": "SKYSCRMS", "value": float(np.std(a[sky_idx])), "comment": "rms of sky fibres' scales"}]
    cards += io.provenance("sky", [frame, fiberflat])
    return io.write_fits(out, [("FLUX", sflux.astype(np.float32), cards),
                               ("IVAR", sivar.astype(np.float32), None),
                               ("MASK", (sivar == 0).astype(np.int16), None),
                               ("WAVELENGTH", wave, None),
                               ("SKY", model.astype(np.float32), None),
                               ("LSFSIGMA", io.read_hdu(frame, "LSFSIGMA")[0], None)])
