"""fiberflat: fibre-to-fibre throughput (x wavelength) from flat-lamp frames; nightly average.

The lamp lights every fibre alike, so each fibre's flux density divided by the median over fibres
(evaluated at that fibre's own wavelengths) is its relative throughput.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io


def density(flux, ivar, wave):
    """Electrons per row -> electrons per Angstrom (and its ivar)."""
    dldy = np.gradient(wave, axis=1)
    return flux / dldy, ivar * dldy**2


def fiberflat_from_frame(frame: Path, cam: str, out: Path) -> Path:
    flux, hdr = io.read_hdu(frame, "FLUX")
    ivar = io.read_hdu(frame, "IVAR")[0]
    wave = io.read_hdu(frame, "WAVELENGTH")[0]
    d, div = density(flux.astype(float), ivar.astype(float), wave)
    grid = wave[wave.shape[0] // 2]
    on_grid = np.array([np.interp(grid, w, v) for w, v in zip(wave, d)])
    mean = np.median(on_grid, axis=0)
    m = np.array([np.interp(w, grid, mean) for w in wave])
    ff = d / np.maximum(m, 1e-9)
    ffivar = div * m**2
    bad = (m <= 0) | (ivar <= 0)
    ff[bad], ffivar[bad] = 1.0, 0.0
    cards = [{"name": "CAMERA", "value": cam}] + io.provenance("fiberflat", [frame])
    return io.write_fits(out, [("FIBERFLAT", ff.astype(np.float32), cards),
                               ("IVAR", ffivar.astype(np.float32), None),
                               ("WAVELENGTH", wave, None)])


def fiberflatnight(files: list[Path], cam: str, out: Path) -> Path:
    """Inverse-variance weighted mean of the night's fiberflats."""
    if not files:
        raise ValueError(f"no fiberflats for {cam}")
    ffs = np.array([io.read_hdu(f, "FIBERFLAT")[0] for f in files], float)
    ivs = np.array([io.read_hdu(f, "IVAR")[0] for f in files], float)
    wsum = ivs.sum(0)
    ff = np.where(wsum > 0, (ffs * ivs).sum(0) / np.maximum(wsum, 1e-30), 1.0)
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NFLAT", "value": len(files)}]
    return io.write_fits(out, [("FIBERFLAT", ff.astype(np.float32),
                                cards + io.provenance("fiberflatnight", files)),
                               ("IVAR", wsum.astype(np.float32), None),
                               ("WAVELENGTH", io.read_hdu(files[0], "WAVELENGTH")[0], None)])
