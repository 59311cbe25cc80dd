"""sky: a sky model from the sky fibres, subtracted from every fibre with its variance -> sframe.

After the fiberflat every fibre sees nearly the same sky S(lambda), but through its own
line-spread function (LSF): the spectrograph's focus varies over the CCD, so a sky line is up
to ~15% wider in one fibre than in another, and a model fitted to the average fibre leaves
+- residuals on every bright line of the others.  So S is the sky *before* the spectrograph: a
least-squares cubic B-spline (knots one row apart) whose every sample is the spline convolved
with that fibre's measured LSF (Gaussian of LSFSIGMA, Angstrom, from the arcs) and averaged over
its row, as extraction sees it.  The fibres sample S at slightly different wavelengths, so
together they follow even the sharp lines.

The sky's brightness differs a little between fibres (over the focal plane, throughput drift
since the flat): each sky fibre gets its own scale a_f (least squares of its data on its model),
S is refitted to the scaled sky fibres, and the other fibres get a_f from a quadratic in fibre
number fitted to the sky fibres' scales: only sky fibres inform the model.

A sky fibre's own residual would be flattered by a model fitted to itself (each carries ~1/nsky
of the spline's weight), so sky fibres are predicted as a science fibre is: the sky fibres are
split into NFOLD groups and each group is subtracted with the model of the others.  Their
residuals and pulls then measure the model's real error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import BSpline
from scipy.linalg import solveh_banded
from scipy.special import erf

from . import io
from .fiberflat import density

KNOTS_PER_ROW = 1.0
SCALE_DEG = 2        # the sky's drift over a spectrograph's fibres: smooth, a quadratic
NFOLD = 5            # sky fibres predicted by the model of the other 4/5 of them
NQUAD = 25           # quadrature points of the LSF x row kernel
KERNEL_HALF = 4.0    # ... over +- this many kernel sigmas
RIDGE = 1e-8         # relative ridge: keeps coefficients the data cannot see (edges) at 0
CLIP = 5.0           # sigma: cosmic-ray residuals left by preproc and extraction


class SkyBasis:
    """Cubic B-spline knots over a wavelength range, and each fibre's design matrix: the
    B-splines convolved with the fibre's LSF and averaged over each row."""

    def __init__(self, lo: float, hi: float, step: float):
        inner = np.arange(lo + step, hi - step / 2, step)
        self.t = np.r_[[lo] * 4, inner, [hi] * 4]
        self.n = self.t.size - 4
        self.lo, self.hi = lo, hi

    def design(self, wave: np.ndarray, lsf: np.ndarray) -> sp.csr_matrix:
        """(ny, n): row i of a fibre = integral of K_i(delta) B(wave_i - delta), K_i = Gaussian
        of sigma lsf_i convolved with a box one row wide (the pixel)."""
        dl = np.abs(np.gradient(wave))
        sig = np.maximum(lsf, 1e-3)
        s_tot = np.sqrt(sig**2 + dl**2 / 12.0)
        u = np.linspace(-KERNEL_HALF, KERNEL_HALF, NQUAD)
        delta = s_tot[:, None] * u[None, :]                               # (ny, Q)
        r2s = np.sqrt(2.0) * sig[:, None]
        k = erf((delta + dl[:, None] / 2) / r2s) - erf((delta - dl[:, None] / 2) / r2s)
        k /= k.sum(axis=1, keepdims=True)
        x = np.clip((wave[:, None] - delta).ravel(), self.lo, self.hi)
        d = BSpline.design_matrix(x, self.t, 3).tocsr()
        rows = np.repeat(np.arange(wave.size), NQUAD)
        kmat = sp.csr_matrix((k.ravel(), (rows, np.arange(x.size))), shape=(wave.size, x.size))
        return (kmat @ d).tocsr()


