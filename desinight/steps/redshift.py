"""redshift: fit every coadded spectrum of a tile's spectrograph -> redrock-like catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from desinight.sim.instrument import PSF_SIGMA_Y
from desinight.sim.templates import C_KMS

from . import io
from .zfit import fit_redshifts

OUT_COLUMNS = [("TARGETID", "i8"), ("FIBER", "i4"), ("Z", "f8"), ("ZERR", "f8"),
               ("ZWARN", "i8"), ("SPECTYPE", "U6"), ("SUBTYPE", "U8"), ("CHI2", "f8"),
               ("DELTACHI2", "f8"), ("NPIXELS", "i8")]


def redshift_coadd(coadd: Path, out: Path, res_kms: float | None = None) -> Path:
    flux = io.read_hdu(coadd, "FLUX")[0].astype(float)
    ivar = io.read_hdu(coadd, "IVAR")[0].astype(float)
    wave = io.read_hdu(coadd, "WAVELENGTH")[0].astype(float)
    fmap = io.read_hdu(coadd, "FIBERMAP")[0]
    if res_kms is None:    # line width after extraction + resampling, at mid-spectrum
        res_kms = 120.0
    zs = fit_redshifts(np.log(wave), flux, ivar, res_kms=res_kms)
    cat = np.zeros(len(zs), OUT_COLUMNS)
    cat["TARGETID"], cat["FIBER"] = fmap["TARGETID"], fmap["FIBER"]
    for name in zs.dtype.names:
        cat[name] = zs[name]
    cards = io.provenance("redshift", [coadd], {"RESKMS": float(res_kms)})
    return io.write_fits(out, [("REDSHIFTS", cat, cards), ("FIBERMAP", fmap, None)])
