"""The daemon against the real local SLURM cluster: a night as it arrives, and an outage of
slurmctld in the middle of it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.daemonkit import attempts_per_job, init_production, night_completed, start_daemon, status_json, stop_daemon, wait_for
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

NIGHT = [("ZERO", -1, 1, 1), ("ARC", -1, 1, 1), ("FLAT", -1, 1, 1),
         ("SCIENCE", 1000, 1, 2), ("SCIENCE", 1000, 2, 2)]
RUN = Path(os.environ.get("DESINIGHT_SLURM_DIR", "/tmp/desinight-slurm")) / "run"


def completed(conf, n=11):
    return night_completed(conf, N, n)


@pytest.fixture
def prod(tmp_path, slurm_cluster):
    return init_production(tmp_path, backend="slurm")


def test_daemon_on_slurm_processes_a_night(prod):
    root, conf = prod
    proc = start_daemon(conf, root / "daemon.out")
    try:
        for i, spec in enumerate(NIGHT):
            write_exposure(root / "raw", N, i, *spec)
            time.sleep(1)
        wait_for(lambda: completed(conf), 180, what="the night to complete on SLURM")
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    per_job = attempts_per_job(root)
    assert len(per_job) == 11 and set(per_job.values()) == {1}
    # every job really went through SLURM: sacct knows each id
    data = status_json(conf, N)
    ids = ",".join(j["backend_id"] for j in data["jobs"])
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,State"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 11 and all(line.endswith("|COMPLETED") for line in out)


def test_slurmctld_down_30s_mid_night_is_survived_and_caught_up(prod):
    root, conf = prod
    proc = start_daemon(conf, root / "daemon.out")
    try:
        for i in range(2):
            write_exposure(root / "raw", N, i, *NIGHT[i])
        wait_for(lambda: any(j["backend_id"] for j in status_json(conf, N)["jobs"]), 60,
                 what="first submissions")
        pid = int((RUN / "slurmctld.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0
                 or "DOWN" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout,
                 30, what="slurmctld to stop")
        t_down = time.monotonic()
        for i in range(2, len(NIGHT)):
            write_exposure(root / "raw", N, i, *NIGHT[i])
        wait_for(lambda: status_json(conf, N)["health"]["backend_error"], 40,
                 what="the outage to show in status")
        assert proc.poll() is None
        time.sleep(max(0.0, 30 - (time.monotonic() - t_down)))
        subprocess.run(["bash", "scripts/local-slurm", "up"], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=300)
        wait_for(lambda: completed(conf), 300, what="catch-up after slurmctld returns")
        assert status_json(conf, N)["health"]["backend_error"] is None
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["bash", "scripts/local-slurm", "up"], capture_output=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=300)
    per_job = attempts_per_job(root)
    assert len(per_job) == 11 and set(per_job.values()) == {1}
