"""Tiles, fibre assignment, truth and the sky: what each fibre of a science exposure sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import templates as T
from .instrument import Preset

FIBER_AREA_ARCSEC2 = 1.86        # 1.5 arcsec diameter fibre (on sky, average plate scale)
#: mix of fibres on a spectrograph (the rest are galaxies/QSO/stars in the ratios below)
SKY_FRAC, STD_FRAC = 0.2, 0.1
TARGET_MIX = (("ELG", 0.38), ("LRG", 0.30), ("QSO", 0.16), ("STAR", 0.16))


@dataclass
class Tile:
    tileid: int
    ra: float
    dec: float
    fiberassign: np.ndarray      # structured array (the FIBERASSIGN table)
    truth: np.ndarray            # structured array (truth rows of this tile)
    spectra: list                # Spectrum per fibre, None for sky fibres


FA_DTYPE = [("FIBER", "i4"), ("TARGETID", "i8"), ("TARGET_RA", "f8"), ("TARGET_DEC", "f8"),
            ("OBJTYPE", "U3"), ("TARGET_TYPE", "U4"), ("FLUX_R", "f4")]
TRUTH_DTYPE = [("TARGETID", "i8"), ("TRUETYPE", "U6"), ("TRUESUBTYPE", "U4"), ("TRUEZ", "f8"),
               ("MAG_R", "f4"), ("FLUX_R", "f4"), ("TEFF", "f4"), ("TILEID", "i4"), ("FIBER", "i4")]


def make_tile(p: Preset, tileid: int, rng: np.random.Generator) -> Tile:
    """Assign every fibre of every spectrograph and draw its object."""
    n = p.nspec * p.nfiber
    ra0, dec0 = rng.uniform(0, 360), rng.uniform(-10, 70)
    fa = np.zeros(n, FA_DTYPE)
    truth = np.zeros(n, TRUTH_DTYPE)
    spectra: list = []
    kinds = [k for _ in range(p.nspec) for k in _fiber_kinds(p.nfiber, rng)]
    for i in range(n):
        kind = kinds[i]
        tid = 10**12 + tileid * 100000 + i
        spec, ttype, z, mag, teff = _draw(kind, rng)
        fa[i] = (i, tid, ra0 + rng.uniform(-1.5, 1.5) / np.cos(np.radians(dec0)),
                 dec0 + rng.uniform(-1.5, 1.5), "SKY" if kind == "SKY" else "TGT", kind,
                 0.0 if kind == "SKY" else 10 ** ((22.5 - mag) / 2.5))
        truth[i] = (tid, ttype, kind, z, mag, fa[i]["FLUX_R"], teff, tileid, i)
        spectra.append(spec)
    return Tile(tileid, ra0, dec0, fa, truth, spectra)


def _fiber_kinds(nfiber: int, rng: np.random.Generator) -> list[str]:
    nsky, nstd = int(round(SKY_FRAC * nfiber)), max(3, int(round(STD_FRAC * nfiber)))
    rest = nfiber - nsky - nstd
    kinds = ["SKY"] * nsky + ["STD"] * nstd
    counts = [int(round(f * rest)) for _, f in TARGET_MIX]
    counts[0] += rest - sum(counts)
    for (k, _), c in zip(TARGET_MIX, counts):
        kinds += [k] * c
    return list(rng.permutation(kinds))


def _draw(kind: str, rng: np.random.Generator):
    """(spectrum, TRUETYPE, z, r mag, Teff) of one fibre."""
    if kind == "SKY":
        return None, "SKY", 0.0, 99.0, 0.0
    if kind in ("STD", "STAR"):
        teff = float(rng.choice(T.STD_TEFF_GRID if kind == "STD" else T.STAR_TEFF_GRID))
        mag = rng.uniform(16.5, 18.0) if kind == "STD" else rng.uniform(17.0, 19.5)
        rv = rng.normal(0, 40)
        return T.normalise(T.star(teff, rv), mag), "STAR", rv / T.C_KMS, mag, teff
    if kind == "QSO":
        z = rng.uniform(0.5, 3.0)
        mag = rng.uniform(19.5, 21.3)
        return T.normalise(T.qso(z, rng), mag), "QSO", z, mag, 0.0
    if kind == "LRG":
        z = rng.uniform(0.3, 1.0)
        mag = rng.uniform(19.5, 20.8) + 1.5 * (z - 0.3)
    else:
        z = rng.uniform(0.6, 1.6)
        mag = rng.uniform(21.0, 22.3)
    return T.normalise(T.galaxy(kind, z, rng), mag), "GALAXY", z, mag, 0.0


# --- the night sky ------------------------------------------------------------------------------
_SKY_LINES = [(5577.34, 110.0), (5889.95, 25.0), (5895.92, 20.0), (6300.30, 60.0),
              (6363.78, 20.0)]


def sky_spectrum() -> T.Spectrum:
    """Dark-sky continuum (~21.5 mag/arcsec^2 in r) plus OI, NaD and an OH forest, per fibre."""
    rng = np.random.default_rng(424242)           # fixed: the sky's lines are the same every night
    oh_w = np.sort(rng.uniform(6800, 9900, 55))
    oh_f = rng.uniform(15, 120, 55) * (1 + (oh_w - 6800) / 3000)
    level = T.r_mag_to_flux(21.5) * FIBER_AREA_ARCSEC2

    def cont(w):
        w = np.asarray(w, float)
        return level * (w / 6400.0) ** 1.0

    s = T.Spectrum(0.0, [cont], [1.0])
    s.lines = [(w, f * level, 15.0) for w, f in list(_SKY_LINES) + list(zip(oh_w, oh_f))]
    return s
