"""The CLI end to end on the local backend (fast templates), asserting what operators read."""

from __future__ import annotations

import json

import pytest

from tests.daemonkit import cli, cli_inproc, fast_templates, write_config
from tests.rawfixture import N, write_exposure, write_night


@pytest.fixture
def prod(tmp_path):
    tpl = fast_templates(tmp_path / "templates", overrides={"stdstars": "exit 3"})
    conf = write_config(tmp_path, templates=tpl)
    assert "created production test" in cli(conf, "init").stdout
    assert "found production test" in cli(conf, "init").stdout
    write_night(tmp_path / "raw")
    write_exposure(tmp_path / "raw", N, 7, "TWILIGHT")
    return tmp_path, conf


@pytest.fixture(scope="module")
def processed(tmp_path_factory, module_db_url):
    """Nights N and N+1 processed once for the read-only views below (their set-up, two
    `ingest --wait`, was most of each test's time): stdstars fails, its 3 dependents
    dep_fail, the TWILIGHT exposure is quarantined. Tests using it must not change it."""
    root = tmp_path_factory.mktemp("processed")
    tpl = fast_templates(root / "templates", overrides={"stdstars": "exit 3"})
    conf = write_config(root, templates=tpl, db_url=module_db_url)
    cli(conf, "init")
    write_night(root / "raw")
    write_exposure(root / "raw", N, 7, "TWILIGHT")
    write_night(root / "raw", night=20261125)
    for night in (N, 20261125):   # exit 5: TWILIGHT quarantined, stdstars failed
        r = cli(conf, "ingest", str(night), "--wait", "--timeout", "120", check=False)
        assert r.returncode == 5, r.stdout + r.stderr
    return root, conf


def view(conf, *args: str, rc: int = 0):
    """A read-only command through the CLI's entry point, in-process (no start-up cost)."""
    r = cli_inproc(conf, *args)
    assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
    return r


@pytest.mark.slow
def test_ingest_wait_status_show_resubmit(prod):
    root, conf = prod
    r = cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)
    assert r.returncode == 5      # bad data found (the rest processed): one line each
    assert "4 job(s) did not complete" in r.stderr   # and jobs failed: exit 5 too
    assert f"desinight: ingest: {root / 'raw' / str(N) / '26112407'}: quarantined: unknown OBSTYPE 'TWILIGHT'" in r.stderr
    assert "5 exposures ingested, 1 quarantined" in r.stdout
    assert "failures" in r.stdout and "unknown OBSTYPE 'TWILIGHT'" in r.stdout
    data = json.loads(cli(conf, "status", "--json").stdout)
    assert data["schema"] == 1 and data["night"] == N
    states = {j["key"]: j["state"] for j in data["jobs"]}
    assert states[f"{N}/stdstars/1000"] == "failed"
    assert states[f"{N}/redshift/1000/26112404"] == "dep_failed"
    assert states[f"{N}/science/26112404"] == "completed"
    progress = {e["expid"]: e["progress"] for e in data["exposures"]}
    assert progress == {26112400: "done", 26112401: "done", 26112402: "done",
                        26112403: "failed", 26112404: "failed", 26112407: "quarantined"}
    fail = {f.get("job"): f for f in data["failures"]}
    assert "exit code 3" in fail[f"{N}/stdstars/1000"]["reason"]
    assert f"upstream {N}/stdstars/1000 failed" == fail[f"{N}/fluxcalib/26112403"]["reason"]

    show = cli(conf, "show", "job", f"{N}/stdstars/1000").stdout
    assert "attempt 1" in show and "exit=3" in show and "job.sh" in show and "job.log" in show
    assert "rerun by hand" in show
    sj = json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout)
    assert sj["attempts"][0]["exit_code"] == 3 and sj["attempts"][0]["backend_id"]

    # fix the cause (the template), resubmit, and everything completes
    (root / "templates" / "stdstars.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block run %}true\n{% endblock %}\n')
    r = cli(conf, "resubmit", "26112403")
    assert "resubmitted 4 jobs" in r.stdout
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)  # 5: TWILIGHT quarantined
    data = json.loads(cli(conf, "status", "--json").stdout)
    assert {j["state"] for j in data["jobs"]} == {"completed"}
    assert {e["progress"] for e in data["exposures"]} == {"done", "quarantined"}
    rows = {ln.split()[1]: ln for ln in cli(conf, "status").stdout.splitlines()
            if ln.startswith("│ 261124")}
    assert " done " in rows["26112403"] and " quarantined " in rows["26112407"]
    sj = json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout)
    assert [a["state"] for a in sj["attempts"]] == ["failed", "completed"]


