"""Issue 17's science fixes, fast: vacuum wavelengths, coadd cosmic rejection.

- The arc solution is labelled in vacuum (DESI's templates are vacuum; lamp lists are air).
- The coadd rejects a cosmic ray that preproc left in one exposure, and nothing from noise.
(The simulator's galaxy continua are tested in tests/test_sps.py.)
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


