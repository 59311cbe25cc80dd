"""The backend contract (tests/backend_contract.py) against the real SLURM cluster; the local
backend runs the same cases in tests/test_local_backend.py."""

from __future__ import annotations

import pytest

from tests.backend_contract import BackendContract


@pytest.mark.slurm
class TestSlurmContract(BackendContract):
    timeout_minutes = None      # SLURM's limit is >= 1 minute: tested in test_slurm_backend.py
    settle_s = 120.0
    poll_every_s = 0.5

    @pytest.fixture
    def backend(self, slurm_cluster):
        from desinight.batch.slurm import SlurmBackend
        return SlurmBackend()
