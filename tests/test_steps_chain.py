"""The whole chain on a small simulated night, in the planner's order, against the truth."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from desinight.sim import simulate_night
from desinight.sim.score import CLASSES, score_production
from desinight.steps.chain import run_night

NIGHT = 20261124
SEED = 3  # the benchmark (bench/bench_steps.py --redshift) reports other seeds


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One small night through the whole chain (redrock), scored per class."""
    root = tmp_path_factory.mktemp("chain")
    raw, redux = root / "raw", root / "redux"
    mp = pytest.MonkeyPatch()
    mp.setenv("DESI_SPECTRO_DATA", str(raw))
    mp.setenv("DESI_SPECTRO_REDUX", str(redux))
    mp.setenv("SPECPROD", "test")
    simulate_night(NIGHT, raw, preset="small", seed=SEED)
    fails = run_night(NIGHT, ["b0", "r0", "z0"])
    truth = raw / "truth" / f"truth-{NIGHT}.fits"
    yield fails, truth, redux / "test"
    mp.undo()


@pytest.mark.slow
def test_small_night_runs_and_is_scored_per_class(night):
    fails, truth, prod = night
    assert not any(fails.values()), fails
    res = score_production(truth, prod)
    assert res["n_galqso"] >= 20
    stars = res["classes"]["STAR"]
    assert stars["n"] >= 3 and stars["good"]["frac"] == 1.0   # stars: the easy class, all right
    from desinight.cli.sim_cmd import sim
    out = CliRunner().invoke(sim, ["score", "--truth", str(truth), "--redux", str(prod)])
    assert out.exit_code == 0 and "catastrophic unflagged" in out.output.strip().splitlines()[-1]


@pytest.mark.slow
def test_small_night_meets_the_issue_17_goal(night):
    """The Done-when of issue 17 on this night: no class above 2% unflagged catastrophic, and
    ZWARN on at least 70% of the failures. (Was a strict xfail until the coadd counted its
    shared noise, the sky fit stopped leaning low and the galaxy scan stopped past [OII].)"""
    _, truth, prod = night
    res = score_production(truth, prod)
    for name in CLASSES:            # QSO at DESI's 3000 km/s; QSO@1000 is reported, not judged
        c = res["classes"][name]
        if c["n"]:
            assert c["catastrophic_unflagged"]["frac"] <= 0.02, (name, c)
    ff = [res["classes"][n]["failures_flagged"] for n in CLASSES if res["classes"][n]["n"]]
    fails, flagged = sum(f["n"] for f in ff), sum(f["k"] for f in ff)
    assert fails == 0 or flagged >= 0.7 * fails, (flagged, fails)


@pytest.mark.slow
def test_coadd_sky_fibres_are_noise_of_the_size_ivar_says(night):
    """The coadd's sky fibres hold only noise: their pulls flux * sqrt(ivar) have a standard
    deviation near 1 and a mean near 0 in every arm. The night's bias is one zero whose noise
    is in all three exposures alike; summing the exposures' ivar as if it were independent gave
    1.22-1.26 (seed 3), and redrock took the missing variance for signal (steps/calvar.py)."""
    import fitsio
    import numpy as np

    _, _, prod = night
    (coadd,) = prod.glob("tiles/*/*/coadd-*.fits")
    fm = fitsio.read(str(coadd), "FIBERMAP")
    sky = np.char.strip(fm["OBJTYPE"].astype(str)) == "SKY"
    for arm in "BRZ":
        flux = fitsio.read(str(coadd), f"{arm}_FLUX")[sky].astype(float)
        ivar = fitsio.read(str(coadd), f"{arm}_IVAR")[sky].astype(float)
        pulls = (flux * np.sqrt(ivar))[ivar > 0]
        std, mean = float(np.std(pulls)), float(np.mean(pulls))
        print(f"{arm}: coadd sky-fibre pulls std {std:.3f} mean {mean:.3f}")
        assert 0.9 < std < 1.15, (arm, std)
        # and no offset, which a faint galaxy would wear as continuum (sky.expected_ivar: it was
        # 0.09-0.16 sigma with each pixel's shot noise from its own counts)
        assert abs(mean) < 0.07, (arm, mean)
