"""The simulator's true instrument: how this simulated spectrograph departs from the nominal
design in desinight.desimodel (per-camera trace and wavelength shifts, PSF widths, lamp spectra).

Only the simulator imports this module; the steps see the design (desimodel) and the data.
"""

from __future__ import annotations

import numpy as np

from desinight.desimodel import *  # noqa: F403  (the design, re-exported for the simulator)
from desinight.desimodel import _u, _wave_rows  # noqa: F401

PSF_SIGMA_Y = 1.0                  # line-spread sigma along the trace, rows (the resolution)
PSF_SIGMA_X = 1.0                  # cross-section sigma of a trace at the CCD centre, columns


def _camera_rng(camera: str, salt: int) -> np.random.Generator:
    # Fixed per camera (not per night): the instrument is the same every night.
    return np.random.default_rng([ord(camera[0]), int(camera[1:]), salt])


def true_trace(p: Preset, camera: str, y, flex_x: float = 0.0) -> np.ndarray:
    """True x(fibre, y); flex_x: a science exposure's flexure relative to the arcs (columns)."""
    rng = _camera_rng(camera, 1)
    dx = rng.uniform(-1.5, 1.5) + flex_x
    u = _u(p, y)
    return nominal_trace(p, y) + dx + 0.3 * u[None, :] ** 3


def psf_sigma_x(p: Preset, xc: np.ndarray) -> np.ndarray:
    """Cross-section sigma (columns) at trace position xc: a little wider at the CCD edges."""
    rel = (np.asarray(xc) - p.nx / 2.0) / (p.nx / 2.0)
    return PSF_SIGMA_X * (1 + 0.08 * rel**2)


def true_wave(p: Preset, camera: str, y, flex_y: float = 0.0) -> np.ndarray:
    """True wavelength per fibre and row: the design shifted by a global and a smooth per-fibre
    offset (a few tenths of a row), which the arc fit must find; flex_y: a science exposure's
    flexure relative to the arcs (rows), which the arcs cannot show."""
    rng = _camera_rng(camera, 2)
    frac = np.arange(p.nfiber) / max(p.nfiber - 1, 1)
    dy = rng.uniform(-2.0, 2.0) + 0.4 * np.sin(2 * np.pi * (frac + rng.uniform())) + flex_y
    y = np.asarray(y, dtype=float)
    return _wave_rows(p, camera[0], y[None, :] - dy[:, None])


def lsf_sigma(p: Preset, camera: str) -> np.ndarray:
    """Line-spread sigma (rows) per fibre and row, (nfib, ny): a per-camera focus offset, wider
    towards the CCD edges and corners (up to ~+20%), as a real spectrograph's PSF varies."""
    rng = _camera_rng(camera, 3)
    relx = (nominal_x0(p) - p.nx / 2.0) / (p.nx / 2.0)
    u = _u(p, np.arange(p.ny))
    focus = rng.uniform(-0.05, 0.05)
    tilt = rng.uniform(-0.04, 0.04)
    return PSF_SIGMA_Y * (1 + focus + 0.08 * relx[:, None] ** 2 + 0.08 * u[None, :] ** 2
                          + tilt * relx[:, None] * u[None, :])


def arc_intensity(wave) -> np.ndarray:
    """Electrons per second of each arc line before fibre throughput (deterministic, varied)."""
    w = np.asarray(wave, dtype=float)
    return 800.0 + 3000.0 * (0.5 + 0.5 * np.sin(w * 0.37))


def flat_lamp(wave) -> np.ndarray:
    """Continuum lamp: electrons per A per second, smooth (a warm blackbody-like slope)."""
    w = np.asarray(wave, dtype=float)
    return 1500.0 * (0.6 + 0.4 * np.exp(-((w - 6500.0) / 3000.0) ** 2))
