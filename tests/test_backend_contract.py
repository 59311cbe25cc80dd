"""The backend contract (tests/backend_contract.py) against the real SLURM cluster and the test
fake (tests/fakes.py); the local backend runs the same cases in tests/test_local_backend.py."""

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


class TestFakeContract(BackendContract):
    """The fake the orchestration unit tests use behaves like the real backends."""

    # The fake has no time limit: a job runs until it ends or is cancelled. TIMEOUT reaches
    # the unit tests only as a state they set (``finish(bid, JobState.TIMEOUT)``).
    timeout_minutes = None
    poll_every_s = 0.05

    @pytest.fixture
    def backend(self):
        from tests.fakes import FakeBackend
        # the contract's never-runnable dependant ends CANCELLED: SLURM's kill_invalid_depend
        return FakeBackend(run_scripts=True, kill_invalid_depend=True)
