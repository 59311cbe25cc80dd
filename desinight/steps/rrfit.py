"""Redshifts with redrock (DESI's fitter) and DESI's PCA templates, carried in the package.

Each target is handed to redrock as its per-camera coadded spectra (b, r, z on their own linear
wavelength grids, no resampling onto a common grid), each with a resolution matrix built from
the line-spread width measured on the arcs (LSFSIGMA, Angstrom per pixel): redrock rebins each
template onto every camera's grid, convolves with that camera's matrix and fits all three at once.

The templates are the files under desinight/data/redrock-templates/ (DESI's, BSD-3, see the
README there), passed to redrock by explicit path: $RR_TEMPLATE_DIR is never read, so a fit
cannot silently pick up another template set.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse

#: the template files used, in the package (galaxy, both QSO sets, the stellar types)
TEMPLATE_FILES = ("rrtemplate-galaxy.fits", "rrtemplate-QSO-LOZ-v1.1.fits",
                  "rrtemplate-QSO-HIZ-v1.1.fits") + tuple(
    f"rrtemplate-STAR-{t}-v0.1.fits" for t in ("A", "B", "F", "G", "K", "M", "WD"))
#: half-width of the resolution matrix in pixels (the LSF sigma is ~1 pixel: 5 sigma each side)
NDIAG_HALF = 5
OUT_DTYPE = [("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"),
             ("SPECTYPE", "U6"), ("SUBTYPE", "U20"), ("DELTACHI2", "f8"), ("CHI2", "f8"),
             ("COEFF", "f8", (10,)), ("NPIXELS", "i8")]


def template_dir() -> Path:
    return Path(str(resources.files("desinight") / "data" / "redrock-templates"))


def template_paths(names=TEMPLATE_FILES) -> list[str]:
    d = template_dir()
    return [str(d / f) for f in names]


def star_files(subtypes=("A", "B", "F", "G", "K", "M", "WD")) -> tuple[str, ...]:
    return tuple(f"rrtemplate-STAR-{t}-v0.1.fits" for t in subtypes)


def load_template(spectype: str, subtype: str = ""):
    """One packaged template (redrock.templates.Template), e.g. ("STAR", "F")."""
    from redrock.templates import Template

    name = {"GALAXY": "rrtemplate-galaxy.fits"}.get(spectype) or \
        (f"rrtemplate-STAR-{subtype}-v0.1.fits" if spectype == "STAR" else
         f"rrtemplate-QSO-{subtype}-v1.1.fits")
    with contextlib.redirect_stdout(_io.StringIO()):
        return Template(template_paths((name,))[0])


def _numba_cache() -> None:
    """Compile redrock's two jitted rebinning kernels once per machine, not once per job (~6 s):
    redrock does not ask numba to cache them, so switch caching on, into a writable
    $NUMBA_CACHE_DIR (~/.cache/desinight/numba unless the caller chose one)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["NUMBA_CACHE_DIR"] = str(base / "desinight" / "numba")
    from redrock import rebin

    for fn in (rebin._trapz_rebin_1d, rebin._trapz_rebin_batch):
        if getattr(fn, "_cache", None) is None or type(fn._cache).__name__ == "NullCache":
            fn.enable_caching()


def resolution_matrix(wave: np.ndarray, sigma: np.ndarray) -> scipy.sparse.dia_matrix:
    """Banded (2*NDIAG_HALF+1 diagonals) Gaussian resolution matrix of one spectrum.

    Row i is the line-spread of output pixel i (Gaussian of width sigma[i] Angstrom sampled at
    the grid's wavelengths), normalised to 1, as DESI's resolution data: model = R @ template.
    """
    n = wave.size
    offs = np.arange(-NDIAG_HALF, NDIAG_HALF + 1)
    i = np.arange(n)
    j = i[None, :] + offs[:, None]                                  # (ndiag, n): column of row i
    ok = (j >= 0) & (j < n)
    dw = wave[np.clip(j, 0, n - 1)] - wave[None, :]
    s = np.maximum(np.asarray(sigma, float), 1e-3)[None, :]
    band = np.where(ok, np.exp(-0.5 * (dw / s) ** 2), 0.0)
    band /= np.maximum(band.sum(0, keepdims=True), 1e-30)
    # dia_matrix: data[k, col] holds A[col - offset_k, col]; here A[i, i + off] = band[k, i]
    data = np.zeros_like(band)
    for k, off in enumerate(offs):
        if off >= 0:
            data[k, off:] = band[k, :n - off]
        else:
            data[k, :n + off] = band[k, -off:]
    return scipy.sparse.dia_matrix((data, offs), shape=(n, n))


