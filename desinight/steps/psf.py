"""psf: trace centres x(fibre, y), cross-section widths and wavelength solutions from an arc.

Start from the design model (desinight.desimodel), find the camera's global
trace shift by correlation, centroid every fibre in every row that has light, fit a smooth
polynomial x(y) per fibre; then extract the arc with boxcars, centroid the known lamp lines and
fit wavelength(y) per fibre; last, the width of every arc line along the trace (the line-spread
function, LSF) from the curvature of its log-profile, fitted smoothly in y per fibre.  The PSF
file stores the evaluated X, WAVE (nfib, ny), the cross-section SIGMA (nfib,) and LSFSIGMA
(nfib, ny, rows, the pixel box removed), which extraction turns into resolution data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.polynomial import legendre as L

from desinight import desimodel as I

from . import io

HALF = 3          # centroid window half-width (columns); the neighbour fibre is >= 7 columns away
XDEG, WDEG = 3, 3   # the optics are smooth: cubic is enough and extrapolates safely


def _sample(img: np.ndarray, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Linear interpolation of img at (rows, x) for x of shape (nfib, len(rows))."""
    nx = img.shape[1]
    x = np.clip(x, 0, nx - 1.001)
    i = np.floor(x).astype(int)
    t = x - i
    r = rows[None, :]
    return img[r, i] * (1 - t) + img[r, i + 1] * t


def global_shift(img: np.ndarray, xguess: np.ndarray) -> float:
    rows = np.arange(0, img.shape[0], 4)
    shifts = np.arange(-4.0, 4.01, 0.1)
    score = [np.sum(_sample(img, xguess[:, rows] + s, rows)) for s in shifts]
    return float(shifts[int(np.argmax(score))])


