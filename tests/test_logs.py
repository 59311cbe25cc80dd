"""`desinight logs JOB`: the latest attempt's log, -n, --attempt, and -f on a running job."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

SLOW_BIAS = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.4; done"


@pytest.mark.slow
def test_logs_follow_print_and_select(tmp_path):
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl",
                                                           overrides={"biasnight": SLOW_BIAS}))
    cli(conf, "init")
    write_night(tmp_path / "raw", N)
    cli(conf, "ingest", str(N), "--no-wait")
    job = f"{N}/biasnight"
    # -f from the start: every line, then it ends by itself when the attempt ends
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "logs", job, "-f"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [l for l in r.stdout.splitlines() if l.startswith("line-")] == [
        f"line-{i}" for i in range(1, 6)]
    assert f"{job} attempt 1" in r.stderr and "job.log" in r.stderr
    tail = cli(conf, "logs", job, "-n", "2").stdout.splitlines()
    assert tail == ["line-4", "line-5"]
    r = cli(conf, "logs", job, "--attempt", "2", check=False)
    assert r.returncode == 3 and "has attempts 1, not 2" in r.stderr
    r = cli(conf, "logs", f"{N}/nosuchjob", check=False)
    assert r.returncode == 3 and "Traceback" not in r.stderr
