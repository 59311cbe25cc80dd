"""History operators can read: `history NIGHT|EXPID|JOB`, `show job`'s moves per attempt and
the report's attempts table (a retried timeout, links to every attempt's log), through the
CLI on the local backend."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys

import pytest

from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

STD = f"{N}/stdstars/1000"


def _cli_env(conf, *args: str, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), *args],
                       capture_output=True, text=True, timeout=180, env={**os.environ, **env})
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    return r


@pytest.fixture
def timed_out(tmp_path):
    """A night whose stdstars job overruns its time limit once, then is resubmitted and
    completes (the local backend's time limit scaled down to ~1 s)."""
    tpl = fast_templates(tmp_path / "templates", overrides={"stdstars": "sleep 60"})
    conf = write_config(tmp_path, templates=tpl,
                        extra="[kinds.stdstars]\ntime_minutes = 1\n")
    cli(conf, "init")
    write_night(tmp_path / "raw")
    env = {"DESINIGHT_LOCAL_TIME_SCALE": "0.02"}
    # the timeout leaves jobs not completed: exit 5 (docs/operator-guide.md, exit codes)
    _cli_env(conf, "ingest", str(N), "--wait", "--timeout", "120", env=env, code=5)
    (tpl / "stdstars.sh.j2").write_text('{% extends "base.sh.j2" %}{% block run %}true\n{% endblock %}\n')
    assert "resubmitted" in cli(conf, "resubmit", STD).stdout
    _cli_env(conf, "ingest", str(N), "--wait", "--timeout", "120", env=env)
    return tmp_path, conf


@pytest.mark.slow
def test_history_show_job_and_report_tell_what_happened(timed_out):
    root, conf = timed_out
    me = f"operator:{getpass.getuser()}"

    # history JOB: every move of both attempts, who made it, oldest first
    h = json.loads(cli(conf, "history", STD, "--json").stdout)
    assert h["target"] == f"job {STD}"
    moves = [(e["from"], e["to"], e["actor"], e["attempt"]) for e in h["events"]]
    assert moves[0] == ("planned", "submitted", "daemon", 1)
    assert ("running", "timeout", "daemon", 1) in moves
    assert ("timeout", "planned", me, 1) in moves
    assert ("planned", "submitted", "daemon", 2) in moves
    assert moves[-1][1:] == ("completed", "daemon", 2)
    for prev, nxt in zip(h["events"], h["events"][1:]):   # one unbroken chain
        assert prev["to"] == nxt["from"]
    # its dependents were settled and re-planned, by the daemon and the operator
    down = json.loads(cli(conf, "history", f"{N}/redshift/1000/26112404", "--json").stdout)["events"]
    settled = next(i for i, e in enumerate(down) if e["to"] == "dep_failed")
    assert down[settled]["reason"] == f"upstream {STD} timeout" and down[settled]["actor"] == "daemon"
    assert (down[settled + 1]["from"], down[settled + 1]["to"], down[settled + 1]["actor"]) == (
        "dep_failed", "planned", me)

    text = cli(conf, "history", STD).stdout
    assert text.startswith(f"history of job {STD}: {len(moves)} moves")
    assert "running -> timeout" in text and f"{me}@" in text and "resubmitted" in text

    # history EXPID: the exposure's own move and every job reading it
    he = json.loads(cli(conf, "history", "26112403", "--json").stdout)
    whats = {e["what"] for e in he["events"]}
    assert "exposure 26112403" in whats and STD in whats and f"{N}/science/26112403" in whats
    assert any(e["what"] == "exposure 26112403" and (e["from"], e["to"]) == ("ingested", "planned")
               for e in he["events"])
    # history NIGHT: everything of the night
    hn = json.loads(cli(conf, "history", str(N), "--json").stdout)
    assert len(hn["events"]) > len(he["events"]) and {e["what"] for e in he["events"]} < {
        e["what"] for e in hn["events"]}
    # an unknown target: one line, non-zero exit
    r = cli(conf, "history", "20261130", check=False)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "no EXPID, night or job id" in r.stderr

    # show job: the moves under the attempt they belong to
    show = cli(conf, "show", "job", STD).stdout
    a1, a2 = show.index("attempt 1"), show.index("attempt 2")
    assert a1 < show.index("running -> timeout") < a2 < show.index("-> completed by daemon")
    sj = json.loads(cli(conf, "show", "job", STD, "--json").stdout)
    assert len(sj["events"]) == len(moves)

    # the report: both attempts, the retried timeout, a link to each attempt's log
    out = root / "night.html"
    cli(conf, "report", str(N), "-o", str(out))
    html = out.read_text()
    assert '<p id="retried">1 timeout retried</p>' in html
    logs = [a["log"] for a in sj["attempts"]]
    assert len(logs) == 2
    for log in logs:
        assert f'href="file://{log}"' in html
    # stdstars and its 3 dependents (queued, then dep_failed) each have a retried attempt
    assert html.count('class="retried"') == 4 and html.count("timeout</span> retried") == 1