def test_errors_are_one_line_with_exit_code(prod):
    root, conf = prod
    r = cli(conf, "show", "job", "20261124/psfnite", check=False)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "no job '20261124/psfnite'" in r.stderr
    r = cli(conf, "resubmit", "99999999", check=False)
    assert r.returncode == 3 and r.stderr.count("\n") == 1
    assert "99999999 is no EXPID, night or job id of production test" in r.stderr
    r = cli(conf, "ingest", "2026-11-24", check=False)
    assert r.returncode != 0 and "YYYYMMDD" in r.stderr
    bad = root / "bad.toml"
    bad.write_text('[desinight]\nbackend = "pbs"\n')
    r = cli(bad, "status", check=False)
    assert r.returncode == 2 and "desinight.backend must be one of local, slurm" in r.stderr
    empty = write_config(root / "empty") if (root / "empty").mkdir() is None else None
    r = cli(empty, "status", check=False)
    assert r.returncode != 0 and "run `desinight init` first" in r.stderr


@pytest.mark.slow
def test_rerun_here_leaves_production_alone_unless_recorded(prod):
    root, conf = prod
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)  # 5: TWILIGHT quarantined
    before = json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout)
    r = cli(conf, "rerun", f"{N}/stdstars/1000", "--here", check=False)
    assert r.returncode == 3 and "exit code 3" in r.stderr
    assert f"desinight: {N}/stdstars/1000 attempt 1" in r.stdout      # the job's own output
    after = json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout)
    assert after == before
    r = cli(conf, "rerun", f"{N}/stdstars/1000", check=False)
    assert r.returncode != 0 and "--here" in r.stderr
    (root / "templates" / "stdstars.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block run %}true\n{% endblock %}\n')
    # a run of one camera cannot settle the job: refused, nothing recorded
    r = cli(conf, "rerun", f"{N}/stdstars/1000", "--here", "--cameras", "b0", "--record", check=False)
    assert r.returncode == 1 and "--record needs the whole job" in r.stderr
    assert json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout) == before
    # the whole job, re-rendered from the fixed template, recorded: it settles the job and
    # releases the dependents it had failed
    cams = before["cameras"]
    r = cli(conf, "rerun", f"{N}/stdstars/1000", "--here", "--cameras", cams, "--record", check=False)
    assert r.returncode == 0, r.stderr
    after = json.loads(cli(conf, "show", "job", f"{N}/stdstars/1000", "--json").stdout)
    assert after["state"] == "completed"
    assert [a["backend"] for a in after["attempts"]] == ["local", "here"]
    assert after["attempts"][1]["command"].endswith("--cameras a0")   # b0,r0,z0 as a word
    released = {j["key"]: j["state"] for j in json.loads(cli(conf, "status", "--json").stdout)["jobs"]
                if j["kind"] in ("fluxcalib", "redshift")}
    assert released and set(released.values()) == {"planned"}, released
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)   # 5: TWILIGHT
    final = json.loads(cli(conf, "status", "--json").stdout)["jobs"]
    assert {j["state"] for j in final} == {"completed"}, [(j["key"], j["state"]) for j in final]
    # honest moves for the hand-run attempt: submitted, running, completed (no jump to running)
    moves = [(e["from"], e["to"], e["attempt"], e["actor"].split(":")[0]) for e in after["events"]
             if e["attempt"] == 2]
    assert moves == [("failed", "submitted", 2, "operator"), ("submitted", "running", 2, "operator"),
                     ("running", "completed", 2, "operator")]


def test_status_views(processed):
    root, conf = processed
    latest = json.loads(view(conf, "status", "--json").stdout)
    assert latest["night"] == 20261125 and len(latest["nights"]) == 2
    failed = json.loads(view(conf, "status", "--night", str(N), "--failed", "--json").stdout)
    assert {j["state"] for j in failed["jobs"]} == {"failed", "dep_failed"}
    assert [e["expid"] for e in failed["exposures"]] == [26112403, 26112404, 26112407]
    rng = json.loads(view(conf, "status", "--range", f"{N}:20261125", "--json").stdout)
    assert rng["range"] == [N, 20261125] and rng["exposures"] == []
    assert {f["night"] for f in rng["failures"] if f["kind"] == "stdstars"} == {N, 20261125}
    one = json.loads(view(conf, "status", "--expid", "26112403", "--json").stdout)
    assert [e["expid"] for e in one["exposures"]] == [26112403]
    assert all(26112403 in j["expids"] for j in one["jobs"])
    text = cli(conf, "status", "--night", str(N)).stdout     # the table, as a terminal-less pipe shows it
    assert "26112403" in text and "std✘" in text and "jobs: completed 7, dep_failed 3, failed 1" in text
    r = view(conf, "status", "--production", "nope", rc=3)
    assert "no production named 'nope'" in r.stderr


