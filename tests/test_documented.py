"""Documented behaviour the audit found untested (issue 19): `show night`, `show job --lines`,
`resubmit --night N --failed`, and config precedence (--config over $DESINIGHT_CONFIG over
./desinight.toml; flags over the file)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.daemonkit import cli, cli_inproc, fast_templates, stop_daemon, wait_for, write_config
from tests.prockit import ctrl_c_as_in_a_shell
from tests.rawfixture import N, write_night

FIVE_LINES = "for i in 1 2 3 4 5; do echo line-$i; done; exit 3"


def test_show_night_show_job_lines_and_resubmit_night_failed(tmp_path):
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl",
                                                          overrides={"stdstars": FIVE_LINES}))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)
    night = cli(conf, "show", "night", str(N)).stdout
    assert f"night {N}" in night and "26112403" in night and "stdstars/1000" in night
    r = cli(conf, "show", "night", "20261201", check=False)
    assert r.returncode == 3 and "not in production test" in r.stderr
    shown = cli(conf, "show", "job", f"{N}/stdstars/1000", "--lines", "2").stdout
    assert "last 2 lines of the log" in shown
    assert "line-4" in shown and "line-5" in shown and "line-3" not in shown
    r = cli(conf, "resubmit", "--night", str(N), check=False)
    assert r.returncode == 1 and "--night needs --failed" in r.stderr
    out = cli(conf, "resubmit", "--night", str(N), "--failed").stdout
    # the failed job and everything broken below it, nothing that completed
    assert out.startswith("resubmitted 4 jobs") and f"{N}/stdstars/1000" in out
    assert f"{N}/psfnight" not in out


def test_config_precedence(tmp_path):
    def config(where, production: str):
        where.mkdir(parents=True, exist_ok=True)
        (where / "desinight.toml").write_text(
            f'[desinight]\nproduction = "{production}"\nstate_dir = "state"\n')
        return where / "desinight.toml"

    local, named, explicit = config(tmp_path, "local"), config(tmp_path / "env", "named"), \
        config(tmp_path / "flag", "explicit")

    def init(*args: str, env_config: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("DESINIGHT_CONFIG", "SPECPROD")}
        if env_config:
            env["DESINIGHT_CONFIG"] = env_config
        r = subprocess.run([sys.executable, "-m", "desinight", *args, "init"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.split(" production ", 1)[1].split(":", 1)[0]

    assert init() == "local"                                            # ./desinight.toml
    assert init(env_config=str(named)) == "named"                       # $DESINIGHT_CONFIG
    assert init("--config", str(explicit), env_config=str(named)) == "explicit"   # --config
    assert init("--config", str(explicit), "--production", "flagged") == "flagged"  # flag > file
    assert local.exists()


# --- options the doc-to-test map (docs/test-map.md) found untested ------------------------------

@pytest.mark.slow
def test_resubmit_resource_overrides_then_cancel_job(tmp_path):
    """`resubmit --job J --mem/--qos/--partition` prints each override as the operator's and
    renders the memory into the new attempt's script; `cancel --job J` stops that attempt."""
    flag = tmp_path / "second-attempt-hangs"
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl", overrides={
        "stdstars": f"if [ -e {flag} ]; then sleep 120; fi; exit 3"}))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    assert cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False).returncode == 5
    std = f"{N}/stdstars/1000"
    flag.touch()
    out = cli(conf, "resubmit", "--job", std, "--mem", "999", "--qos", "debug",
              "--partition", "short").stdout
    lines = out.splitlines()
    assert f"{std}: mem_mb None -> 999 (operator); qos None -> debug (operator); " \
           "partition None -> short (operator)" in lines, out
    # the job and its three dependents, re-linked to the new attempt and queued behind it
    assert lines[-1].startswith("resubmitted 4 jobs (4 submitted now): "), out
    script = tmp_path / "redux" / "test" / "run" / std / "attempt-2" / "job.sh"
    assert "#SBATCH --mem=999M" in script.read_text()
    r = cli(conf, "cancel", "--job", std)
    assert std in r.stdout, r.stdout

    def state():
        return json.loads(cli_inproc(conf, "show", "job", std, "--json").stdout)["state"]
    wait_for(lambda: state() == "cancelled", 60, what="the cancelled attempt to settle")


