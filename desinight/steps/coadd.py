"""coadd: one spectrum per target of a tile, across exposures and arms, on a ln(lambda) grid.

Each cframe fibre (its own wavelengths per row) is linearly interpolated onto the common grid
with its variance propagated ((1-t)^2 v1 + t^2 v2; a grid pixel next to a masked row is masked),
then all exposures and cameras are averaged with inverse-variance weights. The uniform
ln(lambda) grid is what the redshift fitter needs (a redshift is a shift on it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from desinight.sim.instrument import ARM_RANGES

from . import io

DLNW = 3e-4                       # grid step in ln(lambda): ~90 km/s
LNWAVE = np.arange(np.log(ARM_RANGES["b"][0]), np.log(ARM_RANGES["z"][1]), DLNW)


def resample(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
             grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One fibre onto ``grid`` (same units as wave): flux and ivar, ivar 0 outside/masked."""
    j = np.searchsorted(wave, grid) - 1
    inside = (j >= 0) & (j < wave.size - 1)
    j = np.clip(j, 0, wave.size - 2)
    t = (grid - wave[j]) / (wave[j + 1] - wave[j])
    f = (1 - t) * flux[j] + t * flux[j + 1]
    iv1, iv2 = ivar[j], ivar[j + 1]
    good = inside & (iv1 > 0) & (iv2 > 0)
    var = (1 - t) ** 2 / np.where(iv1 > 0, iv1, 1) + t**2 / np.where(iv2 > 0, iv2, 1)
    return np.where(good, f, 0.0), np.where(good, 1.0 / var, 0.0)


def coadd_tile(cframes: list[Path], fa: np.ndarray, spectro: int, nfiber: int, out: Path,
               config: dict | None = None) -> Path:
    """Coadd every fibre of one spectrograph over the given cframes (any arms/exposures)."""
    grid = np.exp(LNWAVE)
    num = np.zeros((nfiber, grid.size))
    den = np.zeros((nfiber, grid.size))
    expids = set()
    for path in cframes:
        flux, hdr = io.read_hdu(path, "FLUX")
        ivar = io.read_hdu(path, "IVAR")[0]
        wave = io.read_hdu(path, "WAVELENGTH")[0]
        expids.add(int(hdr.get("EXPID", -1)))
        if wave.ndim == 1:            # frames on a common camera grid
            wave = np.broadcast_to(wave, flux.shape)
        for f in range(flux.shape[0]):
            fl, iv = resample(wave[f].astype(float), flux[f].astype(float),
                              ivar[f].astype(float), grid)
            num[f] += fl * iv
            den[f] += iv
    cflux = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    sel = fa["FIBER"] // nfiber == spectro
    fmap = fa[sel][np.argsort(fa["FIBER"][sel])]
    if len(fmap) != nfiber:
        raise ValueError(f"fiberassign has {len(fmap)} fibres for spectrograph {spectro}, "
                         f"frames have {nfiber}")
    cards = io.provenance("coadd", list(cframes), config) + [
        {"name": "SPECGRPH", "value": spectro}, {"name": "NEXP", "value": len(expids)},
        {"name": "DLNWAVE", "value": DLNW}, {"name": "BUNIT", "value": "1e-17 erg/(s cm2 Angstrom)"}]
    return io.write_fits(out, [("FLUX", cflux.astype(np.float32), cards),
                               ("IVAR", den.astype(np.float32), None),
                               ("MASK", (den == 0).astype(np.int16), None),
                               ("WAVELENGTH", grid, None), ("FIBERMAP", fmap, None)])
