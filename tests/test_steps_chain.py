"""The whole chain on a small simulated night, in the planner's order, against the truth."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from desinight.sim import simulate_night
from desinight.sim.score import score_production
from desinight.steps.chain import run_night

NIGHT = 20261124
SEED = 3  # the benchmark (bench/bench_steps.py --redshift) reports other seeds


@pytest.mark.slow
def test_small_night_meets_redshift_goal(tmp_path, monkeypatch):
    raw, redux = tmp_path / "raw", tmp_path / "redux"
    monkeypatch.setenv("DESI_SPECTRO_DATA", str(raw))
    monkeypatch.setenv("DESI_SPECTRO_REDUX", str(redux))
    monkeypatch.setenv("SPECPROD", "test")
    simulate_night(NIGHT, raw, preset="small", seed=SEED)
    fails = run_night(NIGHT, ["b0", "r0", "z0"])
    assert not any(fails.values()), fails
    truth = raw / "truth" / f"truth-{NIGHT}.fits"
    res = score_production(truth, redux / "test")
    assert res["n_galqso"] >= 20
    assert res["frac_good_galqso"] >= 0.95
    assert res["frac_catastrophic_unflagged"] < 0.02
    from desinight.cli.sim_cmd import sim
    out = CliRunner().invoke(sim, ["score", "--truth", str(truth), "--redux", str(redux / "test")])
    assert out.exit_code == 0 and "catastrophic unflagged" in out.output.strip().splitlines()[-1]
