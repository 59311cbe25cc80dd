"""psf: trace centres x(fibre, y), cross-section widths and wavelength solutions from an arc.

Start from the design model (sim.instrument, the desimodel stand-in), find the camera's global
trace shift by correlation, centroid every fibre in every row that has light, fit a smooth
polynomial x(y) per fibre; then extract the arc with boxcars, centroid the known lamp lines and
fit wavelength(y) per fibre.  The PSF file stores the evaluated X, WAVE (nfib, ny) and SIGMA.
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


def psf_from_arc(preproc_file: Path, cam: str, out: Path) -> Path:
    img, hdr = io.read_hdu(preproc_file, "IMAGE")
    ivar, _ = io.read_hdu(preproc_file, "IVAR")
    ny, nx = img.shape
    p = I.preset_for_shape(ny, nx)
    y = np.arange(ny)
    x, sig = fit_traces(img, ivar, I.nominal_trace(p, y))
    wave = fit_wavelength(boxcar(img, x), I.nominal_wave(p, cam[0], y), I.arc_lines(cam[0]))
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NIGHT", "value": hdr.get("NIGHT", 0)},
             {"name": "PRESET", "value": p.name}] + io.provenance("psf", [preproc_file])
    return write_psf(out, x, wave, sig, cards)


def write_psf(out: Path, x, wave, sig, cards) -> Path:
    return io.write_fits(out, [("XTRACE", x.astype(np.float64), cards),
                               ("WAVELENGTH", wave.astype(np.float64), None),
                               ("SIGMA", np.asarray(sig, np.float64), None)])


def read_psf(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (io.read_hdu(path, "XTRACE")[0], io.read_hdu(path, "WAVELENGTH")[0],
            io.read_hdu(path, "SIGMA")[0])


def psfnight(psf_files: list[Path], cam: str, out: Path) -> Path:
    """Nightly PSF: the median of the arcs' traces, wavelengths and widths."""
    parts = [read_psf(f) for f in psf_files]
    if not parts:
        raise ValueError(f"no arc PSFs for {cam}")
    x, w, s = (np.median(np.array([q[i] for q in parts]), axis=0) for i in range(3))
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NARC", "value": len(parts)}]
    return write_psf(out, x, w, s, cards + io.provenance("psfnight", psf_files))