def solve(normal: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Banded symmetric solve of the normal equations (a small ridge for unseen coefficients)."""
    n = rhs.size
    nm = normal.tocoo()
    bw = int(np.max(np.abs(nm.row - nm.col))) if nm.nnz else 0
    ab = np.zeros((bw + 1, n))
    up = nm.col >= nm.row
    ab[bw + nm.row[up] - nm.col[up], nm.col[up]] = nm.data[up]
    scale = np.median(ab[bw][ab[bw] > 0]) if np.any(ab[bw] > 0) else 1.0
    ab[bw] += RIDGE * scale
    return solveh_banded(ab, rhs)


def fibre_scales(d, div, model, sky_idx: np.ndarray) -> np.ndarray:
    """a_f for every fibre: sky fibres' own least-squares scales; the others from a quadratic in
    fibre number fitted to those (weighted by their precision)."""
    nfib = d.shape[0]
    own = own_scales(d[sky_idx], div[sky_idx], model[sky_idx])
    m = model[sky_idx]
    den = np.sum(div[sky_idx] * m * m, axis=1)
    deg = min(SCALE_DEG, sky_idx.size - 1)
    c = np.polyfit(sky_idx, own, deg, w=np.sqrt(np.maximum(den, 0)))
    a = np.clip(np.polyval(c, np.arange(nfib)), 0.5, 1.5)
    a[sky_idx] = own
    return a


LINE_WINDOW = 41     # rows: a running low percentile over this many rows is the continuum
LINE_PCT = 30


def split_lines(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(continuum, lines) of one fibre's sky: the continuum a running 30th percentile (sky lines
    cover well under half of any 41 rows), smoothed; the lines the rest."""
    from scipy.ndimage import percentile_filter, uniform_filter1d
    cont = uniform_filter1d(percentile_filter(shape, LINE_PCT, size=LINE_WINDOW, mode="nearest"),
                            LINE_WINDOW // 2, mode="nearest")
    cont = np.minimum(cont, shape)
    return cont, shape - cont


def two_scales(d, div, parts: dict, sky_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta): each sky fibre's least-squares scales of its continuum and its lines;
    the other fibres' from a quadratic in fibre number fitted to the sky fibres' (weighted by
    their precision). A fibre whose lines carry no weight gets beta = alpha."""
    nfib = d.shape[0]
    alpha, beta = np.ones(nfib), np.ones(nfib)
    wa, wb = np.zeros(sky_idx.size), np.zeros(sky_idx.size)
    for j, f in enumerate(sky_idx):
        c, l = parts[f]
        w = div[f]
        M = np.array([[np.sum(w * c * c), np.sum(w * c * l)], [np.sum(w * c * l), np.sum(w * l * l)]])
        b = np.array([np.sum(w * c * d[f]), np.sum(w * l * d[f])])
        wa[j], wb[j] = M[0, 0], M[1, 1]
        if np.linalg.cond(M) < 1e8 and M[1, 1] > 100:
            alpha[f], beta[f] = np.linalg.solve(M, b)
        else:
            alpha[f] = beta[f] = (b[0] + b[1]) / max(M.sum(), 1e-30)
    deg = min(SCALE_DEG, sky_idx.size - 1)
    rest = np.setdiff1d(np.arange(nfib), sky_idx)
    for v, w in ((alpha, wa), (beta, wb)):
        c = np.polyfit(sky_idx, v[sky_idx], deg, w=np.sqrt(np.maximum(w, 1e-30)))
        v[rest] = np.clip(np.polyval(c, rest), 0.5, 1.5)
    return alpha, beta


def own_scales(d, div, m) -> np.ndarray:
    num = np.sum(div * d * m, axis=1)
    den = np.sum(div * m * m, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)


def fit_sky(designs: dict, d: np.ndarray, div: np.ndarray, a: np.ndarray, use,
            basis: SkyBasis) -> np.ndarray:
    """Spline coefficients of S from sky fibres `use` (indices into d), data d/a_f."""
    normal = sp.csr_matrix((basis.n, basis.n))
    rhs = np.zeros(basis.n)
    for f in use:
        A, w = designs[f], div[f] * a[f] ** 2
        normal = normal + A.T @ sp.diags(w) @ A
        rhs += A.T @ (w * d[f] / a[f])
    return solve(normal, rhs)


def sky_model(wave, lsf, d, div, sky_idx: np.ndarray):
    """(model, var_model, a, inside, div) for every fibre: model and its variance (nfib, ny),
    the scales a (nfib,), where the model is valid (nfib, ny), and div with the sky fibres'
    >CLIP sigma outliers (cosmic-ray hits) zeroed; sky fibres get the model of the other folds
    (see the module's note)."""
    nfib, ny = d.shape
    step = np.median(np.abs(np.diff(wave[sky_idx[0]]))) / KNOTS_PER_ROW
    reach = KERNEL_HALF * np.max(np.sqrt(lsf**2 + step**2 / 12.0))
    lo = float(np.min(wave[sky_idx])) - reach
    hi = float(np.max(wave[sky_idx])) + reach
    basis = SkyBasis(lo, hi, step)
    designs = {f: basis.design(wave[f], lsf[f]) for f in range(nfib)}
    div = div.copy()
    a = np.ones(nfib)
    for it in range(3):        # fit; scales; refit (dropping >CLIP sigma outliers) and rescale
        coef = fit_sky(designs, d, div, a, sky_idx, basis)
        shape = np.array([designs[f] @ coef for f in range(nfib)])
        if it < 2:
            res = (d - a[:, None] * shape) * np.sqrt(div)
            div[sky_idx] = np.where(np.abs(res[sky_idx]) < CLIP, div[sky_idx], 0.0)
        a = fibre_scales(d, div, shape, sky_idx)
    a0 = a.copy()
    var_model = _model_var(wave, div, sky_idx, a0)
    model = np.empty_like(d)
    shape_sky = np.empty((sky_idx.size, ny))
    for k in range(min(NFOLD, sky_idx.size)):
        held = sky_idx[k::NFOLD]
        rest = np.setdiff1d(sky_idx, held)
        coef_k = fit_sky(designs, d, div, a0, rest, basis)
        shape_sky[k::NFOLD] = [designs[f] @ coef_k for f in held]
        var_model[held] = _model_var(wave, div, rest, a0, held)
    # continuum and lines scale apart between fibres (the airglow lines vary over the focal
    # plane on their own): each sky fibre gets both scales from its own data, the others a
    # quadratic of each in fibre number
    parts = {f: split_lines(shape[f]) for f in range(nfib)}
    for j, f in enumerate(sky_idx):
        parts[f] = split_lines(shape_sky[j])
    alpha, beta = two_scales(d, div, parts, sky_idx)
    for f in range(nfib):
        model[f] = alpha[f] * parts[f][0] + beta[f] * parts[f][1]
    a = alpha
    # outside the sky fibres' common coverage, and within a kernel's reach of its ends, the
    # convolved spline is not constrained
    edge = reach / 2
    cover = (wave > np.max(wave[sky_idx, 0]) + edge) & (wave < np.min(wave[sky_idx, -1]) - edge)
    return model, var_model, a, cover, div


def _model_var(wave, div, use, a, fibres=None) -> np.ndarray:
    """Variance of the model ~ one sky fibre's variance / number of sky fibres at that
    wavelength (the sum of the fitting fibres' precisions), times the fibre's scale^2."""
    fibres = np.arange(wave.shape[0]) if fibres is None else fibres
    grid = wave[use[0]]
    vsum = np.sum([np.interp(grid, wave[i], div[i] * a[i] ** 2) for i in use], axis=0)
    inv = 1 / np.maximum(vsum, 1e-30)
    return np.array([np.interp(wave[f], grid, inv) * a[f] ** 2 for f in fibres])


def subtract_sky(frame: Path, fiberflat: Path, skyfibers: np.ndarray, cam: str, out: Path) -> Path:
    flux, hdr = io.read_hdu(frame, "FLUX")
    ivar = io.read_hdu(frame, "IVAR")[0]
    wave = io.read_hdu(frame, "WAVELENGTH")[0]
    lsf = io.read_hdu(frame, "LSFSIGMA")[0]
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
    model, var_model, a, inside, clipped = sky_model(wave, lsf.astype(float), d, div, sky_idx)
    # a sky fibre holds only sky: its pixels far off the sky model are cosmic-ray hits that
    # preproc and extraction missed, masked (a science fibre's cannot be told from its target)
    nrej = int(np.sum((div[sky_idx] > 0) & (clipped[sky_idx] == 0) & inside[sky_idx]))
    div = clipped
    sflux = d - model
    sivar = np.where((div > 0) & inside, 1.0 / (1.0 / np.maximum(div, 1e-30) + var_model), 0.0)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME")
             if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/Angstrom"},
              {"name": "NSKYFIB", "value": int(sky_idx.size)},
              {"name": "NSKYREJ", "value": nrej, "comment": "sky-fibre pixels masked as outliers"},
              {"name": "SKYSCRMS", "value": float(np.std(a[sky_idx])), "comment": "rms of sky fibres' scales"}]
    cards += io.provenance("sky", [frame, fiberflat])
    return io.write_fits(out, [("FLUX", sflux.astype(np.float32), cards),
                               ("IVAR", sivar.astype(np.float32), None),
                               ("MASK", (sivar == 0).astype(np.int16), None),
                               ("WAVELENGTH", wave, None),
                               ("SKY", model.astype(np.float32), None),
                               ("LSFSIGMA", lsf, None)])