def fit_traces(img: np.ndarray, ivar: np.ndarray, xguess: np.ndarray,
               niter: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(X (nfib, ny), SIGMA (nfib,)) from the light along each trace (arc or flat)."""
    ny, nx = img.shape
    y = np.arange(ny)
    u = 2 * y / (ny - 1) - 1
    x = xguess + global_shift(img, xguess)
    good_img = np.where(ivar > 0, img, 0.0)
    off = np.arange(-HALF, HALF + 1)
    sig = np.ones(x.shape[0])
    for _ in range(niter):
        cols = np.clip(np.round(x)[..., None].astype(int) + off, 0, nx - 1)   # (nfib, ny, W)
        w = np.clip(good_img[y[None, :, None], cols], 0, None)
        tot = w.sum(-1)
        cx = (w * cols).sum(-1) / np.maximum(tot, 1e-9)
        m2 = (w * (cols - cx[..., None]) ** 2).sum(-1) / np.maximum(tot, 1e-9)
        noise = np.sqrt(len(off) * np.median(1 / np.maximum(ivar[ivar > 0], 1e-12)))
        use = tot > 20 * noise                       # rows with real light in this fibre
        newx = np.empty_like(x)
        for f in range(x.shape[0]):
            k = use[f]
            if k.sum() < 3 * (XDEG + 1):
                raise ValueError(f"fibre {f}: too little light to trace ({k.sum()} rows)")
            c = L.legfit(u[k], cx[f, k], XDEG, w=np.sqrt(tot[f, k]))
            k &= np.abs(cx[f] - L.legval(u, c)) < 0.5        # drop cosmic-hit / blended rows
            c = L.legfit(u[k], cx[f, k], XDEG, w=np.sqrt(tot[f, k]))
            newx[f] = L.legval(u, c)
            sig[f] = np.sqrt(max(np.median(m2[f, k]) - 1 / 12.0, 0.25))
        x = newx
    return x, sig


def boxcar(img: np.ndarray, x: np.ndarray) -> np.ndarray:
    ny, nx = img.shape
    y = np.arange(ny)
    cols = np.clip(np.round(x)[..., None].astype(int) + np.arange(-HALF, HALF + 1), 0, nx - 1)
    return img[y[None, :, None], cols].sum(-1)


def fit_wavelength(spec: np.ndarray, wguess: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """WAVE (nfib, ny): centroid each known line near its design row, fit wave(y) per fibre."""
    nfib, ny = spec.shape
    y = np.arange(ny, dtype=float)
    u = 2 * y / (ny - 1) - 1
    med = np.median(spec, axis=0)
    # global row shift: the model comb of lines at the design rows vs the median arc spectrum
    yl0 = np.interp(lines, wguess[nfib // 2], y)
    shifts = np.arange(-6, 6.01, 0.1)
    comb = [np.interp(yl0 + s, y, med).sum() for s in shifts]
    dy = shifts[int(np.argmax(comb))]
    out = np.empty_like(wguess)
    for f in range(nfib):
        yl = np.interp(lines, wguess[f], y) + dy
        ok = (yl > 5) & (yl < ny - 6)
        cents, lams, wts = [], [], []
        for _ in range(2):
            cents, lams, wts = [], [], []
            for yk, lam in zip(yl[ok], lines[ok]):
                r = np.arange(int(round(yk)) - 3, int(round(yk)) + 4)
                s = np.clip(spec[f, r], 0, None)
                if s.sum() <= 0:
                    continue
                cents.append((s * r).sum() / s.sum())
                lams.append(lam)
                wts.append(np.sqrt(s.sum()))
            yl[ok] = np.interp(lines[ok], lams, cents) if len(lams) > 2 else yl[ok]
        if len(lams) < WDEG + 3:
            raise ValueError(f"fibre {f}: only {len(lams)} arc lines found")
        uc = 2 * np.array(cents) / (ny - 1) - 1
        c = L.legfit(uc, np.array(lams), WDEG, w=np.array(wts))
        out[f] = L.legval(u, c)
    return out


#: the LSF width varies smoothly over the CCD (focus: wider towards the edges and corners): a
#: 2-D Legendre surface in (fibre, row) of this degree in each, fitted to all the camera's arc
#: lines at once; per fibre alone a line in y missed the curvature and scattered by ~2.6%
LSFDEG = 2
PIXEL_VAR = 1.0 / 12.0   # a pixel box adds 1/12 row^2 to the measured variance


def line_widths(spec: np.ndarray, wave: np.ndarray, lines: np.ndarray):
    """Per fibre, (row, sigma in rows) of every clean arc line: the 3 pixels around the peak of
    a Gaussian have a log-parabola whose curvature is -1/sigma^2, wherever the centre falls."""
    nfib, ny = spec.shape
    y = np.arange(ny, dtype=float)
    out = []
    for f in range(nfib):
        yl = np.interp(lines, wave[f], y)
        rows, sigs = [], []
        for yk in yl[(yl > 4) & (yl < ny - 5)]:
            r = int(round(yk))
            seg = spec[f, r - 3:r + 4]
            j = int(np.argmax(seg)) + r - 3
            a, b, c = spec[f, j - 1], spec[f, j], spec[f, j + 1]
            if min(a, b, c) <= 0 or b < max(a, c):
                continue
            curv = np.log(a) + np.log(c) - 2 * np.log(b)
            if curv >= -1e-6:
                continue
            s2 = -1.0 / curv - PIXEL_VAR
            if 0.1 < s2 < 25:
                rows.append(j)
                sigs.append(np.sqrt(s2))
        out.append((np.array(rows, float), np.array(sigs)))
    return out


def fit_lsf(spec: np.ndarray, wave: np.ndarray, lines: np.ndarray, x: np.ndarray | None = None
            ) -> np.ndarray:
    """LSFSIGMA (nfib, ny), rows: a clipped 2-D Legendre fit (degree LSFDEG in the fibre's
    column x at the CCD centre and in the row) of every arc line's width; the camera's median
    width where there are too few lines for the surface."""
    nfib, ny = spec.shape
    xc = np.arange(nfib, dtype=float) if x is None else x[:, ny // 2]
    v = 2 * (xc - xc.min()) / max(np.ptp(xc), 1e-9) - 1 if nfib > 1 else np.zeros(nfib)
    u = 2 * np.arange(ny) / (ny - 1) - 1
    meas = line_widths(spec, wave, lines)
    fv = np.concatenate([np.full(r.size, v[f]) for f, (r, _) in enumerate(meas)])
    fu = np.concatenate([2 * r / (ny - 1) - 1 for r, _ in meas])
    fs = np.concatenate([s for _, s in meas])
    default = float(np.median(fs)) if fs.size else 1.0
    deg = (min(LSFDEG, nfib - 1), LSFDEG)
    if fs.size < 3 * (deg[0] + 1) * (deg[1] + 1):
        return np.full((nfib, ny), default)
    keep = np.ones(fs.size, bool)
    for _ in range(3):            # blends and cosmic-hit lines: clip at 3 sigma (MAD)
        A = L.legvander2d(fv[keep], fu[keep], deg)
        c = np.linalg.lstsq(A, fs[keep], rcond=None)[0]
        res = fs - L.legvander2d(fv, fu, deg) @ c
        keep = np.abs(res) < 3 * 1.4826 * np.median(np.abs(res[keep])) + 1e-3
    vv, uu = np.broadcast_arrays(v[:, None], u[None, :])
    out = L.legval2d(vv, uu, c.reshape(deg[0] + 1, deg[1] + 1))
    return np.clip(out, 0.3 * default, 3 * default)


def psf_from_arc(preproc_file: Path, cam: str, out: Path) -> Path:
    img, hdr = io.read_hdu(preproc_file, "IMAGE")
    ivar, _ = io.read_hdu(preproc_file, "IVAR")
    ny, nx = img.shape
    p = I.preset_for_shape(ny, nx)
    y = np.arange(ny)
    x, sig = fit_traces(img, ivar, I.nominal_trace(p, y))
    spec = boxcar(img, x)
    # the lamp list is catalogued in air; label the solution in vacuum, as DESI's templates are
    lines = I.air_to_vacuum(I.arc_lines(cam[0]))
    wave = fit_wavelength(spec, I.nominal_wave(p, cam[0], y), lines)
    lsf = fit_lsf(spec, wave, lines, x)
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NIGHT", "value": hdr.get("NIGHT", 0)},
             {"name": "PRESET", "value": p.name}] + io.provenance("psf", [preproc_file])
    return write_psf(out, x, wave, sig, cards, lsf)


def write_psf(out: Path, x, wave, sig, cards, lsf=None) -> Path:
    """lsf: LSF sigma (nfib, ny) in rows; None writes the design's 1 row (benchmarks)."""
    lsf = np.ones_like(wave) if lsf is None else lsf
    return io.write_fits(out, [("XTRACE", x.astype(np.float64), cards),
                               ("WAVELENGTH", wave.astype(np.float64), None),
                               ("SIGMA", np.asarray(sig, np.float64), None),
                               ("LSFSIGMA", np.asarray(lsf, np.float64), None)])


def read_psf(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (io.read_hdu(path, "XTRACE")[0], io.read_hdu(path, "WAVELENGTH")[0],
            io.read_hdu(path, "SIGMA")[0])


def read_lsf(path: Path) -> np.ndarray:
    """LSF sigma (nfib, ny) in rows."""
    return io.read_hdu(path, "LSFSIGMA")[0]


def psfnight(psf_files: list[Path], cam: str, out: Path) -> Path:
    """Nightly PSF: the median of the arcs' traces, wavelengths and widths."""
    parts = [read_psf(f) + (read_lsf(f),) for f in psf_files]
    if not parts:
        raise ValueError(f"no arc PSFs for {cam}")
    x, w, s, lsf = (np.median(np.array([q[i] for q in parts]), axis=0) for i in range(4))
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NARC", "value": len(parts)}]
    return write_psf(out, x, w, s, cards + io.provenance("psfnight", psf_files), lsf)
