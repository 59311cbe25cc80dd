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
since the flat): each sky fibre gets its own scale a_f (least squares of its data on its model)
and S is refitted to the scaled sky fibres.  The airglow lines vary over the focal plane apart
from the continuum, so the final model has two scales per fibre, one for the continuum (a
running low percentile of S) and one for the lines: a sky fibre's own, the other fibres' from
a quadratic in fibre number fitted to the sky fibres' scales: only sky fibres inform the model.

A sky fibre's own residual would be flattered by a model fitted to itself (each carries ~1/nsky
of the spline's weight), so sky fibres are predicted as a science fibre is: the sky fibres are
split into NFOLD groups and each group is subtracted with the model of the others.  Their
residuals and pulls then measure the model's real error.

Every weight here is an inverse variance whose shot noise comes from the expected counts (the
sky model, plus a running median of a target's light), not from the pixel's own counts
(expected_ivar): weights that fall when a pixel fluctuates up make every weighted fit lean low.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import BSpline
from scipy.linalg import solveh_banded
from scipy.ndimage import median_filter
from scipy.special import erf

from desinight import desimodel as I

from . import io
from .fiberflat import density

KNOTS_PER_ROW = 1.0
SCALE_DEG = 2        # the sky's drift over a spectrograph's fibres: smooth, a quadratic
NFOLD = 5            # sky fibres predicted by the model of the other 4/5 of them
NQUAD = 25           # quadrature points of the LSF x row kernel, 1/3 sigma apart (13: +0.02)
KERNEL_HALF = 4.0    # ... over +- this many kernel sigmas
RIDGE = 1e-8         # relative ridge: keeps coefficients the data cannot see (edges) at 0
CLIP = 5.0           # sigma: cosmic-ray residuals left by preproc and extraction
LINE_WINDOW = 41     # knot steps (rows): a running low percentile over them is the continuum
LINE_PCT = 30
TARGET_SMOOTH = 15   # rows: a target's expected light under the sky, for its shot noise
NO_DATA_VAR = 1e20   # model variance (electron/A)^2 that means no sky fibre saw this wavelength


class SkyBasis:
    """Cubic B-spline knots over a wavelength range, and what a fibre sees of a spline: the
    spline convolved with the fibre's LSF and averaged over each row."""

    def __init__(self, lo: float, hi: float, step: float):
        inner = np.arange(lo + step, hi - step / 2, step)
        self.t = np.r_[[lo] * 4, inner, [hi] * 4]
        self.n = self.t.size - 4
        self.lo, self.hi = lo, hi

    def kernel(self, wave: np.ndarray, lsf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quadrature points x (ny, NQUAD) and weights: row i sees integral K_i(delta)
        S(wave_i - delta), K_i a Gaussian of sigma lsf_i convolved with the row's box."""
        dl = np.abs(np.gradient(wave))
        sig = np.maximum(lsf, 1e-3)
        s_tot = np.sqrt(sig**2 + dl**2 / 12.0)
        delta = s_tot[:, None] * np.linspace(-KERNEL_HALF, KERNEL_HALF, NQUAD)[None, :]
        r2s = np.sqrt(2.0) * sig[:, None]
        k = erf((delta + dl[:, None] / 2) / r2s) - erf((delta - dl[:, None] / 2) / r2s)
        return np.clip(wave[:, None] - delta, self.lo, self.hi), k / k.sum(axis=1, keepdims=True)

    def design(self, wave: np.ndarray, lsf: np.ndarray) -> sp.csr_matrix:
        """(ny, n) design matrix of one fibre."""
        x, k = self.kernel(wave, lsf)
        d = BSpline.design_matrix(x.ravel(), self.t, 3).tocsr()
        rows = np.repeat(np.arange(wave.size), NQUAD)
        kmat = sp.csr_matrix((k.ravel(), (rows, np.arange(x.size))), shape=(wave.size, x.size))
        return (kmat @ d).tocsr()

    def evaluate(self, coef: np.ndarray, wave: np.ndarray, lsf: np.ndarray) -> np.ndarray:
        """The spline as one fibre sees it (ny,)."""
        x, k = self.kernel(wave, lsf)
        return np.sum(BSpline(self.t, coef, 3)(x) * k, axis=1)


def banded(normal: sp.spmatrix, bw: int) -> np.ndarray:
    """Upper band (bw + 1, n) of a symmetric sparse matrix, as solveh_banded takes it."""
    nm = normal.tocoo()
    up = nm.col >= nm.row
    if nm.nnz and np.max(nm.col[up] - nm.row[up]) > bw:
        raise ValueError("sky model: normal matrix wider than its band")
    ab = np.zeros((bw + 1, normal.shape[0]))
    np.add.at(ab, (bw + nm.row[up] - nm.col[up], nm.col[up]), nm.data[up])
    return ab


def solve(ab: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Banded symmetric solve of the normal equations (a small ridge for unseen coefficients)."""
    ab = ab.copy()
    diag = ab[-1]
    scale = np.median(diag[diag > 0]) if np.any(diag > 0) else 1.0
    ab[-1] += RIDGE * scale
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


def continuum(basis: SkyBasis, coef: np.ndarray, step: float, lsf: float):
    """The sky's continuum as a function of wavelength: a running 30th percentile over
    LINE_WINDOW rows of the spline seen through a typical LSF (sky lines cover well under half
    of any such window), smoothed; the lines are the rest."""
    from scipy.ndimage import percentile_filter, uniform_filter1d
    grid = np.arange(basis.lo, basis.hi, step)
    sky = basis.evaluate(coef, grid, np.full(grid.size, lsf))
    cont = uniform_filter1d(percentile_filter(sky, LINE_PCT, size=LINE_WINDOW, mode="nearest"),
                            LINE_WINDOW // 2, mode="nearest")
    return lambda w: np.interp(w, grid, cont)


def split(cont: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(continuum, lines) of a fibre's sky: the continuum never above the sky itself."""
    c = np.minimum(cont, shape)
    return c, shape - c


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
        cl = np.sum(w * c * l)
        M = np.array([[np.sum(w * c * c), cl], [cl, np.sum(w * l * l)]])
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


def normals(designs: dict, d: np.ndarray, div: np.ndarray, a: np.ndarray, bw: int) -> dict:
    """Each sky fibre's share of the normal equations for S, data d/a_f: (band, rhs)."""
    out = {}
    for f, A in designs.items():
        w = div[f] * a[f] ** 2
        out[f] = (banded(A.T @ sp.diags(w) @ A, bw), A.T @ (w * d[f] / a[f]))
    return out


def fit_sky(parts: dict, use) -> np.ndarray:
    """Spline coefficients of S from the sky fibres `use`."""
    return solve(sum(parts[f][0] for f in use), sum(parts[f][1] for f in use))


def expected_ivar(d, div, expected, epd):
    """div with the shot noise of ``expected`` in place of that of d.

    Extraction's variance is read noise plus the row's own fitted counts, so a pixel that
    fluctuates up also reports more variance: every inverse-variance weighted sum then leans
    low. The sky model sat ~0.1 sigma below every sky fibre (seed 3, per exposure; 0.13-0.16
    sigma in the coadd), an offset that reached every target as added flux, 10-20% of a faint
    galaxy's continuum. epd: electrons per unit of d (d's shot-noise variance is d / epd).
    The result never drops below a quarter of the old variance: only a pixel far above what is
    expected (a cosmic ray) comes near it, and it should not gain weight by it."""
    var0 = 1.0 / np.maximum(div, 1e-30)
    var = var0 + (np.maximum(expected, 0) - np.maximum(d, 0)) / np.maximum(epd, 1e-6)
    return np.where(div > 0, 1.0 / np.maximum(var, 0.25 * var0), 0.0)


def sky_model(wave, lsf, d, div, sky_idx: np.ndarray, epd=None):
    """(model, var_model, a, inside, div) for every fibre: model and its variance (nfib, ny),
    the scales a (nfib,), where the model is valid (nfib, ny), and div with the sky fibres'
    >CLIP sigma outliers (cosmic-ray hits) zeroed and, given epd (electrons per unit of d),
    their shot noise from the model (expected_ivar); sky fibres get the model of the other
    folds (see the module's note)."""
    nfib, ny = d.shape
    step = np.median(np.abs(np.diff(wave[sky_idx[0]]))) / KNOTS_PER_ROW
    reach = KERNEL_HALF * np.max(np.sqrt(lsf**2 + step**2 / 12.0))
    lo = float(np.min(wave[sky_idx])) - reach
    hi = float(np.max(wave[sky_idx])) + reach
    basis = SkyBasis(lo, hi, step)
    designs = {f: basis.design(wave[f], lsf[f]) for f in sky_idx}
    div0, div = div, div.copy()
    keep = div[sky_idx] > 0
    a = np.ones(nfib)
    # B-splines of a fibre's row overlap over the kernel's reach: the band of the normal matrix
    bw = int(np.ceil(2 * reach / step)) + 4
    for it in range(3):        # fit; scales; refit (dropping >CLIP sigma outliers) and rescale
        parts_n = normals(designs, d, div, a, bw)
        coef = fit_sky(parts_n, sky_idx)
        shape = np.zeros_like(d)
        shape[sky_idx] = [designs[f] @ coef for f in sky_idx]
        if it < 2:
            expect = a[sky_idx, None] * shape[sky_idx]
            res = (d[sky_idx] - expect) * np.sqrt(div[sky_idx])
            keep &= np.abs(res) < CLIP
            iv = div0[sky_idx] if epd is None else \
                expected_ivar(d[sky_idx], div0[sky_idx], expect, epd[sky_idx])
            div[sky_idx] = np.where(keep, iv, 0.0)
        a = fibre_scales(d, div, shape, sky_idx)
    others = np.setdiff1d(np.arange(nfib), sky_idx)
    shape[others] = [basis.evaluate(coef, wave[f], lsf[f]) for f in others]
    typical = float(np.median(lsf[sky_idx]))
    cont = continuum(basis, coef, step, typical)
    a0 = a.copy()
    var_model = _model_var(wave, div, sky_idx, a0)
    parts = {f: split(cont(wave[f]), shape[f]) for f in others}
    for k in range(min(NFOLD, sky_idx.size)):
        held = sky_idx[k::NFOLD]
        rest = np.setdiff1d(sky_idx, held)
        coef_k = fit_sky(parts_n, rest)
        cont_k = continuum(basis, coef_k, step, typical)
        for f in held:
            parts[f] = split(cont_k(wave[f]), designs[f] @ coef_k)
        var_model[held] = _model_var(wave, div, rest, a0, held)
    # continuum and lines scale apart between fibres (the airglow lines vary over the focal
    # plane on their own): each sky fibre gets both scales from its own data, the others a
    # quadratic of each in fibre number
    alpha, beta = two_scales(d, div, parts, sky_idx)
    model = np.array([alpha[f] * parts[f][0] + beta[f] * parts[f][1] for f in range(nfib)])
    a = alpha
    # outside the sky fibres' common coverage, and near its ends (half the kernel's reach),
    # the convolved spline is not constrained
    edge = reach / 2
    cover = (wave > np.max(wave[sky_idx, 0]) + edge) & (wave < np.min(wave[sky_idx, -1]) - edge)
    # nor where no fitting sky fibre has data (a dead amplifier over all of them there)
    cover &= var_model < NO_DATA_VAR
    return model, var_model, a, cover, div


def _model_var(wave, div, use, a, fibres=None) -> np.ndarray:
    """Variance of the model ~ one sky fibre's variance / number of sky fibres at that
    wavelength (the sum of the fitting fibres' precisions), times the fibre's scale^2."""
    fibres = np.arange(wave.shape[0]) if fibres is None else fibres
    grid = wave[use[0]]
    vsum = np.sum([np.interp(grid, wave[i], div[i] * a[i] ** 2) for i in use], axis=0)
    inv = 1 / np.maximum(vsum, 1e-30)
    return np.array([np.interp(wave[f], grid, inv) * a[f] ** 2 for f in fibres])


def flexure(wave: np.ndarray, d: np.ndarray, div: np.ndarray, sky_idx: np.ndarray,
            lines: np.ndarray) -> tuple[float, int]:
    """(rows, lines used): how far the science exposure's sky lines sit from where the arcs'
    wavelength solution puts them (the spectrograph flexes between arc and science; a shift
    common to all fibres, which the sky model cannot see). Per line and sky fibre, the vertex
    of the log-parabola through the 3 rows around the peak (exact for a Gaussian wherever its
    centre falls) above a local baseline; the median over fibres, then over lines."""
    ny = wave.shape[1]
    y = np.arange(ny, dtype=float)
    per_line = []
    for lam in lines:
        offs = []
        for f in sky_idx:
            yl = float(np.interp(lam, wave[f], y))
            j0 = int(round(yl))
            if j0 < 9 or j0 > ny - 10 or np.any(div[f, j0 - 7:j0 + 8] <= 0):
                continue
            base = np.median(np.r_[d[f, j0 - 7:j0 - 4], d[f, j0 + 5:j0 + 8]])
            j = j0 - 2 + int(np.argmax(d[f, j0 - 2:j0 + 3]))
            a, b, c = d[f, j - 1:j + 2] - base
            if min(a, b, c) <= 0 or b < max(a, c) or b < 10 / np.sqrt(div[f, j]):
                continue           # not a clean line 10 sigma above the continuum here
            den = np.log(a) - 2 * np.log(b) + np.log(c)
            if den < -1e-6:
                offs.append(j + 0.5 * (np.log(a) - np.log(c)) / den - yl)
        if len(offs) >= min(3, sky_idx.size):
            per_line.append(float(np.median(offs)))
    if not per_line:
        return 0.0, 0
    return float(np.median(per_line)), len(per_line)


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
    epd = np.gradient(wave, axis=1) * ff         # electrons (per row) per unit of d
    model, var_model, a, inside, clipped = sky_model(wave, lsf.astype(float), d, div, sky_idx,
                                                     epd)
    # the other fibres' shot noise, too, from what is expected there: the sky model plus the
    # target's light, a running median of what the model leaves (sky_idx's are done)
    others = np.setdiff1d(np.arange(d.shape[0]), sky_idx)
    target = median_filter(d[others] - model[others], size=(1, TARGET_SMOOTH), mode="nearest")
    clipped[others] = expected_ivar(d[others], clipped[others], model[others] + target,
                                    epd[others])
    # a sky fibre holds only sky: its pixels far off the sky model are cosmic-ray hits that
    # preproc and extraction missed, masked (a science fibre's cannot be told from its target)
    nrej = int(np.sum((div[sky_idx] > 0) & (clipped[sky_idx] == 0) & inside[sky_idx]))
    div = clipped
    sflux = d - model
    # flexure since the arcs: relabel every fibre's rows by the shift its sky lines show
    shift, nlines = flexure(wave, d, clipped, sky_idx, I.air_to_vacuum(I.SKY_LINES_AIR))
    wave_out = wave - shift * np.gradient(wave, axis=1)
    sivar = np.where((div > 0) & inside, 1.0 / (1.0 / np.maximum(div, 1e-30) + var_model), 0.0)
    # shared with the night's other exposures (steps/calvar.py): the bias's noise, and the
    # flat's, which scales with this exposure's light
    cvar = io.read_calvar(frame, flux.shape) / epd**2
    cvar = np.where(sivar > 0, cvar + d**2 / np.maximum(ffivar * ff**2, 1e-30), 0.0)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME",
                                                    "CALVARID") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/Angstrom"},
              {"name": "NSKYFIB", "value": int(sky_idx.size)},
              {"name": "NSKYREJ", "value": nrej, "comment": "sky-fibre pixels masked as outliers"},
              {"name": "FLEXURE", "value": round(shift, 4), "comment": "rows, sky lines vs arcs"},
              {"name": "NFLEXLN", "value": nlines, "comment": "sky lines that measured FLEXURE"},
              {"name": "SKYSCRMS", "value": float(np.std(a[sky_idx])), "comment": "rms of sky fibres' scales"}]
    cards += io.provenance("sky", [frame, fiberflat])
    return io.write_fits(out, [("FLUX", sflux.astype(np.float32), cards),
                               ("IVAR", sivar.astype(np.float32), None),
                               ("MASK", (sivar == 0).astype(np.int16), None),
                               ("WAVELENGTH", wave_out, None),
                               ("SKY", model.astype(np.float32), None),
                               ("LSFSIGMA", lsf, None),
                               ("CALVAR", cvar.astype(np.float32), None)])
