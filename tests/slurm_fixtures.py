"""Fixtures for tests against the real local SLURM cluster (scripts/local-slurm).

Imported by tests/conftest.py. ``slurm_cluster`` brings the cluster up once per session (a no-op
when it is already up) and points this process's SLURM clients at it through SLURM_CONF.
Without SLURM installed the tests skip with the reason, unless DESINIGHT_REQUIRE_SLURM=1
(scripts/test, CI): then a missing cluster is a failure, not a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SLURM = ROOT / "scripts" / "local-slurm"

__all__ = ["slurm_cluster", "slurm_backend", "slurm_no_kill_invalid_depend"]


@dataclass
class SlurmCluster:
    conf: Path

    def up(self, kill_invalid_depend: bool = True) -> None:
        """(Re)configure: `local-slurm up` rewrites slurm.conf and runs `scontrol reconfigure`."""
        argv = ["bash", str(LOCAL_SLURM), "up"]
        if not kill_invalid_depend:
            argv.append("--no-kill-invalid-depend")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"local-slurm up failed:\n{p.stdout}\n{p.stderr}")


def _unavailable(reason: str):
    if os.environ.get("DESINIGHT_REQUIRE_SLURM") == "1":
        pytest.fail(f"DESINIGHT_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        _unavailable("SLURM not installed (bash scripts/install-deps; then scripts/local-slurm up)")
    p = subprocess.run(["bash", str(LOCAL_SLURM), "env"], capture_output=True, text=True, check=True)
    conf = Path(p.stdout.strip().split("=", 1)[1])
    try:
        cluster = SlurmCluster(conf)
        cluster.up()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _unavailable(f"local SLURM cluster did not come up: {e}")
    os.environ["SLURM_CONF"] = str(conf)
    return cluster


@pytest.fixture
def slurm_backend(slurm_cluster):
    from desinight.batch.slurm import SlurmBackend
    return SlurmBackend()


@pytest.fixture
def slurm_no_kill_invalid_depend(slurm_cluster):
    """The cluster without kill_invalid_depend for one test (as some production sites run);
    the default is restored afterwards even if the test fails."""
    slurm_cluster.up(kill_invalid_depend=False)
    try:
        yield slurm_cluster
    finally:
        slurm_cluster.up(kill_invalid_depend=True)