def test_status_nights_lists_the_latest_and_sums_up_the_rest(processed):
    """`--nights N`: the N latest nights, the others in `earlier` (count, first night, the
    jobs an operator acts on); the table's default is 7, --json's every night."""
    root, conf = processed
    assert json.loads(view(conf, "status", "--json").stdout)["earlier"] is None
    one = json.loads(view(conf, "status", "--nights", "1", "--json").stdout)
    assert [n["night"] for n in one["nights"]] == [20261125]
    assert one["earlier"] == {"nights": 1, "first": N, "jobs": {"dep_failed": 3, "failed": 1}}
    # the night shown in detail is always listed, however old
    old = json.loads(view(conf, "status", "--night", str(N), "--nights", "1", "--json").stdout)
    assert [n["night"] for n in old["nights"]] == [N, 20261125] and old["earlier"] is None
    text = cli(conf, "status", "--nights", "1").stdout
    assert "1 earlier" in text and "dep_failed:3" in text and "failed:1" in text
    assert "1 earlier" not in cli(conf, "status").stdout      # 2 nights: both listed
    assert "--nights" in view(conf, "status", "--nights", "0", rc=2).stderr


def test_report_renders_in_a_browser(processed, tmp_path):
    import shutil
    import subprocess
    root, conf = processed
    out = tmp_path / "night.html"
    r = view(conf, "report", str(N), "-o", str(out))
    assert "wrote" in r.stdout and "11 jobs" in r.stdout
    html = out.read_text()
    # the 3 dep_failed jobs never ran: no bar for them
    assert html.count('class="bar"') == 8 and "unknown OBSTYPE" in html
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if __import__("os").environ.get("DESINIGHT_REQUIRE_BROWSER") == "1":
            pytest.fail("DESINIGHT_REQUIRE_BROWSER=1 but chromium is not installed")
        pytest.skip("chromium not installed")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert f"Night {N}" in dom and "7 completed" in dom and "1 failed" in dom
    assert dom.count("<rect") == 8 and "stdstars/1000" in dom
    assert "exit code 3" in dom


def test_show_exposure(processed):
    root, conf = processed
    data = json.loads(view(conf, "show", "exposure", "26112403", "--json").stdout)
    assert data["obstype"] == "SCIENCE" and data["tileid"] == 1000 and data["raw_path"].endswith(".fits.fz")
    assert {j["kind"]: j["state"] for j in data["jobs"]} == {
        "science": "completed", "stdstars": "failed", "fluxcalib": "dep_failed", "redshift": "dep_failed"}
    text = view(conf, "show", "exposure", "26112407").stdout
    assert "quarantined" in text and "unknown OBSTYPE" in text
    r = view(conf, "show", "exposure", "26112408", rc=3)
    assert "nearest: 26112407" in r.stderr


@pytest.mark.slow
def test_planted_timeout_shows_in_status_and_show(tmp_path):
    import os
    import subprocess
    import sys
    # flat jobs hang; the local backend's time limit (20 min x 0.005 = 6 s) ends them
    tpl = fast_templates(tmp_path / "templates", overrides={"flat": "sleep 300"})
    conf = write_config(tmp_path, templates=tpl)
    cli(conf, "init")
    write_night(tmp_path / "raw")
    env = {**os.environ, "DESINIGHT_LOCAL_TIME_SCALE": "0.005"}
    subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "ingest", str(N),
                    "--wait", "--timeout", "120"], env=env, check=False, capture_output=True, timeout=180)
    data = json.loads(cli(conf, "status", "--json").stdout)
    fail = {f.get("job"): f for f in data["failures"]}
    assert fail[f"{N}/flat/26112402"]["state"] == "timeout"
    assert "time limit" in fail[f"{N}/flat/26112402"]["reason"]
    assert fail[f"{N}/science/26112403"]["reason"] == f"upstream {N}/flat/26112402 timeout"
    text = cli(conf, "status").stdout
    assert "flatT" in text and "timeout" in text
    show = json.loads(cli(conf, "show", "job", f"{N}/flat/26112402", "--json").stdout)
    assert show["attempts"][0]["state"] == "timeout"
