"""The simulator's spectrum container, and its own analytic quasars and stars.

Every spectrum is continuum components plus Gaussian lines (emission positive, absorption
negative). Quasars (``draw_qso``): broken power laws with two-component broad lines, velocity
offsets and a stochastic Lyman-alpha forest; stars (``draw_star``): six types. Galaxies are
drawn by stellar-population synthesis in desinight.sim.sps. These recipes are this project's own
and independent of the redshift fitter's templates (DESI's redrock PCA set).

Flux unit: 1e-17 erg/s/cm^2/A; wavelengths in A (vacuum~air).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

C_KMS = 299792.458

OII = (3726.03, 3728.82)


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
def planck(teff: float):
    def f(w):
        x = 1.438777e8 / (np.asarray(w, float) * teff)    # hc/(lambda k T), lambda in A
        return (5000.0 / np.asarray(w, float)) ** 5 / np.expm1(np.minimum(x, 300.0))
    return f


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
def r_mag_to_flux(mag: float) -> float:
    """Flux density (1e-17 erg/s/cm2/A) at 6400 A of an AB magnitude (box r band)."""
    fnu = 10 ** (-0.4 * (mag + 48.6))
    return fnu * 2.998e18 / 6400.0**2 / 1e-17


# --- dust and [OII]: shared with desinight.sim.sps ---------------------------------------------
def calzetti(w) -> np.ndarray:
    """Calzetti (2000) starburst attenuation k(lambda) (rest A); A_lambda = k * A_V / 4.05."""
    x = np.asarray(w, float) / 1e4
    k = np.where(x < 0.63, 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + 4.05,
                 2.659 * (-1.857 + 1.040 / x) + 4.05)
    return np.maximum(k, 0.0)


def set_oii(s: Spectrum, total: float) -> None:
    """Rescale every emission line of a normalised galaxy so that [OII] totals ``total``
    (1e-17 erg/s/cm^2): a drawn line flux, independent of the continuum magnitude."""
    i, j = s.oii_index
    now = s.scale * (s.lines[i][1] + s.lines[j][1])
    if now <= 0:
        return
    k = total / now
    s.lines = [(w, f * k, sg) if f > 0 else (w, f, sg) for w, f, sg in s.lines]


def oii_flux(s: Spectrum) -> float:
    i, j = getattr(s, "oii_index", (None, None))
    return 0.0 if i is None else float(s.scale * (s.lines[i][1] + s.lines[j][1]))


#: quasar broad lines: rest A, log-normal EW centre (rest A), and the velocity offset range
QSO_LINES = [(1215.67, 60.0, (-300, 300)), (1240.14, 10.0, (-300, 300)),
             (1549.06, 30.0, (-2500, 200)), (1396.76, 8.0, (-1000, 300)),
             (1908.73, 20.0, (-800, 300)), (2798.75, 30.0, (-300, 300)),
             (4861.33, 60.0, (-300, 300)), (6562.80, 250.0, (-300, 300)),
             (4340.46, 25.0, (-300, 300))]


def lya_forest(z: float, rng: np.random.Generator):
    """Transmission (rest A -> 0..1) of a random Lyman-alpha forest in front of a quasar at z:
    absorbers with dN/dz ~ 40 (1+z)^2.5 at rest 1216 x (1+z_abs)/(1+z), log-normal optical
    depths that give about the observed mean transmission exp(-0.0025 (1+z)^3.7), and a
    Lyman-limit drop below 912 A."""
    step = 0.05
    grid = np.arange(850.0, 1216.0, step)
    zabs_max = z
    zabs_min = max((1 + z) * 1040.0 / 1215.67 - 1, 0.0)
    nexp = 40.0 * ((1 + z) ** 3.5 - (1 + zabs_min) ** 3.5) / 3.5
    n = rng.poisson(max(nexp, 0.0))
    tau = np.zeros_like(grid)
    if n:
        za = rng.uniform(zabs_min, zabs_max, n)
        rest = 1215.67 * (1 + za) / (1 + z)
        depth = np.exp(rng.normal(-0.6, 1.0, n))
        width = rest * rng.uniform(20.0, 45.0, n) / C_KMS
        # each absorber on the grid points within +-5 sigma of its centre (vectorised)
        off = np.arange(-12, 13)
        idx = np.rint((rest - grid[0]) / step).astype(int)[:, None] + off
        ok = (idx >= 0) & (idx < grid.size)
        idx = np.clip(idx, 0, grid.size - 1)
        val = depth[:, None] * np.exp(-0.5 * ((grid[idx] - rest[:, None]) / width[:, None]) ** 2)
        np.add.at(tau, idx[ok], val[ok])
    # Lyman-beta region: extra absorption, and the Lyman limit
    tau += np.where(grid < 1025.7, 0.4 * (1 + z) / 3.0, 0.0)
    target = 0.0025 * (1 + z) ** 3.7        # effective optical depth of the forest
    forest = (grid > 1040) & (grid < 1190)
    k = 1.0
    for _ in range(6):                       # scale the absorbers to the mean transmission
        eff = -np.log(np.mean(np.exp(-k * tau[forest])))
        k *= target / max(eff, 1e-6)
    tau[forest] *= k
    trans = np.exp(-tau)
    ll = rng.uniform(0.0, 0.6)                                  # flux left below 912 A

    def f(w):
        w = np.asarray(w, float)
        t = np.interp(w, grid, trans, left=trans[0], right=1.0)
        return np.where(w < 912.0, ll * t, t)
    return f


def draw_qso(z: float, rng: np.random.Generator) -> tuple[Spectrum, dict]:
    """A quasar: broken power law, two-component broad lines with drawn EWs, widths and
    velocity offsets (CIV blueshift), narrow [OIII], a stochastic Lyman-alpha forest."""
    a1, a2 = rng.uniform(-1.8, -0.6), rng.uniform(-1.0, 0.2)
    forest = lya_forest(z, rng)

    def cont(w):
        w = np.asarray(w, float)
        pl = np.where(w < 5000.0, (w / 3000.0) ** a1, (5000 / 3000.0) ** a1 * (w / 5000.0) ** a2)
        return pl * forest(w)
    s = Spectrum(z, [cont], [1.0])
    ew_scale = float(np.exp(rng.normal(0.0, 0.35)))         # Baldwin-like global EW spread
    for w0, ew, (v0, v1) in QSO_LINES:
        total = ew * ew_scale * float(np.exp(rng.normal(0, 0.3))) * float((w0 / 3000.0) ** a1)
        dv = rng.uniform(v0, v1)
        wb, wn = rng.uniform(2500, 6000), rng.uniform(900, 2000)
        fb = rng.uniform(0.4, 0.8)
        wc = w0 * (1 + dv / C_KMS)
        s.lines += [(wc, fb * total, wb), (wc * (1 + rng.normal(0, 150) / C_KMS), (1 - fb) * total, wn)]
    s.lines += [(5006.84, rng.uniform(0.0, 20.0) * float((5007 / 3000.0) ** a1), 350.0)]
    return s, {"ALPHA": a1}


#: stellar types the simulator draws: (type, Teff range K, metal-line strength, Balmer boost)
STAR_TYPES = {"A": ((7500, 10000), 0.3, 1.6), "F": ((6000, 7500), 1.0, 1.0),
              "G": ((5200, 6000), 1.6, 0.6), "K": ((3900, 5200), 2.4, 0.3),
              "M": ((3000, 3900), 2.0, 0.1), "WD": ((9000, 25000), 0.0, 3.0)}
#: TiO band heads of M dwarfs: (rest A, depth at 3000 K, width A)
TIO = [(4955.0, 0.35, 120.0), (5167.0, 0.4, 120.0), (5448.0, 0.45, 150.0),
       (6159.0, 0.5, 150.0), (6651.0, 0.35, 110.0), (7054.0, 0.6, 180.0), (7589.0, 0.3, 120.0),
       (8432.0, 0.25, 150.0)]


def draw_star(stype: str, rng: np.random.Generator, rv_kms: float = 0.0) -> tuple[Spectrum, float]:
    """A star of type A, F, G, K, M or WD: (spectrum, Teff)."""
    (t0, t1), metal, balmer = STAR_TYPES[stype]
    teff = float(rng.uniform(t0, t1))
    bb = planck(teff)
    tio = 0.0 if stype != "M" else float(np.clip((3900 - teff) / 900, 0.2, 1.0))

    def cont(w):
        w = np.asarray(w, float)
        c = bb(w)
        for w0, d, wd in TIO:       # a band: sharp head on the blue side, a slow red recovery
            c = c * (1 - tio * d * np.exp(-np.clip(w - w0, 0, None) / wd) * expit((w - w0) / 3.0))
        return c
    norm = 1.0 / float(cont(6400.0))
    ncont = (lambda w: norm * cont(w))
    s = Spectrum(rv_kms / C_KMS, [ncont], [1.0])
    feats = star_features(teff)
    feh = float(np.exp(rng.normal(0, 0.3)))                     # metallicity spread
    out = []
    cv = ncont(np.array([f[0] for f in feats]))
    for (w0, ew, sig), c in zip(feats, cv):
        is_balmer = w0 in (6562.8, 4861.3, 4340.5, 4101.7, 3970.1)
        k = balmer if is_balmer else metal * feh / 2.0
        width = sig * (8.0 if stype == "WD" and is_balmer else 1.0)
        ew_b = ew if not (stype == "WD" and is_balmer) else 40.0
        out.append((w0, -k * ew_b * float(c), width))
    s.lines += out
    return s, teff


def band_mean(s: Spectrum, lo: float, hi: float) -> float:
    """Mean flux density over [lo, hi]: the continuum sampled, each line's flux inside the band
    integrated exactly (vectorised: thousands of targets per tile)."""
    w = np.linspace(lo, hi, 300)
    lw, lf, ls = s.line_list()
    from scipy.special import erf
    inside = 0.5 * (erf((hi - lw) / (np.sqrt(2) * ls)) - erf((lo - lw) / (np.sqrt(2) * ls)))
    return float(np.mean(s.continuum(w)) + np.sum(lf * inside) / (hi - lo))


#: box bands for magnitudes (A): the mean flux density over the band at its pivot
BANDS = {"G": (4000.0, 5500.0), "R": (5600.0, 7200.0), "Z": (8300.0, 9800.0)}


def ab_mag(s: Spectrum, band: str) -> float:
    lo, hi = BANDS[band]
    piv = np.sqrt(lo * hi) if band != "R" else 6400.0
    f = band_mean(s, lo, hi) * 1e-17 * piv**2 / 2.998e18
    return float(-2.5 * np.log10(max(f, 1e-40)) - 48.6)


def normalise_band(s: Spectrum, band: str, mag: float) -> Spectrum:
    """Scale s so that its box-band AB magnitude is ``mag``."""
    s.scale = 1.0
    s.scale = 10 ** (-0.4 * (mag - ab_mag(s, band)))
    return s
