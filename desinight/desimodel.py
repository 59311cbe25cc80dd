"""The nominal instrument: desinight's desimodel (design facts the pipeline may know).

Presets (CCD size, fibres, night plan), the raw CCD layout (4 amplifiers, each with prescan and
overscan), the design trace geometry x(fibre, y) and wavelength solution, the nominal throughput,
the lamp line list.  These are the numbers a real pipeline reads from desimodel.  The simulator's
*true* instrument (desinight.sim.instrument) departs from them; the steps must recover the truth
from arcs, flats, sky fibres and standard stars, and import nothing from desinight.sim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARMS = ("b", "r", "z")
#: Active wavelength coverage of each arm (specsim's DESI table), Angstrom.
ARM_RANGES: dict[str, tuple[float, float]] = {
    "b": (3569.0, 5949.0), "r": (5625.0, 7741.0), "z": (7435.0, 9834.0)}
FIBERS_PER_BUNDLE = 25
#: Trace pitch inside a bundle and the extra gap between bundles (CCD columns).
FIBER_PITCH = 7.4
BUNDLE_GAP = 8.0
EDGE_MARGIN = 20.0
PRESCAN = 7
OVERSCAN = 32
AMPS = ("A", "B", "C", "D")        # A bottom-left, B bottom-right, C top-left, D top-right
#: Raw pixels are int16; keep headroom below 32767 (bias + signal).
SATURATION_ADU = 32000
TEL_AREA_CM2 = 8.678e4             # collecting area of the 4-m primary, cm^2
HC_ERG_A = 1.98645e-8              # h c in erg Angstrom: photons = energy * lambda / hc
DARK_E_PER_S = 8e-4                # ~3 e-/pixel/hour


@dataclass(frozen=True)
class Preset:
    name: str
    nspec: int          # spectrographs
    nbundle: int        # bundles per spectrograph
    ny: int             # active CCD rows (wavelength direction)
    nzero: int
    narc: int
    nflat: int
    ntiles: int
    nscience: int       # science exposures per tile
    exptime: float      # science exposure time, s

    @property
    def nfiber(self) -> int:
        return self.nbundle * FIBERS_PER_BUNDLE

    @property
    def nx(self) -> int:
        """Active columns: fibres + bundle gaps + margins, rounded up to a multiple of 4."""
        span = 2 * EDGE_MARGIN + (self.nfiber - 1) * FIBER_PITCH + (self.nbundle - 1) * BUNDLE_GAP
        return int(np.ceil(span / 4.0) * 4)

    @property
    def raw_shape(self) -> tuple[int, int]:
        return self.ny, self.nx + 2 * (PRESCAN + OVERSCAN)

    def cameras(self) -> list[str]:
        return [f"{a}{s}" for s in range(self.nspec) for a in ARMS]


PRESETS: dict[str, Preset] = {
    # small: ~2.4 A per row (coarse) but the real arm ranges, so redshifts still work.
    "small": Preset("small", 1, 2, 1000, 1, 1, 1, 1, 3, 1000.0),
    "medium": Preset("medium", 2, 8, 2000, 3, 3, 3, 2, 3, 1000.0),
    "full": Preset("full", 10, 20, 4096, 5, 3, 3, 2, 3, 1000.0),
}


def preset_for_shape(ny: int, nx: int) -> Preset:
    """The preset an image came from (the steps see only the data and its header)."""
    for p in PRESETS.values():
        if (p.ny, p.nx) == (ny, nx):
            return p
    raise ValueError(f"no preset with a {ny}x{nx} CCD")


# --- geometry ---------------------------------------------------------------------------------
def nominal_x0(p: Preset) -> np.ndarray:
    f = np.arange(p.nfiber)
    return EDGE_MARGIN + f * FIBER_PITCH + (f // FIBERS_PER_BUNDLE) * BUNDLE_GAP


def _u(p: Preset, y) -> np.ndarray:
    return (np.asarray(y, dtype=float) - (p.ny - 1) / 2.0) / ((p.ny - 1) / 2.0)


def nominal_trace(p: Preset, y) -> np.ndarray:
    """Design x(fibre, y): a bow-tie curvature growing towards the CCD edges."""
    x0 = nominal_x0(p)
    rel = (x0 - p.nx / 2.0) / (p.nx / 2.0)
    u = _u(p, y)
    return x0[:, None] + (2.0 * rel)[:, None] * u[None, :] ** 2 + 1.0 * u[None, :]


def _wave_rows(p: Preset, arm: str, yy: np.ndarray) -> np.ndarray:
    lo, hi = ARM_RANGES[arm]
    t = yy / (p.ny - 1)
    return lo + (hi - lo) * (t + 0.02 * t * (1 - t) - 0.01 * t * (1 - t) * (2 * t - 1))


def nominal_wave(p: Preset, arm: str, y) -> np.ndarray:
    """Design wavelength (A) of row y for every fibre, (nfiber, ny)."""
    w = _wave_rows(p, arm, np.asarray(y, dtype=float))
    return np.broadcast_to(w, (p.nfiber, w.size)).copy()


def amp_layout(p: Preset) -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """Per amp, (y0, y1, x0, x1) of DATA, BIAS (overscan), PRE (prescan) in the raw image and
    CCD (the amp's part of the trimmed image). Raw columns:
    [pre A|data A|over A|over B|data B|pre B], rows: bottom A/B, top C/D."""
    ny, nx = p.ny, p.nx
    hy, hx = ny // 2, nx // 2
    out = {}
    for amp, (y0, y1), right in (("A", (0, hy), False), ("B", (0, hy), True),
                                 ("C", (hy, ny), False), ("D", (hy, ny), True)):
        if not right:
            pre, data = (0, PRESCAN), (PRESCAN, PRESCAN + hx)
            bias, ccd = (PRESCAN + hx, PRESCAN + hx + OVERSCAN), (0, hx)
        else:
            x = PRESCAN + hx + OVERSCAN
            bias, data = (x, x + OVERSCAN), (x + OVERSCAN, x + OVERSCAN + nx - hx)
            pre, ccd = (x + OVERSCAN + nx - hx, x + 2 * OVERSCAN + nx - hx + PRESCAN - OVERSCAN), (hx, nx)
        out[amp] = {k: (y0, y1, *v) for k, v in
                    (("DATA", data), ("BIAS", bias), ("PRE", pre), ("CCD", ccd))}
    return out


def fits_section(reg: tuple[int, int, int, int]) -> str:
    """(y0, y1, x0, x1) -> FITS 1-based inclusive '[x1:x2,y1:y2]'."""
    y0, y1, x0, x1 = reg
    return f"[{x0 + 1}:{x1},{y0 + 1}:{y1}]"


def parse_section(text: str) -> tuple[int, int, int, int]:
    xs, ys = text.strip().strip("[]").split(",")
    x0, x1 = (int(v) for v in xs.split(":"))
    y0, y1 = (int(v) for v in ys.split(":"))
    return y0 - 1, y1, x0 - 1, x1


# --- light (nominal) ------------------------------------------------------------------------------------
def throughput(wave, arm: str) -> np.ndarray:
    """System throughput of an arm (telescope + spectrograph + CCD QE): a smooth bell."""
    lo, hi = ARM_RANGES[arm]
    t = (np.asarray(wave, dtype=float) - (lo + hi) / 2.0) / ((hi - lo) / 2.0)
    peak = {"b": 0.30, "r": 0.36, "z": 0.30}[arm]
    return peak * np.clip(1.0 - 0.35 * t**2 - 0.25 * t**8, 0.02, None)


def arc_lines(arm: str) -> np.ndarray:
    """Known lamp lines (A) of an arm: real Hg/Cd/Ne/Ar/Kr lines, well separated."""
    lines = {
        "b": [3650.15, 4046.56, 4077.83, 4358.33, 4678.15, 4799.91, 5085.82,
              5460.73, 5769.60, 5790.66, 3888.65, 4471.48, 4921.93, 5015.68, 5875.62],
        "r": [5852.49, 5944.83, 6029.99, 6074.34, 6143.06, 6217.28, 6266.50, 6334.43,
              6402.25, 6506.53, 6598.95, 6678.28, 6717.04, 6929.47, 7032.41, 7173.94,
              7245.17, 7438.90, 7635.11, 5688.19, 7724.63],
        "z": [7503.87, 7635.11, 7723.76, 7948.18, 8014.79, 8115.31, 8264.52, 8408.21,
              8424.65, 8521.44, 8667.94, 9122.97, 9224.50, 9354.22, 9657.78, 9784.50,
              7891.08, 8776.75, 8928.69, 9784.50],
    }[arm]
    return np.unique(np.array(lines))


def camera_wave_grid(p: Preset, arm: str) -> np.ndarray:
    """Common linear wavelength grid of a camera's calibrated frames (about one row per step)."""
    lo, hi = ARM_RANGES[arm]
    step = round((hi - lo) / (p.ny - 1), 2)
    return np.arange(lo + 3 * step, hi - 3 * step, step)


def _refractive_index(wave_vac) -> np.ndarray:
    """Refractive index of standard air (Ciddor 1996 as in Morton 2000), vacuum wavelength (A)."""
    s2 = (1e4 / np.asarray(wave_vac, dtype=float)) ** 2
    return 1 + 5.792105e-2 / (238.0185 - s2) + 1.67917e-3 / (57.362 - s2)


def air_to_vacuum(wave_air) -> np.ndarray:
    """Vacuum wavelength (A) of an air wavelength: lamp line lists are catalogued in air, the
    pipeline's wavelengths (and DESI's redrock templates) are vacuum, ~+1.1 A at 4000 A and
    +2.7 A at 10000 A (80 km/s): the arcs must be labelled in vacuum or every redshift is low."""
    w = np.asarray(wave_air, dtype=float)
    vac = w.copy()
    for _ in range(3):                     # n depends weakly on the wavelength: fixed point
        vac = w * _refractive_index(vac)
    return vac


def vacuum_to_air(wave_vac) -> np.ndarray:
    w = np.asarray(wave_vac, dtype=float)
    return w / _refractive_index(w)


#: Bright night-sky emission lines that stand alone at DESI's resolution (air, A): [OI] 5577,
#: 6300 and 6364 and the brightest OH Meinel lines (Osterbrock et al. 1996), the references a
#: science exposure's wavelengths are checked against (flexure since the arcs).
SKY_LINES_AIR = np.array([5577.338, 6300.304, 6363.776, 6863.955, 7316.282, 7340.885, 7794.112,
                          7913.708, 7993.332, 8399.170, 8430.174, 8827.096, 8885.850, 8988.558,
                          9375.977, 9476.900])
