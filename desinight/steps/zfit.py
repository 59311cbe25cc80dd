"""Redshift fitting: chi^2 of linear template bases over a redshift grid, vectorised.

Spectra arrive on a uniform ln(lambda) grid (the coadd's), so a redshift is a shift of the
rest-frame basis by an integer number of pixels. Every quantity of the linear least-squares
fit at every shift (b = B^T W d and M = B^T W B) is then a cross-correlation, computed for
all targets and all shifts at once with FFTs; the (ntarget, nshift) small systems are solved
in one batched call. The best shifts are refined with a parabola (sub-pixel z, ZERR from the
curvature). Bases (desinight.sim.templates): GALAXY (old + young populations + 4 nebular line
groups), QSO (2 power laws + broad lines), STAR (one template per Teff).

ZWARN bits follow redrock: 4 SMALL_DELTA_CHI2 (DELTACHI2 < 9), 32 Z_FITLIMIT (minimum at
the edge of the range), 512 NODATA.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from desinight.sim import templates as T

SMALL_DELTA_CHI2, Z_FITLIMIT, NODATA = 4, 32, 512
DELTACHI2_MIN = 9.0
DV_SAME = 0.0033            # |dz|/(1+z) below which two solutions are the same redshift
ZRANGES = {"GALAXY": (0.0, 1.7), "QSO": (0.05, 3.6), "STAR": (-0.002, 0.002)}
OUT_DTYPE = [("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"), ("SPECTYPE", "U6"),
             ("SUBTYPE", "U8"), ("CHI2", "f8"), ("DELTACHI2", "f8"), ("NPIXELS", "i8")]


def _bases(lnrest: np.ndarray, res_kms: float) -> list[tuple[str, str, np.ndarray]]:
    w = np.exp(lnrest)
    out = [("GALAXY", "", T.galaxy_basis(w, res_kms)), ("QSO", "", T.qso_basis(w, res_kms))]
    for teff in T.STAR_TEFF_GRID:
        out.append(("STAR", f"T{int(teff)}", T.star_basis(w, teff, res_kms)))
    return out


def _xcorr(x: np.ndarray, t: np.ndarray, nshift: int) -> np.ndarray:
    """c[..., k] = sum_i x[..., i] * t[i + k] for k = 0..nshift-1 (x: (..., n), t: (nt,))."""
    n = x.shape[-1]
    full = fftconvolve(x[..., ::-1], t[None, :] if x.ndim == 2 else t, mode="full", axes=-1)
    return full[..., n - 1:n - 1 + nshift]


def chi2_scan(flux: np.ndarray, ivar: np.ndarray, basis: np.ndarray, i0: int,
              s_lo: int, s_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """chi^2 (ntarget, nshift) for shifts s_lo..s_hi of ``basis`` (nb, nt) and the shifts.

    Observed pixel i sees rest pixel i + i0 - s. Offsets k = i0 - s must stay inside the basis.
    """
    nb, nt = basis.shape
    n = flux.shape[1]
    shifts = np.arange(s_lo, s_hi + 1)
    k_lo, k_hi = i0 - s_hi, i0 - s_lo
    if k_lo < 0 or k_hi + n > nt:
        raise ValueError("template grid too short for the redshift range")
    sub = basis[:, k_lo:k_hi + n]                       # offsets 0..nk-1 relative to k_lo
    nk = k_hi - k_lo + 1
    wd = ivar * flux
    b = np.stack([_xcorr(wd, sub[k], nk) for k in range(nb)], axis=-1)          # (nt, nk, nb)
    M = np.empty(b.shape + (nb,))
    for k in range(nb):
        for m in range(k, nb):
            M[..., k, m] = M[..., m, k] = _xcorr(ivar, sub[k] * sub[m], nk)
    diag = np.einsum("...kk->...k", M)
    ridge = 1e-9 * diag.max(axis=-1, keepdims=True) + 1e-30
    M[..., np.arange(nb), np.arange(nb)] += ridge
    coef = np.linalg.solve(M, b[..., None])[..., 0]
    chi2 = np.sum(wd * flux, axis=1)[:, None] - np.einsum("tsk,tsk->ts", b, coef)
    # index k counts offsets upwards, i.e. shifts downwards
    return chi2[:, ::-1], shifts


def _refine(c: np.ndarray, j: int) -> tuple[float, float]:
    """Sub-pixel minimum of a chi^2 curve around index j and its 1-sigma error (pixels)."""
    if j == 0 or j == len(c) - 1:
        return float(j), 1.0
    a = 0.5 * (c[j - 1] + c[j + 1]) - c[j]
    if a <= 0:
        return float(j), 1.0
    dj = 0.25 * (c[j - 1] - c[j + 1]) / a
    return j + float(np.clip(dj, -1, 1)), float(np.sqrt(1.0 / a))


def _local_minima(c: np.ndarray, nmax: int) -> list[int]:
    inner = np.flatnonzero((c[1:-1] <= c[:-2]) & (c[1:-1] <= c[2:])) + 1
    ends = [j for j in (0, len(c) - 1) if len(c) > 1 and
            c[j] <= c[1 if j == 0 else len(c) - 2]] if len(c) > 1 else [0]
    idx = np.array(list(inner) + ends, int)
    return list(idx[np.argsort(c[idx])][:nmax])


def fit_redshifts(lnwave: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
                  res_kms: float = 150.0) -> np.ndarray:
    """Best redshift per spectrum. lnwave: uniform ln(A) grid (n,); flux, ivar: (ntarget, n)."""
    flux = np.nan_to_num(np.atleast_2d(flux).astype(float))
    ivar = np.where(np.isfinite(ivar), np.maximum(np.atleast_2d(ivar), 0.0), 0.0)
    ntarg, n = flux.shape
    d = float(np.median(np.diff(lnwave)))
    zmax = max(z[1] for z in ZRANGES.values())
    zmin = min(z[0] for z in ZRANGES.values())
    pad = 8
    smax = int(np.ceil(np.log1p(zmax) / d)) + pad
    smin = int(np.floor(np.log1p(zmin) / d)) - pad
    # rest grid covering every shift: rest index j <-> ln = lnwave[0] + (j - i0) * d
    i0 = smax
    nt = n + smax - smin + 1
    lnrest = lnwave[0] + (np.arange(nt) - i0) * d
    cands: list[list[tuple]] = [[] for _ in range(ntarg)]
    for spectype, sub, basis in _bases(lnrest, res_kms):
        zlo, zhi = ZRANGES[spectype]
        s_lo, s_hi = int(np.floor(np.log1p(zlo) / d)), int(np.ceil(np.log1p(zhi) / d))
        chi2, shifts = chi2_scan(flux, ivar, basis, i0, s_lo, s_hi)
        for t in range(ntarg):
            c = chi2[t]
            for j in _local_minima(c, 3 if spectype != "STAR" else 1):
                jj, err = _refine(c, j)
                s = shifts[0] + jj * (shifts[1] - shifts[0] if len(shifts) > 1 else 1)
                z = float(np.expm1(s * d))
                edge = spectype != "STAR" and (j == 0 or j == len(c) - 1)
                cands[t].append((float(c[j]), z, float(err * d * (1 + z)), spectype, sub, edge))
    out = np.zeros(ntarg, OUT_DTYPE)
    npix = (ivar > 0).sum(axis=1)
    for t in range(ntarg):
        if npix[t] == 0 or not cands[t]:
            out[t] = (0.0, 0.0, NODATA, "GALAXY", "", 0.0, 0.0, 0)
            continue
        cs = sorted(cands[t])
        best = cs[0]
        others = [c for c in cs[1:] if abs(c[1] - best[1]) / (1 + best[1]) > DV_SAME]
        dchi2 = others[0][0] - best[0] if others else 1e9
        zwarn = (SMALL_DELTA_CHI2 if dchi2 < DELTACHI2_MIN else 0) | \
            (Z_FITLIMIT if best[5] else 0)
        out[t] = (best[1], best[2], zwarn, best[3], best[4], best[0], dchi2, npix[t])
    return out
