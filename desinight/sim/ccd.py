"""Render one camera: fibre spectra -> electrons on the CCD -> raw ADU with amplifiers.

Spectra become electrons per CCD row per fibre (continuum x dlambda/dy plus lines as
pixel-integrated Gaussians along y), then are spread across columns with the
pixel-integrated Gaussian cross-section of each trace. Then: shot noise, dark current,
cosmic rays, and per amplifier gain, bias level (+ a fixed bias pattern that nightly zeros
measure), read noise, prescan/overscan, saturation, int16.

The dark current is uniform unless a night is simulated with darks: then every exposure of it
carries the camera's defects (``dark_current``: hot pixels and hot column segments, fixed per
camera and seed, so stable across nights), which a darknight measures.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import erf

from . import instrument as I

SQRT2 = np.sqrt(2.0)
BROAD_ROWS = 3.0


def amp_params(camera: str) -> dict[str, dict[str, float]]:
    """Gain (e/ADU), read noise (e), bias level (ADU) of each amplifier: fixed per camera."""
    rng = np.random.default_rng([ord(camera[0]), int(camera[1:]), 99])
    return {a: {"GAIN": round(float(rng.uniform(1.0, 1.7)), 3),
                "RDNOISE": round(float(rng.uniform(2.5, 3.5)), 3),
                "BIAS": float(rng.uniform(1000, 2200))} for a in I.AMPS}


def bias_pattern(p: I.Preset, camera: str) -> np.ndarray:
    """Fixed 2-D bias structure (ADU, trimmed-image shape): a ramp near each amplifier's
    prescan and a gentle row gradient; overscan subtraction alone cannot remove it."""
    y = np.arange(p.ny)[:, None]
    x = np.arange(p.nx)[None, :]
    hx = p.nx // 2
    dist = np.where(x < hx, x, p.nx - 1 - x)
    k = 1 + int(camera[1:]) % 3
    return (3.0 * k * np.exp(-dist / 25.0) + 1.5 * y / p.ny).astype(np.float32)


#: fraction of pixels that are hot, and their dark current range (e-/s): 0.05 e/s is 50 e in a
#: 1000 s science exposure, well above the read noise, so a measured dark visibly helps
HOT_PIXEL_FRACTION = 2e-3
HOT_PIXEL_E_PER_S = (0.05, 0.5)
#: hot column segments per camera (a charge trap leaking up the column) and their dark current
HOT_COLUMNS = 2
HOT_COLUMN_E_PER_S = (0.02, 0.08)


@lru_cache(maxsize=64)
def dark_current(p: I.Preset, camera: str, seed: int) -> np.ndarray:
    """Dark current (e-/s per pixel, trimmed-image shape) of a camera with defects: the
    uniform design value plus hot pixels and hot column segments, fixed per camera and seed
    (the same every night). Read-only: it is shared between calls."""
    rng = np.random.default_rng([seed, ord(camera[0]), int(camera[1:]), 4242])
    d = np.full((p.ny, p.nx), I.DARK_E_PER_S, np.float32)
    n = int(HOT_PIXEL_FRACTION * p.ny * p.nx)
    idx = rng.choice(p.ny * p.nx, n, replace=False)
    d.flat[idx] += rng.uniform(*HOT_PIXEL_E_PER_S, n).astype(np.float32)
    for _ in range(HOT_COLUMNS):
        col, y0 = int(rng.integers(p.nx)), int(rng.integers(p.ny // 2))
        d[y0:, col] += np.float32(rng.uniform(*HOT_COLUMN_E_PER_S))
    d.setflags(write=False)
    return d


def line_rows(wave_rows: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Fractional row of wavelength lam for each fibre (wave_rows: (nfib, ny) increasing)."""
    ny = wave_rows.shape[1]
    return np.array([np.interp(lam, w, np.arange(ny), left=-1e3, right=1e3) for w in wave_rows])


def spectra_to_rows(wave_rows: np.ndarray, cont_e: np.ndarray, line_w: np.ndarray,
                    line_e: np.ndarray, line_sig: np.ndarray,
                    lsf: np.ndarray | None = None) -> np.ndarray:
    """Electrons per row per fibre.

    cont_e: (nfib, ny) continuum electrons per A at each row; line_*: (nfib, nline) observed
    wavelength, electrons and intrinsic sigma (A) of each line; lsf: line-spread sigma (rows)
    per fibre and row (default the constant PSF_SIGMA_Y).
    """
    nfib, ny = wave_rows.shape
    dldy = np.gradient(wave_rows, axis=1)
    out = cont_e * dldy
    # the continuum goes through the same line-spread function as the lines (with the row's
    # width): galaxies' stellar absorption lines live in their continuum (desinight.sim.sps);
    # one sigma per fibre, its median, as the LSF varies slowly along the trace
    lsf_f = np.full(nfib, I.PSF_SIGMA_Y) if lsf is None else np.median(lsf, axis=1)
    for f in range(nfib):
        out[f] = gaussian_filter1d(out[f], np.sqrt(lsf_f[f] ** 2 + 1.0 / 12.0), mode="nearest")
    if line_w.size == 0:
        return out
    yl = np.array([np.interp(line_w[f], wave_rows[f], np.arange(ny), left=-1e3, right=1e3)
                   for f in range(nfib)])
    dl = np.take_along_axis(dldy, np.clip(yl.round().astype(int), 0, ny - 1), axis=1)
    ir = np.clip(yl.round().astype(int), 0, ny - 1)
    lsf_at = I.PSF_SIGMA_Y if lsf is None else np.take_along_axis(lsf, ir, axis=1)
    sig = np.sqrt(lsf_at**2 + (line_sig / dl) ** 2)
    # Broad lines (quasars, sigma > 3 rows) are smooth on the row scale: sample their density
    # at row centres. Only narrow lines need pixel integration, in a window sized for them;
    # sizing one window for all lines made the full preset 20x slower.
    broad = sig > BROAD_ROWS
    yrow = np.arange(ny, dtype=float)
    for k in np.flatnonzero(broad.any(axis=0)):
        fs = np.flatnonzero(broad[:, k])
        g = np.exp(-0.5 * ((yrow[None, :] - yl[fs, k, None]) / sig[fs, k, None]) ** 2)
        out[fs] += g * (line_e[fs, k] / (np.sqrt(2 * np.pi) * sig[fs, k]))[:, None]
    line_e = np.where(broad, 0.0, line_e)
    sig = np.where(broad, 1.0, sig)
    half = int(np.ceil(6 * sig.max())) + 1
    off = np.arange(-half, half + 1)
    rows = yl.round().astype(int)[..., None] + off                        # (nfib, nline, W)
    a = (rows - 0.5 - yl[..., None]) / (SQRT2 * sig[..., None])
    b = (rows + 0.5 - yl[..., None]) / (SQRT2 * sig[..., None])
    val = 0.5 * (erf(b) - erf(a)) * line_e[..., None]
    ok = (rows >= 0) & (rows < ny) & (line_e[..., None] != 0)
    fib = np.broadcast_to(np.arange(nfib)[:, None, None], rows.shape)
    flat = np.bincount((fib[ok] * ny + rows[ok]), weights=val[ok], minlength=nfib * ny)
    return out + flat.reshape(nfib, ny)


