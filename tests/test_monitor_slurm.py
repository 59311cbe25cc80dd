"""`desinight check` against the real local SLURM cluster: a job pending for a reason that
never clears by itself is recorded by the poll and makes the probe CRITICAL."""

from __future__ import annotations

import subprocess

import pytest

from tests.daemonkit import cli, fast_templates, status_json, write_config
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_a_held_job_is_pending_forever_and_check_says_critical(tmp_path, slurm_cluster):
    tpl = fast_templates(tmp_path / "templates")
    # the bias job asks SLURM to hold it: PENDING with reason JobHeldUser until released
    (tpl / "biasnight.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block sbatch %}{{ super() }}#SBATCH --hold\n'
        "{% endblock %}{% block run %}true\n{% endblock %}\n")
    conf = write_config(tmp_path, backend="slurm", templates=tpl,
                        extra='heartbeat_stale_s = 60\n[check]\n'
                              'pending_never_clear = ["JobHeldUser", "JobHeldAdmin"]\n')
    cli(conf, "init")
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    job_id = None
    try:
        # --wait polls (recording the pending reason) until its timeout gives up
        r = cli(conf, "ingest", str(N), "--wait", "--timeout", "8", check=False, timeout=120)
        assert r.returncode == 1 and "not finished after 8 s" in r.stderr
        job = status_json(conf, N)["jobs"][0]
        job_id = job["backend_id"]
        assert job["state"] == "pending"
        r = cli(conf, "check", check=False)
        assert r.returncode == 2 and r.stdout.count("\n") == 1
        assert f"1 job(s) pending with a reason that never clears (e.g. {N}/biasnight: JobHeld" \
            in r.stdout and "pending_stuck=1" in r.stdout
    finally:
        if job_id:
            subprocess.run(["scancel", job_id], check=False, capture_output=True)
