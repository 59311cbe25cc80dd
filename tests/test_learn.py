"""Resubmission learns: configuration in force now, growth after timeout/OOM, overrides."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from desinight.learn import next_resources
from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

BASE = {"nodes": 1, "ntasks": 1, "cpus_per_task": 1, "time_minutes": 10, "mem_mb": None,
        "account": None, "qos": None, "partition": None, "constraint": None}


def test_timeout_grows_time_oom_grows_memory_overrides_win():
    res, note = next_resources(BASE, {**BASE, "time_minutes": 20}, "timeout", {})
    assert res["time_minutes"] == 30 and note == "time 20 -> 30 min (timed out)"
    res, note = next_resources({**BASE, "time_minutes": 60}, {**BASE, "time_minutes": 20}, "timeout", {})
    assert res["time_minutes"] == 60 and note == "time_minutes 20 -> 60 (configuration)"
    res, note = next_resources(BASE, {**BASE, "time_minutes": 2000}, "timeout", {})
    assert res["time_minutes"] == 1440                       # capped
    res, note = next_resources(BASE, {**BASE, "mem_mb": 4000}, "out_of_memory", {})
    assert res["mem_mb"] == 6000 and note == "memory 4000 -> 6000 MB (out of memory)"
    res, note = next_resources(BASE, BASE, "out_of_memory", {})
    assert res["mem_mb"] is None and "no memory request to grow" in note
    res, note = next_resources(BASE, {**BASE, "time_minutes": 20}, "timeout",
                               {"time_minutes": 45, "qos": "urgent"})
    assert (res["time_minutes"], res["qos"]) == (45, "urgent")
    assert note == "time_minutes 20 -> 45 (operator); qos None -> urgent (operator)"
    res, note = next_resources(BASE, BASE, "failed", {})     # a step's own failure: no growth
    assert res == BASE and note is None


def _script_time(root, job: str, attempt: int) -> int:
    script = root / "redux" / "test" / "run" / job / f"attempt-{attempt}" / "job.sh"
    return int(re.search(r"#SBATCH --time=(\d+)", script.read_text()).group(1))


@pytest.mark.slow
def test_resubmit_after_a_timeout_renders_what_it_learned(tmp_path):
    tpl = fast_templates(tmp_path / "tpl", overrides={"stdstars": "sleep 60"})
    conf = write_config(tmp_path, templates=tpl, extra="[kinds.stdstars]\ntime_minutes = 2\n")
    conf.write_text(conf.read_text().replace('backend = "local"', 'backend = "local"\nmax_attempts = 5'))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    env = {**os.environ, "DESINIGHT_LOCAL_TIME_SCALE": "0.005"}

    def run(*args: str, code: int = 0) -> str:
        r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), *args],
                           capture_output=True, text=True, timeout=180, env=env)
        assert r.returncode == code, (args, r.returncode, r.stderr[-1500:])
        return r.stdout + r.stderr

    std = f"{N}/stdstars/1000"
    run("ingest", str(N), "--wait", "--timeout", "120", code=5)
    assert _script_time(tmp_path, std, 1) == 2
    out = run("resubmit", std)                                   # learned: x1.5
    assert f"{std}: time 2 -> 3 min (timed out)" in out
    assert _script_time(tmp_path, std, 2) == 3
    run("ingest", str(N), "--wait", "--timeout", "120", code=5)
    # the configuration raised meanwhile: in force now, it beats the learned 5 minutes
    conf.write_text(conf.read_text().replace("time_minutes = 2", "time_minutes = 20"))
    out = run("resubmit", std)
    assert f"{std}: time_minutes 3 -> 20 (configuration)" in out
    assert _script_time(tmp_path, std, 3) == 20
    run("ingest", str(N), "--wait", "--timeout", "120", code=5)
    out = run("resubmit", std, "--time", "7")                    # the operator's word wins
    assert f"{std}: time_minutes 20 -> 7 (operator)" in out
    assert _script_time(tmp_path, std, 4) == 7
    hist = json.loads(cli(conf, "show", "job", std, "--json").stdout)
    reasons = [e["reason"] for e in hist["events"] if e["to"] == "planned"]
    assert "resubmitted: time 2 -> 3 min (timed out)" in reasons