def make_targets(targetids, cams: dict[str, tuple]) -> list:
    """redrock Targets. cams: arm -> (wave, flux (ntarg, n), ivar, lsfsigma (ntarg, n)); wave is
    the band's common grid (n,), or one grid per target (ntarg, n) (redrock then rebins the
    templates onto each target's own grid: a spectrum's grid is its key)."""
    from redrock.targets import Spectrum, Target

    out = []
    for t, tid in enumerate(targetids):
        spectra = []
        for arm, (w, f, iv, sg) in cams.items():
            w = np.asarray(w, np.float64)
            own = w.ndim == 2
            w = w[t] if own else w
            spectra.append(Spectrum(w, np.asarray(f[t], np.float64).copy(),
                                    np.asarray(iv[t], np.float64).copy(),
                                    resolution_matrix(w, sg[t]), band=None if own else arm))
        out.append(Target(int(tid), spectra))
    return out


#: [OII] 3729.875 A (vacuum), the redder line of the doublet: a galaxy's last feature to leave
#: the spectrograph's red end as its redshift grows
OII_RED = 3729.875
#: redrock's own galaxy scan (templates.py): from z -0.005 to 1.7 in steps of 3e-4 in log10(1+z)
GALAXY_ZMIN, GALAXY_ZMAX, GALAXY_DLOGZ = -0.005, 1.7, 3e-4


def galaxy_zscan(cams: dict[str, tuple]) -> str:
    """Redrock's galaxy scan, ending where [OII] leaves the reddest camera (z ~1.63 here).

    Beyond it a galaxy has no feature in the data, only its rest-frame UV continuum, where the
    galaxy basis is flexible enough to absorb a quasar's: on development nights every quasar
    failure (6 of 50) was a GALAXY fit at z 1.64-1.69, five with DELTACHI2 of 16-288.
    DESI's galaxy targets all lie below that limit; a survey with a redder camera gets
    redrock's default end."""
    reddest = max(float(np.max(np.asarray(c[0]))) for c in cams.values())
    zmax = min(GALAXY_ZMAX, reddest / OII_RED - 1)
    return f"{GALAXY_ZMIN},{zmax:.4f},{GALAXY_DLOGZ}"


def fit(targetids, cams: dict[str, tuple], comm=None, quiet: bool = True,
        files: tuple[str, ...] = TEMPLATE_FILES) -> np.ndarray | None:
    """Redrock's best fit per target (REDSHIFTS rows, OUT_DTYPE). With an MPI ``comm`` every rank
    calls this with the same inputs (redrock's DistTargetsCopy wants the list on every rank);
    redrock spreads the targets over the ranks and the table comes back on every rank."""
    _numba_cache()
    from redrock.targets import DistTargetsCopy
    from redrock.templates import load_dist_templates
    from redrock.zfind import zfind

    rank = 0 if comm is None else comm.Get_rank()
    targets = make_targets(targetids, cams)
    sink = _io.StringIO()
    # redrock prints progress to stdout; keep it out of the job's own report unless asked
    with contextlib.redirect_stdout(sink if quiet else sys.stdout):
        dt = DistTargetsCopy(targets, comm=comm, root=0)
        dtemplates = load_dist_templates(dt.wavegrids(), templates=template_paths(files), comm=comm,
                                         zscan_galaxy=galaxy_zscan(cams))
        _, zfit = zfind(dt, dtemplates, mp_procs=1)
    out = None
    if rank == 0:
        best = zfit[zfit["znum"] == 0]
        out = np.zeros(len(best), OUT_DTYPE)
        for k, c in (("TARGETID", "targetid"), ("Z", "z"), ("ZERR", "zerr"), ("ZWARN", "zwarn"),
                     ("SPECTYPE", "spectype"), ("SUBTYPE", "subtype"),
                     ("DELTACHI2", "deltachi2"), ("CHI2", "chi2"), ("NPIXELS", "npixels")):
            out[k] = np.asarray(best[c])
        coeff = np.asarray(best["coeff"])
        out["COEFF"][:, :coeff.shape[1]] = coeff[:, :10]
        order = {int(t): i for i, t in enumerate(targetids)}
        out = out[np.argsort([order[int(t)] for t in out["TARGETID"]])]
    if comm is not None:
        out = comm.bcast(out, root=0)
    return out
