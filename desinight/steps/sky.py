"""sky: a sky model from the sky fibres, subtracted from every fibre with its variance -> sframe.

After the fiberflat, every fibre sees the same sky S(lambda) (the line-spread is the same in all
fibres), sampled at slightly different wavelengths per fibre: together the sky fibres sample it
densely, so a least-squares cubic B-spline with knots about one row apart follows even the sharp
sky lines, and is evaluated at each fibre's own wavelengths (no resampling of the data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.interpolate import make_lsq_spline

from . import io
from .fiberflat import density

KNOTS_PER_ROW = 1.0


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
    model = spl(wave)
    # variance of the model ~ one sky fibre's variance / number of sky fibres at that wavelength
    grid = wave[sky_idx[0]]
    vsum = np.sum([np.interp(grid, wave[i], div[i]) for i in sky_idx], axis=0)
    var_model = np.array([np.interp(w, grid, 1 / np.maximum(vsum, 1e-30)) for w in wave])
    sflux = d - model
    # outside the sky fibres' common coverage the spline extrapolates: no valid model there
    inside = (wave > spl.t[4]) & (wave < spl.t[-5])
    sivar = np.where((div > 0) & inside, 1.0 / (1.0 / np.maximum(div, 1e-30) + var_model), 0.0)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME")
             if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/Angstrom"},
              {"name": "NSKYFIB", "value": int(sky_idx.size)}]
    cards += io.provenance("sky", [frame, fiberflat])
    return io.write_fits(out, [("FLUX", sflux.astype(np.float32), cards),
                               ("IVAR", sivar.astype(np.float32), None),
                               ("MASK", (sivar == 0).astype(np.int16), None),
                               ("WAVELENGTH", wave, None),
                               ("SKY", model.astype(np.float32), None)])
