"""Tiles, fibre assignment and truth: which object each fibre of a science exposure sees.

Magnitudes, redshifts and [OII] fluxes follow DESI's target classes (dark and bright programs
mixed on one tile, so every class is scored on every night): BGS r < 19.5 at z < 0.6, LRG with
z-band 18.5-21 at z 0.4-1.05, ELG g 22-23.5 at z 0.6-1.6 with [OII] 1e-17 .. 3e-16 erg/s/cm^2,
QSO g < 22.5 at z 0.6-3.5, stars of six types. Galaxy spectra come from stellar-population
synthesis (desinight.sim.sps). Galaxies have sizes: the fibre takes only part of
their light (desinight.sim.conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import sps
from . import templates as T
from .instrument import Preset

FIBER_AREA_ARCSEC2 = 1.86        # 1.5 arcsec diameter fibre (on sky, average plate scale)
#: mix of fibres on a spectrograph (the rest are targets in the ratios below)
SKY_FRAC, STD_FRAC = 0.2, 0.1
TARGET_MIX = (("ELG", 0.34), ("LRG", 0.24), ("QSO", 0.14), ("BGS", 0.14), ("STAR", 0.14))
STAR_TYPE_MIX = (("F", 0.25), ("G", 0.25), ("K", 0.2), ("M", 0.2), ("A", 0.05), ("WD", 0.05))


@dataclass
class Tile:
    tileid: int
    ra: float
    dec: float
    fiberassign: np.ndarray      # structured array (the FIBERASSIGN table)
    truth: np.ndarray            # structured array (truth rows of this tile)
    spectra: list                # Spectrum per fibre, None for sky fibres


FA_DTYPE = [("FIBER", "i4"), ("TARGETID", "i8"), ("TARGET_RA", "f8"), ("TARGET_DEC", "f8"),
            ("OBJTYPE", "U3"), ("TARGET_TYPE", "U4"), ("FLUX_G", "f4"), ("FLUX_R", "f4"),
            ("FLUX_Z", "f4")]
#: TRUESUBTYPE is the target class (BGS, LRG, ELG, QSO, STAR, STD, SKY); STARTYPE the stellar
#: type; OII_FLUX in erg/s/cm^2; HALF_LIGHT the half-light radius (arcsec, 0: point source)
TRUTH_DTYPE = [("TARGETID", "i8"), ("TRUETYPE", "U6"), ("TRUESUBTYPE", "U4"), ("TRUEZ", "f8"),
               ("MAG_G", "f4"), ("MAG_R", "f4"), ("MAG_Z", "f4"), ("FLUX_R", "f4"),
               ("OII_FLUX", "f8"), ("AV", "f4"), ("HALF_LIGHT", "f4"), ("STARTYPE", "U2"),
               ("TEFF", "f4"), ("TILEID", "i4"), ("FIBER", "i4")]


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
        spec, d = _draw(kind, rng)
        mags = {b: (T.ab_mag(spec, b) if spec is not None else 99.0) for b in "GRZ"}
        fa[i] = (i, tid, ra0 + rng.uniform(-1.5, 1.5) / np.cos(np.radians(dec0)),
                 dec0 + rng.uniform(-1.5, 1.5), "SKY" if kind == "SKY" else "TGT", kind,
                 0.0, 0.0, 0.0)
        truth[i] = (tid, d["type"], kind, d["z"], mags["G"], mags["R"], mags["Z"], 0.0,
                    d.get("oii", 0.0), d.get("AV", 0.0), d.get("size", 0.0),
                    d.get("stype", ""), d.get("teff", 0.0), tileid, i)
        if spec is not None:
            spec.half_light = d.get("size", 0.0)
        spectra.append(spec)
    cat = catalogue_fluxes(spectra)
    fa["FLUX_G"], fa["FLUX_R"], fa["FLUX_Z"] = cat.T
    truth["FLUX_R"] = cat[:, 1]
    return Tile(tileid, ra0, dec0, fa, truth, spectra)


#: The imaging catalogue's bands: the fibre map's FLUX_G/R/Z are what a real pipeline gets from
#: the Legacy Surveys (DECam g, r, z through speclite's published curves), not the simulator's
#: box bands (MAG_*, which only set the targets' depths).
CATALOGUE_FILTERS = ("decam2014-g", "decam2014-r", "decam2014-z")
_CATALOGUE_WAVE = np.arange(3300.0, 11000.0, 2.0)


def catalogue_fluxes(spectra: list) -> np.ndarray:
    """(n, 3) catalogue fluxes in nanomaggies (0 for sky fibres), g r z."""
    import speclite.filters

    filters = speclite.filters.load_filters(*CATALOGUE_FILTERS)
    out = np.zeros((len(spectra), len(CATALOGUE_FILTERS)))
    have = [i for i, s in enumerate(spectra) if s is not None]
    for k in range(0, len(have), 500):       # bounded memory on full-size tiles
        rows = have[k:k + 500]
        flam = np.array([spectra[i].evaluate(_CATALOGUE_WAVE) for i in rows]) * 1e-17
        maggies = filters.get_ab_maggies(flam, _CATALOGUE_WAVE)
        out[rows] = np.column_stack([maggies[n] for n in maggies.colnames]) * 1e9
    return out


def _fiber_kinds(nfiber: int, rng: np.random.Generator) -> list[str]:
    nsky, nstd = int(round(SKY_FRAC * nfiber)), max(3, int(round(STD_FRAC * nfiber)))
    rest = nfiber - nsky - nstd
    kinds = ["SKY"] * nsky + ["STD"] * nstd
    counts = [int(round(f * rest)) for _, f in TARGET_MIX]
    counts[0] += rest - sum(counts)
    for (k, _), c in zip(TARGET_MIX, counts):
        kinds += [k] * c
    return list(rng.permutation(kinds))


def counts_mag(rng: np.random.Generator, lo: float, hi: float, slope: float) -> float:
    """A magnitude from number counts dN/dm ~ 10^(slope m) on [lo, hi] (more faint objects)."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return float(np.log10(a + rng.uniform() * (b - a)) / slope)


