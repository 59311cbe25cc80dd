"""Observing conditions and the light path of one science exposure, as the simulator's truth.

What the pipeline's nominal model (desinight.desimodel.throughput) does not contain:
- the true instrument departs from the design by a smooth per-camera curve, and every exposure
  adds a chromatic tilt/curvature per camera (>= 10% peak to peak across the arm);
- atmospheric extinction (Rayleigh + aerosol) grows with airmass; clouds are grey;
- the fibre takes the part of a target's light inside 1.5 arcsec, which depends on the seeing
  (FWHM ~ lambda^-0.2, so the loss is chromatic) and on the galaxy's size;
- the sky: desinight.sim.sky.
Every draw is deterministic from (seed, EXPID, camera), so the truth table written before the
images and the rendering agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import instrument as I

FIBER_RADIUS = 0.75            # arcsec
NOMINAL_SEEING = 1.1           # arcsec FWHM at 6400 A
ELG_SIZE = 0.45                # half-light radius of the reference source of EFFTIME (arcsec)


@dataclass(frozen=True)
class Conditions:
    """Knobs of a simulated night's science exposures; None draws the value per exposure."""
    exptime: float | None = None      # seconds per science exposure (default: the preset's)
    seeing: float | None = None       # FWHM arcsec at 6400 A (default: ~1.1, log-normal)
    moon: float | None = None         # illuminated fraction 0-1 (default 0: dark time)
    airmass: float | None = None      # (default: uniform 1.0-1.5)
    #: the tile's goal of effective time (s): each exposure's EXPTIME is set for its conditions,
    #: as DESI's exposure-time calculator does, so the tile's EFFTIME sums to it
    efftime: float | None = None


def draw(cond: Conditions, rng: np.random.Generator) -> dict:
    seeing = cond.seeing if cond.seeing is not None else \
        float(np.clip(NOMINAL_SEEING * np.exp(rng.normal(0, 0.15)), 0.7, 2.0))
    airmass = cond.airmass if cond.airmass is not None else float(rng.uniform(1.0, 1.5))
    moon = cond.moon if cond.moon is not None else 0.0
    return {"seeing": float(seeing), "airmass": float(airmass), "moon": float(moon),
            "moonsep": float(rng.uniform(40.0, 110.0)),
            "flex_y": float(np.clip(rng.normal(0, 0.15), -0.4, 0.4)),   # rows, vs the arcs
            "flex_x": float(np.clip(rng.normal(0, 0.05), -0.15, 0.15))}  # columns


def extinction(w) -> np.ndarray:
    """Kitt Peak-like extinction, mag per airmass: Rayleigh + aerosol."""
    x = np.asarray(w, float) / 5500.0
    return 0.06 * x**-4.0 + 0.05 * x**-1.3


def atmosphere(w, airmass: float, transparency: float) -> np.ndarray:
    """Transmission relative to airmass 1 (the nominal throughput's convention), clouds grey."""
    return transparency * 10 ** (-0.4 * extinction(w) * (airmass - 1.0))


def fiber_acceptance(w, seeing: float, half_light: float = 0.0) -> np.ndarray:
    """Fraction of a source's light inside the fibre: Gaussian seeing (FWHM ~ lambda^-0.2)
    convolved with a Gaussian of the source's half-light radius, within FIBER_RADIUS."""
    fwhm = seeing * (np.asarray(w, float) / 6400.0) ** -0.2
    var = (fwhm / 2.3548) ** 2 + (half_light / 1.1774) ** 2
    return 1.0 - np.exp(-FIBER_RADIUS**2 / (2 * var))


def _arm_t(w, arm: str) -> np.ndarray:
    lo, hi = I.ARM_RANGES[arm]
    return (np.asarray(w, float) - (lo + hi) / 2) / ((hi - lo) / 2)


def instrument_curve(w, camera: str) -> np.ndarray:
    """The true camera throughput relative to the design: fixed per camera, smooth, +-5%."""
    rng = np.random.default_rng([ord(camera[0]), int(camera[1:]), 4242])
    a, b = rng.uniform(-0.05, 0.05, 2)
    t = _arm_t(w, camera[0])
    return 1 + a * t + b * (1.5 * t**2 - 0.5)


def exposure_tilt(w, camera: str, seed: int, expid: int) -> np.ndarray:
    """Chromatic change of one exposure and camera: a tilt of 10-18% peak to peak across the
    arm plus a curvature (dust on the corrector, fibre FRD, CCD temperature)."""
    rng = np.random.default_rng([seed, expid, ord(camera[0]), int(camera[1:]), 4343])
    a = rng.uniform(0.05, 0.09) * rng.choice([-1, 1])
    b = rng.uniform(-0.04, 0.04)
    t = _arm_t(w, camera[0])
    return 1 + a * t + b * (1.5 * t**2 - 0.5)


def true_throughput(w, camera: str, exp, seed: int) -> np.ndarray:
    """Design x true camera x exposure tilt x atmosphere (no fibre acceptance)."""
    return I.throughput(w, camera[0]) * instrument_curve(w, camera) * \
        exposure_tilt(w, camera, seed, exp.expid) * atmosphere(w, exp.airmass, exp.transparency)


def efftime(exp, sky_r_rel: float) -> float:
    """DESI-like effective time of an exposure for a faint ELG-sized source: exptime x
    (fibre fraction / nominal)^2 x transparency^2 x atmosphere^2 / (sky / nominal dark sky)."""
    ff = fiber_acceptance(6400.0, exp.seeing, ELG_SIZE) / \
        fiber_acceptance(6400.0, NOMINAL_SEEING, ELG_SIZE)
    atm = atmosphere(6400.0, exp.airmass, exp.transparency)
    return float(exp.exptime * (ff * atm) ** 2 / sky_r_rel)
