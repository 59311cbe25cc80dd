"""coadd + redshift: per tile and spectrograph, combine exposures, then chi^2 template fitting.

Coadd: inverse-variance mean of the cframes of each arm (they share the camera's wavelength
grid), written per arm like DESI's coadds. Redshift: the arms are merged onto one uniform
ln(lambda) grid and fitted by steps/zfit.py: for every class (GALAXY, QSO, STAR per Teff) and
every shift of the grid, the best linear combination of the class's basis vectors (built from
the same physical components as the simulator's library, as redrock's templates are PCA bases
of its simulations), all targets and shifts at once with FFT cross-correlations; each local
minimum is refined with a parabola (Z, ZERR). DELTACHI2 is the chi^2 gap to the best other
local minimum more than 1000 km/s away (any class); ZWARN bit 2 (SMALL_DELTA_CHI2) when it is
below 9, bit 5 (Z_FITLIMIT) at the edge of the range, bit 9 (NODATA) when there is no data.

Why zfit rather than a coarse z grid refined around the global minimum: a 180 km/s grid
straddles the narrow chi^2 dip of a single [OII] line, so a wrong redshift could win
unflagged (seeds 1 and 5 of the small night: 1 of 40 targets each, above the 2% limit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import coadd as coadd_mod
from . import io, zfit

RES_KMS = 120.0           # resolution of the coadded spectra (small preset: ~2.4 A per row)


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


def fit_redshifts(co: dict, fib: np.ndarray) -> np.ndarray:
    """Fit the coadded arms of fibres ``fib``: merged onto one ln(lambda) grid (ivar-weighted in
    the arm overlaps), then the FFT chi^2 scan of steps/zfit.py (90 km/s steps, every local
    minimum refined, DELTACHI2 between distinct local minima)."""
    grid = np.exp(coadd_mod.LNWAVE)
    num = np.zeros((fib.size, grid.size))
    den = np.zeros((fib.size, grid.size))
    for w, f, i in co.values():
        for k, fb in enumerate(fib):
            fl, iv = coadd_mod.resample(w.astype(float), f[fb].astype(float),
                                        i[fb].astype(float), grid)
            num[k] += fl * iv
            den[k] += iv
    flux = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    return zfit.fit_redshifts(coadd_mod.LNWAVE, flux, den, res_kms=RES_KMS)


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
                 (f"{arm.upper()}_IVAR", i.astype(np.float32), None),
                 (f"{arm.upper()}_MASK", (i <= 0).astype(np.int16), None)]
    io.write_fits(coadd_out, hdus)
    targ = np.char.strip(fam["OBJTYPE"].astype(str)) != "SKY"
    fib = (fam["FIBER"] % nfib)[targ]
    res = fit_redshifts(co, fib)
    cat = np.zeros(fib.size, [("TARGETID", "i8"), ("Z", "f8"), ("ZERR", "f8"), ("ZWARN", "i8"),
                              ("SPECTYPE", "U6"), ("SUBTYPE", "U8"), ("DELTACHI2", "f8"),
                              ("CHI2", "f8"), ("NPIXELS", "i8"), ("FIBER", "i4")])
    cat["TARGETID"] = fam["TARGETID"][targ]
    cat["FIBER"] = fam["FIBER"][targ]
    for k in ("Z", "ZERR", "ZWARN", "SPECTYPE", "SUBTYPE", "DELTACHI2", "CHI2", "NPIXELS"):
        cat[k] = res[k]
    return io.write_fits(redrock_out, [("REDSHIFTS", cat, io.provenance("redshift", [coadd_out]))])
