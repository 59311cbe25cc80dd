"""The night sky of the simulator: dark continuum, moon, airglow lines (OH, [OI], NaD, city Hg).

The OH wavelengths are real (air, A) from the Meinel bands as catalogued by Osterbrock et al.
(1996) and Rousselot et al. (2000); the intensities are rounded relative values, rising into
the near infrared as the real ones do. Nothing here is shared with the pipeline, whose sky
model comes from the sky fibres alone.

Variation: the dark continuum level per night; every line group (OH by band, [OI], NaD) per
exposure; the line and continuum scale per fibre (a few %, as fibre-to-fibre sky differences
across a focal plane); moon light (scattered sunlight: a bluer solar spectrum with Fraunhofer
lines) by phase and separation; more sky towards the horizon.
"""

from __future__ import annotations

import numpy as np

from . import templates as T

#: OH lines: (air A, relative intensity), grouped by region (each group varies as one per exposure)
OH_GROUPS = [
    [(6257.96, 10), (6287.43, 15), (6329.75, 8), (6465.46, 8), (6498.73, 15), (6533.04, 25),
     (6553.62, 20), (6577.18, 12), (6596.64, 15), (6604.28, 8)],
    [(6827.46, 10), (6834.01, 25), (6863.96, 40), (6871.07, 10), (6912.62, 30), (6923.22, 40),
     (6939.52, 40), (6948.94, 30), (6969.93, 20), (6978.45, 15), (7276.41, 30), (7284.44, 30),
     (7303.72, 25), (7316.28, 60), (7329.15, 60), (7340.89, 60), (7358.67, 50), (7369.25, 40),
     (7386.00, 15), (7392.20, 15)],
    [(7524.10, 10), (7571.75, 15), (7750.64, 70), (7794.11, 60), (7821.50, 70), (7841.27, 20),
     (7853.31, 50), (7913.71, 60), (7949.17, 70), (7964.65, 80), (7993.33, 90), (8025.81, 60),
     (8061.51, 30)],
    [(8288.42, 50), (8298.58, 80), (8344.60, 150), (8352.79, 40), (8382.40, 150), (8399.17, 150),
     (8415.23, 120), (8430.17, 150), (8465.36, 130), (8493.39, 110), (8504.98, 60), (8548.80, 30)],
    [(8827.10, 180), (8836.70, 60), (8885.85, 200), (8903.11, 100), (8919.64, 140),
     (8943.40, 200), (8958.08, 140), (8988.56, 200), (9001.43, 200), (9037.00, 100), (9049.60, 100)],
    [(9375.98, 250), (9419.74, 180), (9439.67, 250), (9458.53, 200), (9476.90, 300),
     (9505.60, 200), (9520.10, 150), (9567.10, 300), (9621.00, 150), (9653.20, 200),
     (9715.20, 100), (9721.40, 100), (9793.50, 120), (9813.10, 100)],
]
#: other airglow and city lines: (A, intensity in continuum-A at 6400, group name)
ATOMIC = [(5577.34, 110.0, "OI"), (6300.30, 60.0, "OI6300"), (6363.78, 20.0, "OI6300"),
          (5889.95, 12.0, "NaD"), (5895.92, 9.0, "NaD"), (4358.34, 4.0, "Hg"), (5460.75, 6.0, "Hg")]
OH_UNIT = 0.55                   # OH intensity 1 in units of continuum x A at 6400 A
DARK_R_MAG = 21.1                # dark zenith sky, r mag/arcsec^2
FIBER_SCALE_SIG = (0.003, 0.01)  # per-fibre sigma of the continuum and of the lines


def dark_continuum(w: np.ndarray) -> np.ndarray:
    """Shape of the dark continuum (1 at 6400 A): zodiacal + airglow pseudo-continuum."""
    w = np.asarray(w, float)
    return (w / 6400.0) ** 0.6 * (1 + 0.5 / (1 + np.exp(-(w - 8200.0) / 600.0)))


def moon_continuum(w: np.ndarray) -> np.ndarray:
    """Scattered moonlight (1 at 6400 A): a solar spectrum made bluer by Rayleigh scattering."""
    sun = T.planck(5800.0)
    w = np.asarray(w, float)
    return sun(w) / sun(6400.0) * (w / 6400.0) ** -2.0


def moon_factor(moon: float, sep_deg: float) -> float:
    """Moon continuum at 6400 A in units of the dark continuum (full moon at 60 deg: ~10x)."""
    return 10.0 * moon**2 * (60.0 / max(sep_deg, 10.0)) ** 0.7


class ExposureSky:
    """The sky one exposure sees, per fibre: flux density (1e-17 erg/s/cm2/A per fibre) of the
    continuum and the (wave, flux, sigma) of its lines."""

    def __init__(self, level: float, airmass: float, moon: float, moonsep: float,
                 rng: np.random.Generator, nfiber_total: int):
        self.level = level * airmass**0.8           # more air towards the horizon
        self.moon = moon_factor(moon, moonsep)
        self.group_scale = {k: float(np.exp(rng.normal(0, 0.15))) for k in range(len(OH_GROUPS))}
        self.group_scale.update({g: float(np.exp(rng.normal(0, 0.25)))
                                 for g in ("OI", "OI6300", "NaD", "Hg")})
        self.fib_cont = 1 + FIBER_SCALE_SIG[0] * rng.standard_normal(nfiber_total)
        self.fib_line = 1 + FIBER_SCALE_SIG[1] * rng.standard_normal(nfiber_total)
        lw, lf = [], []
        for k, group in enumerate(OH_GROUPS):
            for w, i in group:
                lw.append(w), lf.append(i * OH_UNIT * self.group_scale[k] * self.level)
        for w, i, g in ATOMIC:
            lw.append(w), lf.append(i * self.group_scale[g] * self.level)
        self.lines = (np.array(lw), np.array(lf), np.array(lw) * 12.0 / T.C_KMS)
        # Fraunhofer lines of the moonlight (negative lines at rest)
        feats = T.star_features(5800.0)
        self.moon_lines = (np.array([f[0] for f in feats]),
                           -np.array([f[1] * self.moon * self.level * moon_continuum(f[0])
                                      for f in feats]),
                           np.array([f[0] * f[2] / T.C_KMS for f in feats]))

    def continuum(self, fiber: int, w: np.ndarray) -> np.ndarray:
        return self.fib_cont[fiber] * self.level * (dark_continuum(w) + self.moon * moon_continuum(w))

    def line_list(self, fiber: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, f, s = self.lines
        mw, mf, ms = self.moon_lines
        return (np.concatenate([w, mw]), np.concatenate([f * self.fib_line[fiber], mf * self.fib_cont[fiber]]),
                np.concatenate([s, ms]))

    def r_mag(self) -> float:
        """Continuum sky brightness at 6400 A, AB mag per arcsec^2 (what a sky monitor says)."""
        from .targets import FIBER_AREA_ARCSEC2
        f = self.level * (1 + self.moon) / FIBER_AREA_ARCSEC2
        return float(-2.5 * np.log10(f * 1e-17 * 6400.0**2 / 2.998e18) - 48.6)


def night_level(night: int, seed: int) -> float:
    """Dark continuum flux density per fibre at 6400 A for this night (varies night to night)."""
    from .targets import FIBER_AREA_ARCSEC2
    rng = np.random.default_rng([seed, night, 77])
    return T.r_mag_to_flux(DARK_R_MAG + rng.normal(0, 0.15)) * FIBER_AREA_ARCSEC2
