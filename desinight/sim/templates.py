"""Analytic spectral library: galaxies (old + young populations, nebular lines), quasars, stars.

No template data can be downloaded here (SCIENCE-NOTES.md), so the project builds its own:
every spectrum is a smooth continuum plus Gaussian lines (emission positive, absorption
negative). The simulator draws objects from this library with random parameters; the redshift
step builds its fitting basis from the same physical components with *fixed* parameters
(line ratios, widths, slopes), the way DESI's redrock templates are PCA bases of the
simulator's template library. Flux unit: 1e-17 erg/s/cm^2/A; wavelengths in A (vacuum~air).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

C_KMS = 299792.458

# --- line lists (rest A) ----------------------------------------------------------------------
OII = (3726.03, 3728.82)
BALMER = {6562.80: 2.86, 4861.33: 1.0, 4340.46: 0.47, 4101.73: 0.26}
OIII = {5006.84: 1.0, 4958.91: 0.335, 3868.76: 0.05}
NII_SII = {6583.45: 1.0, 6548.05: 0.34, 6716.44: 0.55, 6730.82: 0.40}
#: absorption features of an old population: (rest A, EW A, sigma km/s)
OLD_ABS = [(3933.7, 8.0, 350), (3968.5, 7.0, 350), (4101.7, 1.5, 300), (4304.4, 4.0, 400),
           (4340.5, 1.5, 300), (4861.3, 1.5, 300), (5175.0, 4.0, 500), (5270.0, 2.5, 400),
           (5892.5, 3.0, 350), (6562.8, 1.5, 300), (8542.1, 2.5, 300), (8662.1, 2.0, 300),
           (2800.0, 6.0, 500), (2852.0, 3.0, 400)]
YOUNG_ABS = [(4101.7, 3.0, 300), (4340.5, 3.0, 300), (4861.3, 3.0, 300), (3889.0, 2.0, 300)]
#: broad quasar lines: (rest A, relative flux)
QSO_GROUPS = [
    {1215.67: 1.0, 1240.14: 0.25},
    {1549.06: 1.0, 1396.76: 0.2},
    {1908.73: 1.0},
    {2798.75: 1.0},
    {4861.33: 1.0, 6562.80: 3.0, 4340.46: 0.45},
]
QSO_LINE_FLUX = [0.9, 0.6, 0.25, 0.3, 0.35]   # x continuum at 3000 A x 100 A (typical EWs)
STAR_TEFF_GRID = np.arange(3500.0, 10001.0, 250.0)
STD_TEFF_GRID = np.arange(5800.0, 7001.0, 100.0)


@dataclass
class Spectrum:
    """A rest-frame recipe: components (each continuum + lines) times weights, at redshift z."""

    z: float
    conts: list = field(default_factory=list)    # callables rest_wave -> f (rest units)
    weights: list = field(default_factory=list)
    lines: list = field(default_factory=list)    # (rest wave, flux, sigma km/s) per line, x scale
    scale: float = 1.0

    def continuum(self, wave_obs: np.ndarray) -> np.ndarray:
        rest = np.asarray(wave_obs, float) / (1 + self.z)
        f = sum(w * c(rest) for c, w in zip(self.conts, self.weights))
        return self.scale * f / (1 + self.z)

    def line_list(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observed (wave, integrated flux, sigma A) of every line, absorption included."""
        if not self.lines:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        arr = np.array(self.lines, float)
        wave = arr[:, 0] * (1 + self.z)
        return wave, self.scale * arr[:, 1], wave * arr[:, 2] / C_KMS

    def evaluate(self, wave_obs: np.ndarray, extra_sigma_kms: float = 0.0) -> np.ndarray:
        """Flux density on a wavelength grid (lines as Gaussians broadened by extra_sigma_kms)."""
        f = self.continuum(wave_obs)
        w, fl, sig = self.line_list()
        sig = np.hypot(sig, w * extra_sigma_kms / C_KMS)
        for wl, fx, s in zip(w, fl, sig):
            m = np.abs(wave_obs - wl) < 6 * s
            if m.any():
                f[m] += fx * np.exp(-0.5 * ((wave_obs[m] - wl) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
        return f


# --- continua (rest frame) --------------------------------------------------------------------
def old_continuum(w):
    """Old stellar population: red, 4000 A break, UV drop."""
    w = np.asarray(w, float)
    return (w / 5000.0) ** 0.8 * (1 - 0.55 / (1 + np.exp((w - 4000.0) / 25.0))) \
        / (1 + np.exp((2600.0 - w) / 150.0)) + 0.02


def young_continuum(w):
    """Young population: blue power law with a small Balmer break."""
    w = np.asarray(w, float)
    return (w / 5000.0) ** -1.2 * (1 - 0.15 / (1 + np.exp((w - 3646.0) / 20.0)))


def powerlaw(alpha: float, forest: float = 0.75):
    def f(w):
        w = np.asarray(w, float)
        lya = forest + (1 - forest) / (1 + np.exp((1180.0 - w) / 8.0))
        return (w / 3000.0) ** alpha * lya
    return f


def planck(teff: float):
    def f(w):
        x = 1.438777e8 / (np.asarray(w, float) * teff)    # hc/(lambda k T), lambda in A
        return (5000.0 / np.asarray(w, float)) ** 5 / np.expm1(np.minimum(x, 300.0))
    return f


def _abs_lines(cont, features, weight=1.0):
    """Absorption features as negative Gaussian lines of given equivalent width."""
    return [(w0, -weight * ew * float(cont(w0)), sig) for w0, ew, sig in features]


def star_features(teff: float) -> list[tuple[float, float, float]]:
    balmer = 9.0 * np.exp(-(((teff - 9000.0) / 2500.0) ** 2))
    metal = 0.5 + 4.0 * np.clip((7000.0 - teff) / 3000.0, 0, 1)
    feats = [(w, balmer * r, 60) for w, r in ((6562.8, 1.0), (4861.3, 1.0), (4340.5, 0.9),
                                             (4101.7, 0.8), (3970.1, 0.7))]
    feats += [(w, metal * r, 40) for w, r in ((3933.7, 1.5), (3968.5, 1.2), (4304.4, 0.8),
                                            (5175.0, 0.9), (5892.5, 0.8), (8498.0, 0.6),
                                            (8542.1, 0.9), (8662.1, 0.8), (4226.7, 0.6))]
    return feats


# --- objects ----------------------------------------------------------------------------------
def galaxy(kind: str, z: float, rng: np.random.Generator) -> Spectrum:
    """ELG (star-forming, strong lines) or LRG (old, absorption) at redshift z, unnormalised."""
    if kind == "LRG":
        wo, wy, ha = 1.0, rng.uniform(0.0, 0.08), rng.uniform(0.0, 0.3)
    else:
        wo, wy, ha = rng.uniform(0.0, 0.2), 1.0, rng.uniform(2.0, 8.0)
    s = Spectrum(z, [old_continuum, young_continuum], [wo, wy])
    s.lines += _abs_lines(old_continuum, OLD_ABS, wo)
    s.lines += _abs_lines(young_continuum, YOUNG_ABS, wy)
    sig = rng.uniform(40, 90)
    hb = ha * young_continuum(4861.0) * 4.0 * wy + ha * 0.3
    r_oii = rng.uniform(0.9, 1.4)
    oii = hb * rng.uniform(2.0, 4.0)
    s.lines += [(OII[0], oii / (1 + r_oii), sig), (OII[1], oii * r_oii / (1 + r_oii), sig)]
    s.lines += [(w, hb * r, sig) for w, r in BALMER.items()]
    o3 = hb * rng.uniform(0.3, 3.0)
    s.lines += [(w, o3 * r, sig) for w, r in OIII.items()]
    n2 = 2.86 * hb * rng.uniform(0.1, 0.4)
    s.lines += [(w, n2 * r, sig) for w, r in NII_SII.items()]
    return s


def qso(z: float, rng: np.random.Generator) -> Spectrum:
    alpha = rng.uniform(-1.0, 0.0)
    cont = powerlaw(alpha, forest=rng.uniform(0.65, 0.85))
    s = Spectrum(z, [cont], [1.0])
    sig = rng.uniform(1500, 2500)
    for group, base in zip(QSO_GROUPS, QSO_LINE_FLUX):
        amp = base * 100.0 * rng.uniform(0.6, 1.5)
        s.lines += [(w, amp * r * float(cont(w)) * 1.0, sig) for w, r in group.items()]
    s.lines += [(5006.84, 100 * rng.uniform(0.0, 0.15) * float(cont(5007.0)), 300.0)]
    return s


def star(teff: float, rv_kms: float) -> Spectrum:
    cont = planck(teff)
    norm = 1.0 / float(cont(6400.0))
    s = Spectrum(rv_kms / C_KMS, [lambda w: norm * cont(w)], [1.0])
    s.lines += _abs_lines(lambda w: norm * cont(w), star_features(teff))
    return s


def r_mag_to_flux(mag: float) -> float:
    """Flux density (1e-17 erg/s/cm2/A) at 6400 A of an AB magnitude (box r band)."""
    fnu = 10 ** (-0.4 * (mag + 48.6))
    return fnu * 2.998e18 / 6400.0**2 / 1e-17


def normalise(s: Spectrum, mag_r: float) -> Spectrum:
    """Scale so that the mean flux density over 5600-7200 A matches the r magnitude."""
    w = np.linspace(5600, 7200, 200)
    s.scale = 1.0
    mean = float(np.mean(s.evaluate(w)))
    s.scale = r_mag_to_flux(mag_r) / max(mean, 1e-30)
    return s


# --- fitting bases (rest frame, on any wavelength grid) ---------------------------------------
def _lines_on(w, lines, extra_kms):
    out = np.zeros_like(w)
    for wl, fx, sig in lines:
        s = wl * np.hypot(sig, extra_kms) / C_KMS
        m = np.abs(w - wl) < 6 * s
        out[m] += fx * np.exp(-0.5 * ((w[m] - wl) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
    return out


def galaxy_basis(w: np.ndarray, res_kms: float) -> np.ndarray:
    """(6, n) rest-frame basis: old, young populations and four nebular line groups."""
    old = old_continuum(w) + _lines_on(w, _abs_lines(old_continuum, OLD_ABS), res_kms)
    young = young_continuum(w) + _lines_on(w, _abs_lines(young_continuum, YOUNG_ABS), res_kms)
    sig = 60.0
    groups = [[(OII[0], 0.45, sig), (OII[1], 0.55, sig)],
              [(wl, r, sig) for wl, r in BALMER.items()],
              [(wl, r, sig) for wl, r in OIII.items()],
              [(wl, r, sig) for wl, r in NII_SII.items()]]
    return np.array([old, young, *[_lines_on(w, g, res_kms) for g in groups]])


def qso_basis(w: np.ndarray, res_kms: float) -> np.ndarray:
    """(8, n): two power laws and the broad line groups (plus narrow [OIII])."""
    p1, p2 = powerlaw(-0.2)(w), powerlaw(-1.0)(w)
    out = [p1, p2]
    for group in QSO_GROUPS:
        out.append(_lines_on(w, [(wl, r, 2000.0) for wl, r in group.items()], res_kms))
    out.append(_lines_on(w, [(5006.84, 1.0, 300.0)], res_kms))
    return np.array(out)


def star_basis(w: np.ndarray, teff: float, res_kms: float) -> np.ndarray:
    """(1, n): one star of temperature teff normalised at 6400 A."""
    s = star(teff, 0.0)
    return s.evaluate(w, res_kms)[None, :]