def _draw(kind: str, rng: np.random.Generator):
    """(spectrum, truth fields) of one fibre."""
    if kind == "SKY":
        return None, {"type": "SKY", "z": 0.0}
    if kind in ("STD", "STAR"):
        if kind == "STD":
            stype, mag = "F", rng.uniform(16.5, 18.0)
        else:
            names, w = zip(*STAR_TYPE_MIX)
            stype, mag = str(rng.choice(names, p=np.array(w) / sum(w))), rng.uniform(16.5, 20.0)
        rv = rng.normal(0, 50)
        s, teff = T.draw_star(stype, rng, rv)
        return T.normalise_band(s, "R", mag), {"type": "STAR", "z": rv / T.C_KMS,
                                               "stype": stype, "teff": teff}
    if kind == "QSO":
        z = rng.uniform(0.6, 2.1) if rng.uniform() < 0.6 else rng.uniform(2.1, 3.5)
        s, _ = T.draw_qso(z, rng)
        return T.normalise_band(s, "G", counts_mag(rng, 19.5, 22.5, 0.35)), {"type": "QSO", "z": z}
    if kind == "BGS":
        mag = counts_mag(rng, 16.0, 19.5, 0.5)
        z = float(np.clip(0.05 + 0.1 * (mag - 16.0) + rng.normal(0, 0.06), 0.02, 0.6))
        s, par = sps.draw_galaxy("BGS", z, rng)
        T.normalise_band(s, "R", mag)
        size = rng.uniform(0.8, 2.0)
    elif kind == "LRG":
        z = rng.uniform(0.4, 1.05)
        mag = float(np.clip(19.0 + 2.2 * (z - 0.4) + rng.normal(0, 0.35), 18.5, 21.0))
        s, par = sps.draw_galaxy("LRG", z, rng)
        T.normalise_band(s, "Z", mag)
        size = rng.uniform(0.4, 1.0)
    else:
        z = rng.uniform(0.6, 1.6)
        s, par = sps.draw_galaxy("ELG", z, rng)
        T.normalise_band(s, "G", counts_mag(rng, 22.0, 23.5, 0.4))
        log_oii = float(np.clip(rng.normal(-16.1, 0.3), -17.0, np.log10(3e-16)))
        T.set_oii(s, 10 ** (log_oii + 17))
        size = rng.uniform(0.25, 0.7)
    return s, {"type": "GALAXY", "z": z, "oii": T.oii_flux(s) * 1e-17, "AV": par["AV"],
               "size": size, "sps": par}
