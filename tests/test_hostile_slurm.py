"""Issue 12 on the real SLURM cluster: a hand run of a queued job's script (the script's
own "Rerun by hand: bash job.sh") never changes the recorded attempt."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.daemonkit import cli, fast_templates, status_json, write_config
from tests.rawfixture import N, write_exposure

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_hand_run_of_a_queued_job_leaves_its_attempt_alone(tmp_path, slurm_cluster):
    go = tmp_path / "GO"
    # The nightly bias waits for GO (a long-running parent); the per-arc job fails when not
    # started by SLURM, so the hand run fails and the real one completes.
    tpl = fast_templates(tmp_path / "templates", run="true", overrides={
        "biasnight": f"while [ ! -e {go} ]; do sleep 0.5; done",
        "arc": '[ -n "${SLURM_JOB_ID:-}" ] || { echo "not under SLURM" >&2; exit 7; }'})
    conf = write_config(tmp_path, backend="slurm", templates=tpl)
    cli(conf, "init")
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    write_exposure(tmp_path / "raw", N, 1, "ARC")
    cli(conf, "ingest", str(N))
    try:
        key = f"{N}/arc/{(N - 20000000) * 100 + 1}"
        job = json.loads(cli(conf, "show", "job", key, "--json").stdout)
        att = job["attempts"][0]
        assert job["state"] in ("submitted", "pending") and att["backend_id"]
        script = Path(att["script"])
        # by hand, as the script's header says, from a plain login shell
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_JOB", "DESINIGHT_"))}
        r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 7
        hand = list(script.parent.glob("hand-*/exit.json"))
        assert len(hand) == 1 and json.loads(hand[0].read_text())["exit_code"] == 7
        assert not (script.parent / "exit.json").exists()
        # even pointed at the attempt's own directory, a hand record (no SLURM id) is no result
        r = subprocess.run(["bash", str(script)], env={**env, "DESINIGHT_ATTEMPT_DIR": str(script.parent)},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 7 and json.loads((script.parent / "exit.json").read_text())["exit_code"] == 7
        # polls while the parent still runs: the attempt is untouched
        cli(conf, "ingest", str(N), "--wait", "--timeout", "6", check=False)
        job = json.loads(cli(conf, "show", "job", key, "--json").stdout)
        assert job["state"] in ("submitted", "pending") and len(job["attempts"]) == 1
        go.touch()
        cli(conf, "ingest", str(N), "--wait", "--timeout", "120")
    finally:
        go.touch()
    data = status_json(conf, N)
    assert {j["state"] for j in data["jobs"]} == {"completed"}
    job = json.loads(cli(conf, "show", "job", key, "--json").stdout)
    assert len(job["attempts"]) == 1 and job["attempts"][0]["state"] == "completed"
    rec = json.loads((script.parent / "exit.json").read_text())
    assert rec["tag"].endswith(f":{job['id']}:1") and rec["backend_id"] == att["backend_id"]
