"""Issue 17's science fixes, fast: vacuum wavelengths, coadd cosmic rejection, galaxy continua.

- The arc solution is labelled in vacuum (DESI's templates are vacuum; lamp lists are air).
- The coadd rejects a cosmic ray that preproc left in one exposure, and nothing from noise.
- The simulator's old stellar population falls to the red like a galaxy, and its galaxies'
  continuum dust follows optical samples (median stellar A_V ~0.3).
"""

from __future__ import annotations

import numpy as np

from desinight import desimodel
from desinight.steps.redshift import cosmic_outliers


def test_air_to_vacuum_matches_the_standard_conversion():
    # H-alpha, [OIII] 5007, [OII] 3726 (air -> vacuum, Morton 2000 / NIST)
    air = np.array([6562.80, 5006.84, 3726.03])
    np.testing.assert_allclose(desimodel.air_to_vacuum(air), [6564.61, 5008.24, 3727.09], atol=0.02)
    w = np.linspace(3500, 10000, 50)
    np.testing.assert_allclose(desimodel.vacuum_to_air(desimodel.air_to_vacuum(w)), w, atol=1e-6)


def test_psf_labels_the_arc_solution_in_vacuum():
    """steps/psf.py fits the lamp lines at their vacuum wavelengths (source check, the full arc
    fit is covered by tests/test_steps.py against the simulator's true solution)."""
    import inspect

    from desinight.steps import psf
    assert "air_to_vacuum(I.arc_lines(" in inspect.getsource(psf)


def test_coadd_rejects_a_cosmic_and_nothing_else():
    rng = np.random.default_rng(4)
    fl = rng.normal(size=(3, 50, 1000))
    iv = np.ones_like(fl)
    fl[1, 7, 300:302] += [40.0, 12.0]          # a cosmic ray: a spike and its wing
    bad = cosmic_outliers(fl, iv)
    assert bad[1, 7, 300] and bad[1, 7, 301]
    assert bad.sum() == 2                       # no Gaussian pixel of 150000 is rejected
    two = cosmic_outliers(fl[:2], iv[:2])        # two exposures: the one above goes
    assert two[1, 7, 300] and not two[0, 7, 300]
    assert not cosmic_outliers(fl[:1], iv[:1]).any()


def test_old_population_falls_to_the_red_and_dust_is_moderate():
    from desinight.sim import templates as T
    pop = T.stellar_population(1.0, 0.45, 0.0)
    f = pop(np.array([4000.0, 6000.0, 9500.0]))
    assert f[2] < f[1] and f[0] < 0.8 * f[1]      # peaks in the optical, a 4000 A break
    rng = np.random.default_rng(0)
    av = [T.draw_galaxy("BGS", 0.2, rng)[1]["AV"] for _ in range(200)]
    assert 0.15 < np.median(av) < 0.4 and max(av) <= 1.0
