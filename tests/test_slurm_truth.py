"""SLURM is the truth for how an attempt ended: on the real local cluster, an operator cancel
that arrives after the job completed leaves the job completed, with the correction in its
history ("cancel too late: completed")."""

from __future__ import annotations

import json
import subprocess

import pytest
from tests.daemonkit import cli, init_production, status_json, wait_for
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

BIAS = f"{N}/biasnight"


def _sacct_state(bid: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", bid, "-o", "State"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] if out else ""


def test_cancel_after_completion_leaves_the_job_completed(tmp_path, slurm_cluster):
    root, conf = init_production(tmp_path, backend="slurm")
    write_exposure(root / "raw", N, 0, "ZERO", -1, 1, 1)
    cli(conf, "ingest", str(N))          # plans and submits; nobody polls yet
    job = next(j for j in status_json(conf, N)["jobs"] if j["key"] == BIAS)
    assert job["state"] == "submitted" and job["backend_id"]
    wait_for(lambda: _sacct_state(job["backend_id"]) == "COMPLETED", 120,
             what="SLURM to run the job to completion")

    # The operator cancels the night: the database has not seen the end yet.
    r = cli(conf, "cancel", str(N))
    assert f"cancelled 1 jobs: {BIAS}" in r.stdout
    assert status_json(conf, N)["jobs"][0]["state"] == "cancelled"

    # The next poll asks SLURM how the attempt ended, and SLURM says COMPLETED.
    cli(conf, "ingest", str(N), "--wait", "--timeout", "60")
    assert _sacct_state(job["backend_id"]) == "COMPLETED"
    shown = json.loads(cli(conf, "show", "job", BIAS, "--json").stdout)
    assert shown["state"] == "completed"
    assert shown["attempts"][0]["state"] == "completed"
    assert shown["attempts"][0]["reason"] == "cancel too late: completed"
    moves = [(e["from"], e["to"], e["reason"], e["actor"].split(":")[0]) for e in shown["events"]]
    assert ("cancelled", "completed", "cancel too late: completed", "daemon") == moves[-1]
    assert moves[-2][:3] == (moves[-2][0], "cancelled", "cancelled by operator")
    assert moves[-2][3] == "operator"
