"""extract: row-by-row optimal (PSF-weighted) extraction per fibre bundle, with inverse variance.

In each CCD row the pixels of a bundle are modelled as the sum of its 25 fibres' Gaussian
cross-sections (pixel-integrated, centres and widths from the PSF); the fluxes are the weighted
least-squares solution, their variance the diagonal of the inverse normal matrix.  Bundles are
independent (gaps between them), which is what makes them the unit of parallelism.
The frame also carries LSFSIGMA (nfib, ny): the arcs' line-spread width converted to Angstrom
(times the local dispersion), the resolution data the redshift fit needs, and CALVAR: the
part of the variance that the nightly bias's noise puts in every exposure alike (steps/calvar.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import erf

from desinight import desimodel as I

from . import calvar, io
from .psf import read_lsf, read_psf

HALF = 5          # columns each side of a trace that carry its light (5 sigma)
ROWS_PER_CHUNK = 512
REJECT_NSIGMA = 6.0


def _profile(cols: np.ndarray, xc: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Pixel-integrated Gaussian of centres xc (nf, nr), sqrt(2)*sigma s (nf, 1, 1), at cols."""
    xc = xc[..., None]
    return 0.5 * (erf((cols + 0.5 - xc) / s) - erf((cols - 0.5 - xc) / s))


