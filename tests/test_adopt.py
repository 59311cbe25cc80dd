"""`resubmit --adopt`: a job whose declared outputs exist and match the checksums its step
recorded is recorded completed (through the one door), not run again; a changed output is not
trusted and the job runs."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.daemonkit import wait_for
from tests.rawfixture import N
from tests.test_kinds import qalook_production, run_cli

pytestmark = pytest.mark.slow


def test_resubmit_adopt_completes_jobs_whose_outputs_match(tmp_path):
    # qalook (declared in tests/test_kinds.py) writes its outputs, then its job dies: outputs
    # on disk, job failed (a crash in the job's last seconds)
    conf = qalook_production(tmp_path, science=2, template=(
        '{% extends "base.sh.j2" %}{% block run %}{{ super() }}exit 3\n{% endblock %}\n'))
    run_cli(conf, "ingest", str(N), "--wait", "--timeout", "150", check=False)
    a, b = f"{N - 20000000}03", f"{N - 20000000}04"
    out = tmp_path / "redux" / "test" / "exposures" / str(N)
    assert (out / a / f"qalook-r0-{a}.json").is_file()
    # exposure b's output changed since its step recorded it: not adopted, run again
    (out / b / f"qalook-z0-{b}.json").write_text("{}")

    r = run_cli(conf, "resubmit", "--night", str(N), "--failed", "--adopt")
    assert r.stdout.startswith("resubmitted 2 jobs (1 submitted now)"), r.stdout
    jobs = {j["key"]: j for j in json.loads(
        run_cli(conf, "status", "--night", str(N), "--json").stdout)["jobs"]}
    adopted, rerun = jobs[f"{N}/qalook/{a}"], jobs[f"{N}/qalook/{b}"]
    assert adopted["state"] == "completed" and adopted["attempts"] == 1   # no new attempt
    assert rerun["attempts"] == 2
    history = run_cli(conf, "history", f"{N}/qalook/{a}").stdout.replace("\n", " ")
    assert "adopted: its outputs exist and match the checksums" in history
    # the rerun (attempt 2, on the local backend) rewrites the changed file
    wait_for(lambda: "camera" in (out / b / f"qalook-z0-{b}.json").read_text(), 120,
             what="the rerun of the changed job to rewrite its output")


def test_ingest_adopt_into_a_new_database_skips_what_is_on_disk(tmp_path):
    """The database is lost; the outputs are not: `ingest --adopt` into a new database
    records the jobs whose outputs are on disk as recorded completed, and runs the rest."""
    conf = qalook_production(tmp_path)
    assert run_cli(conf, "ingest", str(N), "--wait", "--timeout", "150", check=False).returncode == 0
    # a new database (state dir) over the same outputs; the old attempts' scripts and logs go
    new = tmp_path / "new"
    new.mkdir()
    conf2 = new / "desinight.toml"
    conf2.write_text(conf.read_text().replace('state_dir = "state"', 'state_dir = "state2"')
                     .replace('"raw"', f'"{tmp_path / "raw"}"').replace('"redux"', f'"{tmp_path / "redux"}"'))
    shutil.rmtree(tmp_path / "redux" / "test" / "run" / str(N))
    run_cli(conf2, "init")
    r = run_cli(conf2, "ingest", str(N), "--wait", "--timeout", "150", "--adopt", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["key"]: j for j in json.loads(
        run_cli(conf2, "status", "--night", str(N), "--json").stdout)["jobs"]}
    qa = jobs[f"{N}/qalook/{N - 20000000}03"]
    assert qa["state"] == "completed" and qa["attempts"] == 0            # adopted, never run
    # the fast templates of the built-in kinds write no outputs: nothing to adopt, all ran
    assert all(j["attempts"] == 1 for k, j in jobs.items() if "/qalook/" not in k)
    assert len(jobs) == 10 and {j["state"] for j in jobs.values()} == {"completed"}


def test_campaign_run_adopt_into_a_new_database_skips_what_is_on_disk(tmp_path):
    """A campaign's database is lost; its outputs are not: the same manifest submitted into a
    new database and `campaign run --adopt` record the jobs whose outputs are in the
    campaign's directory as completed, and run the rest."""
    conf = qalook_production(tmp_path)
    run_cli(conf, "ingest", str(N))      # the source's exposures (its jobs need not end)
    m = tmp_path / "redo.toml"
    m.write_text(f'[campaign]\nname = "redo"\nsource = "test"\n[selection]\nnights = [{N}]\n')
    run_cli(conf, "campaign", "submit", str(m))
    r = run_cli(conf, "campaign", "run", "redo", "--poll", "0.3", "--timeout", "150", check=False)
    assert "10/10 completed" in r.stdout, r.stdout + r.stderr
    qa = f"{N}/qalook/{N - 20000000}03"
    # a new database (state dir) over the same directories; the old attempts' scripts and logs go
    conf2 = tmp_path / "new" / "desinight.toml"
    conf2.parent.mkdir()
    conf2.write_text(conf.read_text().replace('state_dir = "state"', 'state_dir = "state2"')
                     .replace('"raw"', f'"{tmp_path / "raw"}"').replace('"redux"', f'"{tmp_path / "redux"}"'))
    shutil.rmtree(tmp_path / "redux" / "redo" / "run" / str(N))
    run_cli(conf2, "init")
    run_cli(conf2, "ingest", str(N))
    run_cli(conf2, "campaign", "submit", str(m))
    r = run_cli(conf2, "campaign", "run", "redo", "--adopt", "--poll", "0.3", "--timeout", "150",
                check=False)
    assert r.returncode == 0 and "10/10 completed" in r.stdout, r.stdout + r.stderr
    jobs = {j["key"]: j for j in json.loads(run_cli(
        conf2, "--production", "redo", "status", "--night", str(N), "--json").stdout)["jobs"]}
    assert jobs[qa]["state"] == "completed" and jobs[qa]["attempts"] == 0   # adopted, never run
    # the fast templates of the built-in kinds write no outputs: nothing to adopt, all ran
    assert len(jobs) == 10 and all(j["attempts"] == 1 for k, j in jobs.items() if k != qa)
    history = run_cli(conf2, "--production", "redo", "history", qa).stdout.replace("\n", " ")
    assert "adopted: its outputs exist and match the checksums" in history
