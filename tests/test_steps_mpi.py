"""`desinight step run` under mpiexec: bundles of one camera shared by several ranks give the
same sframe as one process, and a failing camera fails the job without hanging the others."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import fitsio
import numpy as np
import pytest

from desinight.sim import simulate_night
from desinight.steps.jobs import run_job

NIGHT = 20261124
pytestmark = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpi")
    env = {"DESI_SPECTRO_DATA": str(root / "raw"), "DESI_SPECTRO_REDUX": str(root / "redux"),
           "SPECPROD": "t"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        simulate_night(NIGHT, root / "raw", seed=4)
        e0 = (NIGHT - 20000000) * 100
        for kind, ex in (("biasnight", [e0]), ("arc", [e0 + 1]), ("psfnight", [e0 + 1]),
                         ("flat", [e0 + 2]), ("fiberflatnight", [e0 + 2])):
            assert run_job(kind, NIGHT, ex, None, "a0") == 0
        assert run_job("science", NIGHT, [e0 + 3], None, "a0") == 0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root, env, e0 + 3


def _mpirun(n: int, env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(["mpiexec", "-n", str(n), sys.executable, "-m", "desinight", "step",
                           "run", *args], env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_bundles_over_ranks_match_one_process(calibrated):
    root, env, expid = calibrated
    sframe = root / "redux" / "t" / "exposures" / str(NIGHT) / f"{expid:08d}" / \
        f"sframe-r0-{expid:08d}.fits"
    single = fitsio.read(str(sframe), "FLUX")
    r = _mpirun(5, env, "science", "--night", str(NIGHT), "--expids", str(expid),
                "--cameras", "a0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(r.stdout.strip().splitlines()) == 3          # one summary line per camera
    np.testing.assert_allclose(fitsio.read(str(sframe), "FLUX"), single, rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_failing_camera_does_not_stop_the_others(calibrated):
    root, env, expid = calibrated
    psf = root / "redux" / "t" / "calibnight" / str(NIGHT) / f"psfnight-z0-{NIGHT}.fits"
    psf.rename(psf.with_suffix(".hidden"))
    try:
        r = _mpirun(4, env, "science", "--night", str(NIGHT), "--expids", str(expid),
                    "--cameras", "a0")
    finally:
        psf.with_suffix(".hidden").rename(psf)
    assert r.returncode == 1
    assert "z0: FAILED" in r.stdout and "b0: ok" in r.stdout and "r0: ok" in r.stdout


def test_individual_step_commands_reproduce_the_job(calibrated, tmp_path):
    from click.testing import CliRunner

    from desinight.cli.step_cmd import step
    root, env, expid = calibrated
    red = root / "redux" / "t"
    exp = f"{expid:08d}"
    raw = root / "raw" / str(NIGHT) / exp
    run = CliRunner(env=env).invoke
    for args in (
        ["preproc", "--raw", str(raw / f"desi-{exp}.fits.fz"), "--camera", "b0", "--bias",
         str(red / "calibnight" / str(NIGHT) / f"biasnight-b0-{NIGHT}.fits"),
         "--out", str(tmp_path / "pre.fits")],
        ["extract", "--preproc", str(tmp_path / "pre.fits"), "--psf",
         str(red / "calibnight" / str(NIGHT) / f"psfnight-b0-{NIGHT}.fits"), "--camera", "b0",
         "--out", str(tmp_path / "frame.fits")],
        ["sky", "--frame", str(tmp_path / "frame.fits"), "--fiberflat",
         str(red / "calibnight" / str(NIGHT) / f"fiberflatnight-b0-{NIGHT}.fits"),
         "--fiberassign", str(next(raw.glob("fiberassign-*.fits"))), "--camera", "b0",
         "--out", str(tmp_path / "sframe.fits")]):
        r = run(step, args)
        assert r.exit_code == 0, (args[0], r.output, r.exception)
    job = fitsio.read(str(red / "exposures" / str(NIGHT) / exp / f"sframe-b0-{exp}.fits"), "FLUX")
    np.testing.assert_allclose(fitsio.read(str(tmp_path / "sframe.fits"), "FLUX"), job,
                               rtol=1e-5, atol=1e-3)