def spread(p: I.Preset, xc: np.ndarray, rows_e: np.ndarray) -> np.ndarray:
    """(ny, nx) electron image from per-row fibre fluxes and trace centres xc (nfib, ny)."""
    nfib, ny = rows_e.shape
    sig = I.psf_sigma_x(p, xc)
    half = int(np.ceil(4 * sig.max())) + 1
    off = np.arange(-half, half + 1, dtype=np.float32)
    img = np.zeros(ny * p.nx)
    yy = np.arange(ny)[:, None] * p.nx
    step = 50
    for f0 in range(0, nfib, step):
        xcf = xc[f0:f0 + step, :, None].astype(np.float32)
        cols = np.round(xcf) + off                                         # (n, ny, W)
        s = (SQRT2 * sig[f0:f0 + step, :, None]).astype(np.float32)
        w = 0.5 * (erf((cols + 0.5 - xcf) / s) - erf((cols - 0.5 - xcf) / s))
        ci = cols.astype(np.int64)
        ok = (ci >= 0) & (ci < p.nx)
        idx = (yy[None] + ci)[ok]
        img += np.bincount(idx, weights=(w * rows_e[f0:f0 + step, :, None])[ok],
                           minlength=ny * p.nx)
    return img.reshape(ny, p.nx)


def cosmics(p: I.Preset, exptime: float, rng: np.random.Generator) -> np.ndarray:
    """Electron image of cosmic-ray hits: short straight tracks, a few pixels long."""
    img = np.zeros((p.ny, p.nx), np.float32)
    area = p.ny * p.nx / (4096.0 * 4096.0)
    n = rng.poisson(3.0 * exptime * area)
    if n == 0:
        return img
    y0 = rng.uniform(0, p.ny, n)
    x0 = rng.uniform(0, p.nx, n)
    length = rng.integers(1, 7, n)
    ang = rng.uniform(0, np.pi, n)
    for k in range(n):
        t = np.arange(length[k])
        ys = np.clip((y0[k] + t * np.sin(ang[k])).astype(int), 0, p.ny - 1)
        xs = np.clip((x0[k] + t * np.cos(ang[k])).astype(int), 0, p.nx - 1)
        img[ys, xs] += rng.uniform(800, 8000, length[k]).astype(np.float32)
    return img


def raw_image(p: I.Preset, camera: str, electrons: np.ndarray, exptime: float,
              rng: np.random.Generator, dark: np.ndarray | None = None) -> np.ndarray:
    """Noisy raw int16 image with prescan/overscan per amplifier from an electron image;
    dark: the dark current per pixel (e-/s; None: the uniform design value)."""
    e = electrons.astype(np.float32) + (np.float32(I.DARK_E_PER_S * exptime) if dark is None
                                        else dark * np.float32(exptime))
    e += np.sqrt(np.maximum(e, 0)) * rng.standard_normal(e.shape, dtype=np.float32)
    if exptime > 0:
        e += cosmics(p, exptime, rng)
    pattern = bias_pattern(p, camera)
    raw = np.empty(p.raw_shape, np.float32)
    for amp, reg in I.amp_layout(p).items():
        par = amp_params(camera)[amp]
        y0, y1, x0, x1 = reg["DATA"]
        cy0, cy1, cx0, cx1 = reg["CCD"]
        raw[y0:y1, x0:x1] = e[cy0:cy1, cx0:cx1] / par["GAIN"] + pattern[cy0:cy1, cx0:cx1]
        for key in ("BIAS", "PRE"):
            a0, a1, b0, b1 = reg[key]
            raw[a0:a1, b0:b1] = 0.0
        ya, yb = reg["DATA"][:2]
        xa = min(reg["DATA"][2], reg["BIAS"][2], reg["PRE"][2])
        xb = max(reg["DATA"][3], reg["BIAS"][3], reg["PRE"][3])
        block = raw[ya:yb, xa:xb]
        block += par["BIAS"] + (par["RDNOISE"] / par["GAIN"]) * \
            rng.standard_normal(block.shape, dtype=np.float32)
    np.minimum(raw, I.SATURATION_ADU, out=raw)
    np.maximum(raw, 0, out=raw)
    return np.rint(raw).astype(np.int16)
