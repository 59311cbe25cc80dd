"""The uniform ln(lambda) grid of the redshift fit, and resampling onto it.

redshift.py merges a target's coadded arms onto this grid (a redshift is then a shift on it):
each arm is linearly interpolated with its variance propagated ((1-t)^2 v1 + t^2 v2; a grid
pixel next to a masked pixel is masked) and the arms are averaged with inverse-variance weights.
"""

from __future__ import annotations

import numpy as np

from desinight.desimodel import ARM_RANGES

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
