"""Fault injection against the real SLURM cluster, with the daemon running: a job killed by
scancel behind desinight's back, the node set DOWN mid-job, slurmdbd stopped (sacct fails)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.daemonkit import (attempts_per_job, cli, fast_templates, start_daemon, status_json, stop_daemon,
                             wait_for, write_config)
from tests.rawfixture import N, write_night
from tests.test_daemon_slurm import RUN, completed

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.fault]
REPO = Path(__file__).resolve().parent.parent
NODE = os.uname().nodename


def slurm_up():
    subprocess.run(["bash", str(REPO / "scripts" / "local-slurm"), "up"], check=True,
                   capture_output=True, timeout=300)


@pytest.fixture
def night(tmp_path, slurm_cluster, db_url):
    """A night under a running daemon, on SQLite and PostgreSQL (``db_url``); the long
    cases that write nothing database-specific pin SQLite."""
    # psfnight runs long enough to be hit while running
    tpl = fast_templates(tmp_path / "tpl", overrides={"psfnight": "sleep 20"})
    conf = write_config(tmp_path, backend="slurm", templates=tpl,
                        db_url=None if db_url.startswith("sqlite") else db_url)
    cli(conf, "init")
    proc = start_daemon(conf, tmp_path / "daemon.out")
    write_night(tmp_path / "raw")
    yield tmp_path, conf, proc, (None if db_url.startswith("sqlite") else db_url)
    if proc.poll() is None:
        stop_daemon(proc)
    subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=resume"], capture_output=True)
    slurm_up()


def resume_node(timeout: float = 60) -> None:
    """`state=resume` is refused while the node is still completing the killed job: retry."""
    def resumed():
        subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=resume"], capture_output=True)
        st = subprocess.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], capture_output=True,
                            text=True).stdout.strip()
        return st.rstrip("*") in ("idle", "mixed", "allocated")
    wait_for(resumed, timeout, interval=2, what="the node to resume")


def job(conf, key):
    return next((j for j in status_json(conf, N)["jobs"] if j["key"] == key), {"state": None})


def running(conf, key):
    j = job(conf, key)
    return j["state"] == "running" and j


def test_scancel_behind_our_back(night):
    root, conf, proc, _ = night
    psf = wait_for(lambda: running(conf, f"{N}/psfnight"), 90, what="psfnight running")
    subprocess.run(["scancel", psf["backend_id"]], check=True)
    wait_for(lambda: job(conf, f"{N}/psfnight")["state"] == "cancelled", 60, what="cancelled seen")
    wait_for(lambda: job(conf, f"{N}/redshift/1000/26112404")["state"] == "dep_failed", 60,
             what="dependents settled")
    data = status_json(conf, N)
    fail = {f.get("job"): f for f in data["failures"]}
    assert "psfnight" in fail[f"{N}/science/26112403"]["reason"]
    assert job(conf, f"{N}/arc/26112401")["state"] == "completed"
    assert proc.poll() is None


# SQLite only: the longest fault test (the node must drain and resume), and what the daemon
# writes after it (a job ended not completed, its dependants dep_failed) is the cascade that
# test_scancel_behind_our_back already proves on PostgreSQL.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_node_down_mid_job_then_resumed(night):
    root, conf, proc, _ = night
    wait_for(lambda: running(conf, f"{N}/psfnight"), 90, what="psfnight running")
    subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=down", "reason=fault-test"],
                   check=True)
    # jobs are submitted --no-requeue: the killed attempt ends NODE_FAIL, final, and the daemon
    # (not SLURM) decides any retry
    wait_for(lambda: job(conf, f"{N}/psfnight")["state"] == "node_fail", 90,
             what="psfnight to end node_fail on the downed node")
    assert proc.poll() is None
    resume_node()
    wait_for(lambda: all(j["state"] in ("completed", "node_fail", "dep_failed")
                         for j in status_json(conf, N)["jobs"]) and len(status_json(conf, N)["jobs"]) == 11,
             240, what="the night to settle after the node came back")
    states = {j["key"]: j["state"] for j in status_json(conf, N)["jobs"]}
    assert states[f"{N}/psfnight"] == "node_fail"
    # what ran before psfnight completed; everything downstream of it is dep_failed
    assert states[f"{N}/biasnight"] == "completed" and states[f"{N}/arc/26112401"] == "completed"
    assert {k for k, v in states.items() if v == "dep_failed"} == set(states) - {
        f"{N}/biasnight", f"{N}/arc/26112401", f"{N}/psfnight"}, states
    assert set(attempts_per_job(root).values()) == {1}


# SQLite only (53 s a run): with sacct down the daemon writes each end from squeue or the
# job's exit record through the same _finish as any poll, nothing that depends on the
# database; the PostgreSQL-specific case, several ends written in one poll, is the cascade
# of test_scancel_behind_our_back.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_slurmdbd_down_states_come_from_squeue_and_exit_files(night):
    root, conf, proc, db = night
    wait_for(lambda: running(conf, f"{N}/psfnight"), 90, what="psfnight running")
    os.kill(int((RUN / "slurmdbd.pid").read_text()), signal.SIGTERM)
    try:
        wait_for(lambda: completed(conf), 240, what="the night to complete without sacct")
        assert proc.poll() is None
    finally:
        slurm_up()
    assert set(attempts_per_job(root, db).values()) == {1}