def model_weights(w: np.ndarray, d: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Pixel weights with the shot noise of the fitted model instead of the pixel's own value.
    preproc's variance is read noise + the pixel's signal: weighting by the data gives a low
    pixel more weight and reports too small a variance (~5% in the pulls of faint sky, where
    read noise and signal are alike); the model has no such noise."""
    var = 1.0 / np.maximum(w, 1e-30)
    floor = np.maximum(var - np.maximum(d, 0.0), 0.0)      # read noise (and bias) part
    out = 1.0 / np.maximum(floor + np.maximum(model, 0.0), 1e-6)
    return np.where(w > 0, out, 0.0)


def extract_bundle(img, ivar, x, sig, rows=None, cvar=None):
    """Fluxes, ivar and CALVAR (nfib_b, ny) of one bundle. x: (nfib_b, ny) centres; sig:
    (nfib_b,); cvar: the image's per-pixel variance shared with other exposures (the nightly
    bias's, steps/calvar.py) or None, carried through the same weights (own fibre only: the
    neighbours' share of a pixel is small).

    Each fibre's light lies in a window of 2*HALF+2 columns around its trace, so the normal
    matrix is banded: M[f, f+k] = sum over f's window of w P_f P_(f+k), with P_(f+k) evaluated
    at f's columns. Only those windows are touched (not the bundle's full width), which makes
    the extraction ~5x cheaper than a dense design matrix with the same result.
    """
    ny, ncols = img.shape
    nf = x.shape[0]
    width = 2 * HALF + 2
    pitch = np.min(np.abs(np.diff(x[:, ny // 2]))) if nf > 1 else np.inf
    # neighbour k's light reaches fibre f's window only when k * pitch < width + 1
    kmax = min(nf - 1, max(1, int((width + 1) // max(pitch, 1e-3))))
    s = (np.sqrt(2.0) * np.asarray(sig, float))[:, None, None]
    flux = np.zeros((nf, ny))
    fivar = np.zeros((nf, ny))
    fcvar = np.zeros((nf, ny))
    ii = np.arange(nf)
    for r0 in range(0, ny, ROWS_PER_CHUNK):
        r1 = min(r0 + ROWS_PER_CHUNK, ny)
        xc = x[:, r0:r1]                                                 # (nf, nr)
        cols = (np.floor(xc).astype(int) - HALF)[..., None] + np.arange(width)   # (nf, nr, W)
        inside = (cols >= 0) & (cols < ncols)
        cc = np.clip(cols, 0, ncols - 1)
        rr = np.arange(r0, r1)[None, :, None]
        d = img[rr, cc]
        w = np.where(inside, ivar[rr, cc], 0.0)
        colf = cols.astype(float)
        P = _profile(colf, xc, s)                                        # own profile
        # neighbour f+k (k>0) and f-k on fibre f's window: Pn[k][f] = P_(f+k) at f's columns
        up = {k: _profile(colf[:-k], xc[k:], s[k:]) for k in range(1, kmax + 1)}
        down = {k: _profile(colf[k:], xc[:-k], s[:-k]) for k in range(1, kmax + 1)}
        for it in range(2):
            M = np.zeros((r1 - r0, nf, nf))
            M[:, ii, ii] = np.sum(w * P * P, axis=-1).T
            for k, pk in up.items():
                m = np.sum(w[:-k] * P[:-k] * pk, axis=-1).T              # (nr, nf-k)
                M[:, ii[:-k], ii[k:]] = m
                M[:, ii[k:], ii[:-k]] = m
            b = np.sum(w * d * P, axis=-1).T                             # (nr, nf)
            diag = M[:, ii, ii]
            dead = diag <= 1e-12 * max(diag.max(), 1e-30)
            M[:, ii, ii] += np.where(dead, 1.0, 0.0)
            Minv = np.linalg.inv(M)
            f = np.einsum("rij,rj->ri", Minv, b)                         # (nr, nf)
            if it == 0:
                # pixels the PSF model cannot explain (cosmic rays the sharpness test in
                # preproc missed, e.g. tracks along a trace) get zero weight, the others the
                # model's shot noise; refit the row
                ft = f.T
                model = ft[..., None] * P
                for k in up:
                    model[:-k] += ft[k:, :, None] * up[k]
                    model[k:] += ft[:-k, :, None] * down[k]
                bad = np.abs(d - model) * np.sqrt(w) > REJECT_NSIGMA
                w = np.where(bad, 0.0, model_weights(w, d, model))
        var = np.einsum("rii->ri", Minv)
        flux[:, r0:r1] = f.T
        fivar[:, r0:r1] = np.where(dead, 0.0, 1.0 / np.maximum(var, 1e-30)).T
        if cvar is not None:
            # var of sum(w P d)/sum(w P^2) from the shared part c of each pixel's variance
            shared = np.sum(w * w * P * P * cvar[rr, cc], axis=-1).T * var**2
            fcvar[:, r0:r1] = np.where(dead, 0.0, np.minimum(shared, var)).T
    return flux, fivar, fcvar


def extract_camera(preproc_file: Path, psf_file: Path, cam: str, out: Path,
                   bundles: list[int] | None = None, comm=None) -> Path | None:
    """Extract a camera. With ``comm`` (several ranks on one camera) the bundles are dealt over
    its ranks and gathered to its rank 0, which alone writes ``out`` (returned on every rank);
    a failure on any rank raises on every rank."""
    img, hdr = io.read_hdu(preproc_file, "IMAGE")
    ivar, _ = io.read_hdu(preproc_file, "IVAR")
    img, ivar = img.astype(float), ivar.astype(float)
    cimg = calvar.bias_var_image(hdr, img.shape)
    x, wave, sig = read_psf(psf_file)
    nfib, ny = x.shape
    flux = np.zeros((nfib, ny), np.float32)
    fivar = np.zeros((nfib, ny), np.float32)
    fcvar = np.zeros((nfib, ny), np.float32)
    nb = nfib // I.FIBERS_PER_BUNDLE
    if bundles is None:
        bundles = list(range(nb))
        if comm is not None and comm.Get_size() > 1:
            bundles = bundles[comm.Get_rank()::comm.Get_size()]
    err = None
    try:
        for b in bundles:
            sl = slice(b * I.FIBERS_PER_BUNDLE, (b + 1) * I.FIBERS_PER_BUNDLE)
            flux[sl], fivar[sl], fcvar[sl] = extract_bundle(img, ivar, x[sl], sig[sl], cvar=cimg)
    except Exception as e:  # noqa: BLE001 - reported on every rank below
        err = f"{cam} bundles {bundles}: {type(e).__name__}: {e}"
    if comm is not None and comm.Get_size() > 1:
        errs = [e for e in comm.allgather(err) if e]
        if errs:
            raise RuntimeError("; ".join(errs))
        parts = comm.gather((bundles, flux, fivar, fcvar), root=0)
        if comm.Get_rank() != 0:
            path, msg = comm.bcast(None, root=0)
            if msg:
                raise RuntimeError(f"writing {Path(out).name} failed: {msg}")
            return path
        for bl, fl, fi, fc in parts:
            for b in bl:
                sl = slice(b * I.FIBERS_PER_BUNDLE, (b + 1) * I.FIBERS_PER_BUNDLE)
                flux[sl], fivar[sl], fcvar[sl] = fl[sl], fi[sl], fc[sl]
    elif err:
        raise RuntimeError(err)
    if comm is None or comm.Get_size() == 1:
        return _write_frame(out, flux, fivar, fcvar, wave, hdr, cam, preproc_file, psf_file)
    try:
        path, err = _write_frame(out, flux, fivar, fcvar, wave, hdr, cam, preproc_file,
                                 psf_file), None
    except Exception as e:  # noqa: BLE001 - the other ranks wait for this answer
        path, err = None, e
    comm.bcast((path, None if err is None else str(err)), root=0)
    if err is not None:
        raise err
    return path


def _write_frame(out, flux, fivar, fcvar, wave, hdr, cam, preproc_file, psf_file) -> Path:
    lsf = read_lsf(psf_file) * np.abs(np.gradient(wave, axis=1))
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "OBSTYPE", "TILEID",
                                                     "EXPTIME", "MJD-OBS", "CALVARID") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/row"}]
    cards += io.provenance("extract", [preproc_file, psf_file])
    mask = (fivar == 0).astype(np.int16)
    return io.write_fits(out, [("FLUX", flux, cards), ("IVAR", fivar, None), ("MASK", mask, None),
                               ("WAVELENGTH", wave.astype(np.float64), None),
                               ("LSFSIGMA", lsf.astype(np.float32), None),
                               ("CALVAR", fcvar.astype(np.float32), None)])
