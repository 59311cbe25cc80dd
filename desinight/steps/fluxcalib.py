"""stdstars + fluxcalib: from electrons per Angstrom to 1e-17 erg/s/cm^2/A.

The shape of the calibration comes from the instrument's throughput model (sim.instrument, the
desimodel stand-in); the standard stars of the tile fix its grey scale (aperture loss, sky
transparency): per spectrograph, the median over stars of the observed r-arm flux density over the
density implied by their catalogue r-band flux.  Fitting stellar templates to the stars (colour
terms per wavelength) is not done yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from desinight import desimodel as I

from . import io

R_PIVOT = 6400.0  # A, where the r-band flux density is compared


def nmgy_to_flambda(flux_nmgy: np.ndarray, wave: float) -> np.ndarray:
    """AB nanomaggies -> f_lambda in 1e-17 erg/s/cm^2/A at `wave`."""
    fnu = np.asarray(flux_nmgy, float) * 3.631e-29
    return fnu * 2.99792458e18 / wave**2 / 1e-17


def model_calib(arm: str, wave: np.ndarray, exptime: float) -> np.ndarray:
    """Electrons per A per (1e-17 erg/s/cm^2/A) from the throughput model."""
    return 1e-17 * I.TEL_AREA_CM2 * exptime * wave / I.HC_ERG_A * I.throughput(wave, arm)


def stdstars_scale(sframes: list[Path], fa: np.ndarray, spectro: int, out: Path) -> Path:
    """Grey scale of one spectrograph from its standard stars in the tile's r-arm sframes."""
    ratios = []
    for path in sframes:
        flux, hdr = io.read_hdu(path, "FLUX")
        wave = io.read_hdu(path, "WAVELENGTH")[0]
        ivar = io.read_hdu(path, "IVAR")[0]
        nfib = flux.shape[0]
        cal = model_calib("r", wave, float(hdr["EXPTIME"]))
        band = np.abs(wave - R_PIVOT) < 150
        for row in fa[(fa["FIBER"] // nfib == spectro) & (np.char.strip(fa["TARGET_TYPE"].astype(str)) == "STD")]:
            f = int(row["FIBER"]) % nfib
            ok = band[f] & (ivar[f] > 0)
            if ok.sum() < 10:
                continue
            obs = np.median(flux[f, ok] / cal[f, ok])
            ratios.append(obs / nmgy_to_flambda(row["FLUX_R"], R_PIVOT))
    if len(ratios) < 2:
        raise ValueError(f"spectrograph {spectro}: {len(ratios)} usable standard stars")
    scale = float(np.median(ratios))
    cards = [{"name": "SCALE", "value": scale, "comment": "observed / catalogue, grey"},
             {"name": "NSTD", "value": len(ratios)}] + io.provenance("stdstars", sframes)
    return io.write_fits(out, [("STDSTARS", np.array(ratios, dtype=[("RATIO", "f8")]), cards)])


def resample(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, grid: np.ndarray):
    """Linear interpolation of each fibre onto grid, propagating the variance."""
    nf = flux.shape[0]
    out_f = np.zeros((nf, grid.size), np.float32)
    out_i = np.zeros((nf, grid.size), np.float32)
    for f in range(nf):
        w = wave[f]
        j = np.clip(np.searchsorted(w, grid) - 1, 0, w.size - 2)
        t = (grid - w[j]) / (w[j + 1] - w[j])
        ok = (t >= 0) & (t <= 1) & (ivar[f, j] > 0) & (ivar[f, j + 1] > 0)
        v = (1 - t) ** 2 / np.maximum(ivar[f, j], 1e-30) + t**2 / np.maximum(ivar[f, j + 1], 1e-30)
        out_f[f] = np.where(ok, (1 - t) * flux[f, j] + t * flux[f, j + 1], 0.0)
        out_i[f] = np.where(ok, 1.0 / v, 0.0)
    return out_f, out_i


def fluxcalib_camera(sframe: Path, stdstars: Path, cam: str, calib_out: Path, cframe_out: Path):
    flux, hdr = io.read_hdu(sframe, "FLUX")
    ivar = io.read_hdu(sframe, "IVAR")[0]
    wave = io.read_hdu(sframe, "WAVELENGTH")[0]
    scale = float(io.read_hdu(stdstars, "STDSTARS")[1]["SCALE"])
    cal = model_calib(cam[0], wave, float(hdr["EXPTIME"])) * scale
    io.write_fits(calib_out, [("CALIB", cal.astype(np.float32),
                               [{"name": "SCALE", "value": scale}] +
                               io.provenance("fluxcalib", [sframe, stdstars])),
                              ("WAVELENGTH", wave, None)])
    nfib, ny = flux.shape
    grid = I.camera_wave_grid(I.preset_for_shape(ny, _nx_for(nfib, ny)), cam[0])
    cf, ci = resample(wave, flux / cal, ivar * cal**2, grid)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "1e-17 erg/(s cm2 Angstrom)"}]
    cards += io.provenance("fluxcalib", [sframe, stdstars])
    return io.write_fits(cframe_out, [("FLUX", cf, cards), ("IVAR", ci, None),
                                      ("MASK", (ci == 0).astype(np.int16), None),
                                      ("WAVELENGTH", grid, None)])


def _nx_for(nfib: int, ny: int) -> int:
    for p in I.PRESETS.values():
        if p.nfiber == nfib and p.ny == ny:
            return p.nx
    raise ValueError(f"no preset with {nfib} fibres and {ny} rows")
