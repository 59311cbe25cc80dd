"""extract: row-by-row optimal (PSF-weighted) extraction per fibre bundle, with inverse variance.

In each CCD row the pixels of a bundle are modelled as the sum of its 25 fibres' Gaussian
cross-sections (pixel-integrated, centres and widths from the PSF); the fluxes are the weighted
least-squares solution, their variance the diagonal of the inverse normal matrix.  Bundles are
independent (gaps between them), which is what makes them the unit of parallelism.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import erf

from desinight.sim import instrument as I

from . import io
from .psf import read_psf

HALF = 5          # columns each side of a trace that carry its light (5 sigma)
ROWS_PER_CHUNK = 512
REJECT_NSIGMA = 6.0


def extract_bundle(img, ivar, x, sig, rows=None):
    """Fluxes and ivar (nfib_b, ny) of one bundle. x: (nfib_b, ny) centres; sig: (nfib_b,)."""
    ny = img.shape[0]
    c0 = max(int(np.floor(x.min())) - HALF, 0)
    c1 = min(int(np.ceil(x.max())) + HALF + 1, img.shape[1])
    cols = np.arange(c0, c1, dtype=float)
    nf = x.shape[0]
    flux = np.zeros((nf, ny))
    fivar = np.zeros((nf, ny))
    s = np.sqrt(2.0) * sig[:, None, None]
    for r0 in range(0, ny, ROWS_PER_CHUNK):
        r1 = min(r0 + ROWS_PER_CHUNK, ny)
        xc = x[:, r0:r1, None]                                          # (nf, nr, 1)
        prof = 0.5 * (erf((cols + 0.5 - xc) / s) - erf((cols - 0.5 - xc) / s))
        A = np.transpose(prof, (1, 2, 0))                               # (nr, ncol, nf)
        w = ivar[r0:r1, c0:c1]
        d = img[r0:r1, c0:c1]
        for it in range(2):
            # second pass: pixels the PSF model cannot explain (cosmic rays the sharpness test
            # in preproc missed, e.g. tracks along a trace) get zero weight, and the row is refit
            AtW = np.transpose(A * w[..., None], (0, 2, 1))             # (nr, nf, ncol)
            M = AtW @ A
            b = (AtW @ d[..., None])[..., 0]
            # a fibre whose pixels are all masked in a row: a unit ridge keeps M invertible
            diag = np.einsum("rii->ri", M)
            dead = diag <= 1e-12 * max(diag.max(), 1e-30)
            M[:, np.arange(nf), np.arange(nf)] += np.where(dead, 1.0, 0.0)
            Minv = np.linalg.inv(M)
            f = (Minv @ b[..., None])[..., 0]
            if it == 0:
                model = (A @ f[..., None])[..., 0]
                bad = np.abs(d - model) * np.sqrt(w) > REJECT_NSIGMA
                if not bad.any():
                    break
                w = np.where(bad, 0.0, w)
        var = np.einsum("rii->ri", Minv)
        flux[:, r0:r1] = f.T
        fivar[:, r0:r1] = np.where(dead, 0.0, 1.0 / np.maximum(var, 1e-30)).T
    return flux, fivar


def extract_camera(preproc_file: Path, psf_file: Path, cam: str, out: Path,
                   bundles: list[int] | None = None, comm=None) -> Path | None:
    """Extract a camera. With ``comm`` (several ranks on one camera) the bundles are dealt over
    its ranks and gathered to its rank 0, which alone writes ``out`` (returned on every rank);
    a failure on any rank raises on every rank."""
    img, hdr = io.read_hdu(preproc_file, "IMAGE")
    ivar, _ = io.read_hdu(preproc_file, "IVAR")
    img, ivar = img.astype(float), ivar.astype(float)
    x, wave, sig = read_psf(psf_file)
    nfib, ny = x.shape
    flux = np.zeros((nfib, ny), np.float32)
    fivar = np.zeros((nfib, ny), np.float32)
    nb = nfib // I.FIBERS_PER_BUNDLE
    if bundles is None:
        bundles = list(range(nb))
        if comm is not None and comm.Get_size() > 1:
            bundles = bundles[comm.Get_rank()::comm.Get_size()]
    err = None
    try:
        for b in bundles:
            sl = slice(b * I.FIBERS_PER_BUNDLE, (b + 1) * I.FIBERS_PER_BUNDLE)
            flux[sl], fivar[sl] = extract_bundle(img, ivar, x[sl], sig[sl])
    except Exception as e:  # noqa: BLE001 - reported on every rank below
        err = f"{cam} bundles {bundles}: {type(e).__name__}: {e}"
    if comm is not None and comm.Get_size() > 1:
        errs = [e for e in comm.allgather(err) if e]
        if errs:
            raise RuntimeError("; ".join(errs))
        parts = comm.gather((bundles, flux, fivar), root=0)
        if comm.Get_rank() != 0:
            path, msg = comm.bcast(None, root=0)
            if msg:
                raise RuntimeError(f"writing {Path(out).name} failed: {msg}")
            return path
        for bl, fl, fi in parts:
            for b in bl:
                sl = slice(b * I.FIBERS_PER_BUNDLE, (b + 1) * I.FIBERS_PER_BUNDLE)
                flux[sl], fivar[sl] = fl[sl], fi[sl]
    elif err:
        raise RuntimeError(err)
    if comm is None or comm.Get_size() == 1:
        return _write_frame(out, flux, fivar, wave, hdr, cam, preproc_file, psf_file)
    try:
        path, err = _write_frame(out, flux, fivar, wave, hdr, cam, preproc_file, psf_file), None
    except Exception as e:  # noqa: BLE001 - the other ranks wait for this answer
        path, err = None, e
    comm.bcast((path, None if err is None else str(err)), root=0)
    if err is not None:
        raise err
    return path


def _write_frame(out, flux, fivar, wave, hdr, cam, preproc_file, psf_file) -> Path:
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "OBSTYPE", "TILEID",
                                                     "EXPTIME", "MJD-OBS") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "electron/row"}]
    cards += io.provenance("extract", [preproc_file, psf_file])
    mask = (fivar == 0).astype(np.int16)
    return io.write_fits(out, [("FLUX", flux, cards), ("IVAR", fivar, None), ("MASK", mask, None),
                               ("WAVELENGTH", wave.astype(np.float64), None)])