@pytest.mark.slow
def test_daemon_log_file_and_check_stale(tmp_path):
    """`daemon --log-file F` logs to F (not state/daemon-PROD.log); `check --stale S` is
    CRITICAL once the heartbeat is older than S and OK below (the daemon frozen by SIGSTOP)."""
    conf = write_config(tmp_path)
    (tmp_path / "raw").mkdir()
    cli(conf, "init")
    log = tmp_path / "elsewhere.log"
    with open(tmp_path / "daemon.out", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon",
                                 "--log-file", str(log)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: log.exists() and "daemon_started" in log.read_text(), 60,
                 interval=0.2, what="the daemon's start in --log-file")
        assert not (tmp_path / "state" / "daemon-test.log").exists()
        wait_for(lambda: cli_inproc(conf, "check", "--stale", "3600").returncode == 0, 30,
                 interval=0.2, what="check OK with a fresh heartbeat")
        proc.send_signal(signal.SIGSTOP)
        try:
            r = wait_for(lambda: (lambda r: r if r.returncode == 2 else None)(
                cli_inproc(conf, "check", "--stale", "2")), 30, interval=0.5,
                what="check CRITICAL once the heartbeat is older than 2 s")
            assert r.stdout.startswith("DESINIGHT CRITICAL - daemon not running (last heartbeat") and len(r.stdout.strip().splitlines()) == 1, r.stdout
            assert cli_inproc(conf, "check", "--stale", "3600").returncode == 0
        finally:
            proc.send_signal(signal.SIGCONT)
        # thawed: a fresh heartbeat again, then a clean stop (its 10 s bound is tested elsewhere)
        wait_for(lambda: cli_inproc(conf, "check", "--stale", "2").returncode == 0, 60,
                 interval=0.5, what="a fresh heartbeat after SIGCONT")
        rc, _ = stop_daemon(proc, timeout=60)
        assert rc == 0 and "daemon_stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_campaign_run_once_and_timeout_exit_codes(tmp_path):
    """`campaign run NAME --once` does one round and exits 0 with jobs still queued;
    `--timeout` exits 1 with one line when the campaign is not done in time."""
    from tests.test_campaign import manifest
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl", run="sleep 2"))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    cli(conf, "ingest", str(N))
    assert "new jobs: 11" in cli(conf, "campaign", "submit", str(manifest(tmp_path, nights=(N,)))).stdout
    once = cli(conf, "campaign", "run", "reproc", "--once").stdout.strip()
    submitted, queued = re.fullmatch(
        r"campaign reproc: (\d+) jobs submitted; 0/11 completed, 0 failed, 0 held, (\d+) queued",
        once).groups()
    assert 1 <= int(submitted) == int(queued) <= 3, once     # the manifest's throttle is 3
    r = cli(conf, "campaign", "run", "reproc", "--timeout", "1", "--poll", "0.2", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "campaign reproc not finished after 1 s" in r.stderr


def test_exit_4_when_the_batch_system_does_not_answer(tmp_path):
    """A SLURM that does not answer (sbatch failing on PATH: the shared cluster is left alone)
    makes `ingest --no-wait` exit 4 with sbatch's one line."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool}: error: Unable to contact slurm '
                                 'controller (connect failure)" >&2\nexit 1\n')
        (fake / tool).chmod(0o755)
    conf = write_config(tmp_path, backend="slurm", templates=fast_templates(tmp_path / "tpl"))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "ingest", str(N),
                        "--no-wait"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert r.stderr == "desinight: error: sbatch: error: Unable to contact slurm controller " \
                       "(connect failure)\n"


@pytest.mark.slow
def test_exit_130_when_interrupted(tmp_path):
    """Ctrl-C (SIGINT) during `ingest --wait`: exit 130, no traceback."""
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl", run="sleep 30"))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "ingest",
                             str(N), "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ctrl_c_as_in_a_shell)
    try:
        wait_for(lambda: any(j["state"] == "running" for j in
                             json.loads(cli_inproc(conf, "status", "--json").stdout)["jobs"]),
                 60, interval=0.3, what="a job running while ingest waits")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    finally:
        if proc.poll() is None:
            proc.kill()
    cli(conf, "cancel", str(N))   # the queued jobs keep running otherwise
