"""coadd + redshift: per tile and spectrograph, combine exposures, then chi^2 template fitting.

Coadd: inverse-variance mean of the cframes of each arm (they share the camera's wavelength
grid).  Redshift: for every class (GALAXY, QSO, STAR) and every z of a grid, the best linear
combination of the class's basis vectors (built from the same physical components as the
simulator's library, as redrock's templates are PCA bases of its simulations) is found for all
targets at once; the coarse minimum is refined on a fine grid with a parabola (Z, ZERR).
DELTACHI2 is the chi^2 gap to the best solution more than 1000 km/s away (any class); ZWARN
bit 2 (SMALL_DELTA_CHI2) is set when it is below 9, bit 9 (NODATA) when a target has no data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from desinight.sim import templates as T

from . import io

ZW_SMALL_DELTA_CHI2 = 4
ZW_NODATA = 512
DELTACHI2_MIN = 9.0
RES_KMS = 120.0           # resolution of the coadded spectra (small preset: ~2.4 A per row)
REST = np.exp(np.arange(np.log(700.0), np.log(11500.0), 1e-4))
CLASSES = {
    "GALAXY": (0.0, 1.7, 6e-4),
    "QSO": (0.3, 3.3, 6e-4),
}
STAR_TEFF = np.arange(3500.0, 10001.0, 500.0)


def coadd(cframes: dict[str, list[Path]]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """arm -> (wave, flux (nfib, n), ivar) inverse-variance mean over exposures."""
    out = {}
    for arm, files in cframes.items():
        if not files:
            continue
        fl = np.array([io.read_hdu(f, "FLUX")[0] for f in files], float)
        iv = np.array([io.read_hdu(f, "IVAR")[0] for f in files], float)
        wsum = iv.sum(0)
        out[arm] = (io.read_hdu(files[0], "WAVELENGTH")[0],
                    np.where(wsum > 0, (fl * iv).sum(0) / np.maximum(wsum, 1e-30), 0.0), wsum)
    return out


def _fit_grid(wave, flux, ivar, basis_rest, zs):
    """chi2 (ntarg, nz) of the best linear combination of basis_rest (nb, len(REST)) at each z."""
    nt = flux.shape[0]
    chi2 = np.zeros((nt, zs.size))
    fw = flux * ivar
    f2 = (flux * fw).sum(1)
    for k, z in enumerate(zs):
        rest = wave / (1 + z)
        B = np.array([np.interp(rest, REST, b, left=0.0, right=0.0) for b in basis_rest])
        BW = B[None, :, :] * ivar[:, None, :]                  # (nt, nb, npix)
        M = BW @ B.T                                           # (nt, nb, nb)
        v = fw @ B.T                                           # (nt, nb)
        M += np.eye(B.shape[0])[None] * 1e-9 * np.maximum(np.trace(M, axis1=1, axis2=2), 1e-30)[:, None, None]
        a = np.linalg.solve(M, v[..., None])[..., 0]
        chi2[:, k] = f2 - (a * v).sum(1)
    return chi2


def _parabola(zs, c):
    i = int(np.argmin(c))
    i = min(max(i, 1), zs.size - 2)
    x, y = zs[i - 1:i + 2], c[i - 1:i + 2]
    A = np.polyfit(x - x[1], y, 2)
    if A[0] <= 0:
        return float(zs[i]), float(y[1]), float(zs[1] - zs[0])
    dz = -A[1] / (2 * A[0])
    dz = float(np.clip(dz, -(zs[1] - zs[0]), zs[1] - zs[0]))
    return float(x[1] + dz), float(np.polyval(A, dz)), float(np.sqrt(1.0 / A[0]))


def fit_redshifts(wave, flux, ivar) -> dict[str, np.ndarray]:
    """wave (npix,), flux/ivar (nt, npix) of the coadded targets -> catalogue columns."""
    nt = flux.shape[0]
    sols = []   # (class, zs, chi2 (nt, nz))
    for cls, (z0, z1, dl) in CLASSES.items():
        zs = np.exp(np.arange(np.log1p(z0), np.log1p(z1), dl)) - 1
        basis = T.galaxy_basis(REST, RES_KMS) if cls == "GALAXY" else T.qso_basis(REST, RES_KMS)
        sols.append((cls, zs, _fit_grid(wave, flux, ivar, basis, zs), basis))
    zs_star = np.linspace(-0.002, 0.002, 9)
    star_chi = np.array([_fit_grid(wave, flux, ivar, T.star_basis(REST, t, RES_KMS), zs_star)
                         for t in STAR_TEFF])                 # (nteff, nt, nz)
    sols.append(("STAR", zs_star, star_chi.min(0), None))
    out = {k: np.zeros(nt) for k in ("Z", "ZERR", "CHI2", "DELTACHI2")}
    out["ZWARN"] = np.zeros(nt, np.int64)
    out["SPECTYPE"] = np.array(["GALAXY"] * nt, dtype="U6")
    for t in range(nt):
        if not np.any(ivar[t] > 0):
            out["ZWARN"][t] = ZW_NODATA
            continue
        best = min(((c[t].min(), cls, zs, c[t], b) for cls, zs, c, b in sols), key=lambda s: s[0])
        chi_min, cls, zs, c, basis = best
        zc = zs[int(np.argmin(c))]
        if basis is not None:   # refine on a fine grid around the coarse minimum
            fine = np.linspace(zc - 1.5e-3 * (1 + zc), zc + 1.5e-3 * (1 + zc), 31)
            cf = _fit_grid(wave, flux[t:t + 1], ivar[t:t + 1], basis, fine)[0]
            z, chi_min, zerr = _parabola(fine, cf)
        else:
            z, zerr = float(zc), 1e-4
        # the best other solution: any class, more than 1000 km/s (0.0033 (1+z)) away
        other = np.inf
        for cls2, zs2, c2, _ in sols:
            far = np.abs(zs2 - z) > 0.0033 * (1 + z)
            if cls2 != cls or far.any():
                sel = c2[t][far] if cls2 == cls else c2[t]
                if sel.size:
                    other = min(other, float(sel.min()))
        out["Z"][t], out["ZERR"][t], out["CHI2"][t] = z, zerr, chi_min
        out["DELTACHI2"][t] = other - chi_min
        out["SPECTYPE"][t] = cls
        if out["DELTACHI2"][t] < DELTACHI2_MIN:
            out["ZWARN"][t] |= ZW_SMALL_DELTA_CHI2
    return out


def redshift_spectrograph(cframes: dict[str, list[Path]], fa: np.ndarray, spectro: int,
                          coadd_out: Path, redrock_out: Path) -> Path:
    co = coadd(cframes)
    if not co:
        raise FileNotFoundError(f"spectrograph {spectro}: no cframes")
    nfib = next(iter(co.values()))[1].shape[0]
    fam = fa[fa["FIBER"] // nfib == spectro]
    fam = fam[np.argsort(fam["FIBER"])]
    inputs = [f for fs in cframes.values() for f in fs]
    hdus = [("FIBERMAP", fam, io.provenance("coadd", inputs))]
    for arm, (w, f, i) in co.items():
        hdus += [(f"{arm.upper()}_WAVELENGTH", w, None), (f"{arm.upper()}_FLUX", f.astype(np.float32), None),
                 (f"{arm.upper()}_IVAR", i.astype(np.float32), None)]
    io.write_fits(coadd_out, hdus)
    targ = np.char.strip(fam["OBJTYPE"].astype(str)) != "SKY"
    fib = (fam["FIBER"] % nfib)[targ]
    wave = np.concatenate([co[a][0] for a in co])
    flux = np.concatenate([co[a][1][fib] for a in co], axis=1)
    ivar = np.concatenate([co[a][2][fib] for a in co], axis=1)
    res = fit_redshifts(wave, flux, ivar)
    cat = np.zeros(fib.size, [("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"),
                              ("SPECTYPE", "U6"), ("DELTACHI2", "f8"), ("CHI2", "f8"), ("FIBER", "i4")])
    cat["TARGETID"] = fam["TARGETID"][targ]
    cat["FIBER"] = fam["FIBER"][targ]
    for k in ("Z", "ZERR", "ZWARN", "SPECTYPE", "DELTACHI2", "CHI2"):
        cat[k] = res[k]
    return io.write_fits(redrock_out, [("REDSHIFTS", cat, io.provenance("redshift", [coadd_out]))])
