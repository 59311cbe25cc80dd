"""Monitoring of the real daemon process: kill -9 seen by `status` and `check`, systemd's
notify socket, a planted failure reaching a real HTTP receiver, metrics scraped mid-night."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemonkit import cli, fast_templates, status_json, stop_daemon, wait_for, write_config
from tests.monitorkit import NotifySocket, Receiver, free_port
from tests.rawfixture import N, write_exposure, write_night

pytestmark = pytest.mark.slow


def start(conf: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def production(root: Path, extra: str = "", overrides: dict | None = None) -> Path:
    conf = write_config(root, templates=fast_templates(root / "templates", overrides=overrides),
                        extra=extra)
    cli(conf, "init")
    return conf


def check(conf: Path) -> tuple[int, str]:
    r = cli(conf, "check", check=False)
    assert r.stdout.count("\n") == 1 and r.stderr == "", (r.stdout, r.stderr)
    return r.returncode, r.stdout.strip()


def test_kill_9_is_seen_by_status_and_check_and_a_restart_clears_it(tmp_path):
    conf = production(tmp_path, extra="heartbeat_stale_s = 15")
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    sock = NotifySocket(tmp_path / "notify.sock")
    proc = start(conf, tmp_path / "d1.out", env={"NOTIFY_SOCKET": str(sock.path)})
    try:
        # systemd Type=notify: READY=1 once started, WATCHDOG=1 per healthy tick
        got = sock.receive_until({"READY=1", "WATCHDOG=1"}, timeout=60)
        assert got[0].startswith("READY=1")
        wait_for(lambda: status_json(conf, N)["jobs"] and
                 {j["state"] for j in status_json(conf, N)["jobs"]} == {"completed"}, 60,
                 what="the bias job to complete")
        rc, line = check(conf)
        assert rc == 0, line
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        h = wait_for(lambda: (lambda h: h if not h["daemon_running"] else None)(
            status_json(conf)["health"]), 5 + 10, what="status to say not running")  # the pid is gone: at once
        assert time.monotonic() - t0 < 15
        assert h["daemon"].startswith("not running (last heartbeat ") and \
            h["daemon"].endswith(f"pid {proc.pid} on {os.uname().nodename} gone)")
        assert "daemon: not running (last heartbeat" in cli(conf, "status").stdout
        rc, line = check(conf)
        assert rc == 2 and line.startswith("DESINIGHT CRITICAL - daemon not running") and " | " in line

        proc = start(conf, tmp_path / "d2.out", env={"NOTIFY_SOCKET": str(sock.path)})
        sock.receive_until({"READY=1"}, timeout=60)      # the restart's (drains the first's pings)
        wait_for(lambda: status_json(conf)["health"]["daemon_running"], 60, what="the restart")
        rc, line = check(conf)
        assert rc == 0 and line.startswith(f"DESINIGHT OK - daemon running (pid {proc.pid} ")
        rc, _ = stop_daemon(proc)
        assert rc == 0
        sock.receive_until({"STOPPING=1"}, timeout=10)
        h = status_json(conf)["health"]
        assert not h["daemon_running"] and h["daemon"].startswith("not running (stopped ")
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()


def test_a_planted_failure_is_one_warning_line_and_one_post(tmp_path):
    rx = Receiver()
    conf = production(tmp_path, overrides={"biasnight": "exit 3"},
                      extra=f'[notify]\nurls = ["{rx.url}"]\nmin_interval_s = 5\n')
    proc = start(conf, tmp_path / "d.out")
    try:
        rx.wait_for(lambda p: any("daemon started" in x["title"] for x in p), 60)
        write_exposure(tmp_path / "raw", N, 0, "ZERO")
        failed = wait_for(lambda: [j for j in status_json(conf, N)["jobs"] if j["state"] == "failed"],
                          60, what="the bias job to fail")
        posts = rx.wait_for(lambda p: any("job_failed" in x["message"] for x in p), 30)
        post = next(x for x in posts if "job_failed" in x["message"])
        assert f"job={failed[0]['key']}" in post["message"] and "reason=exit code 3" in post["message"]
        rc, _ = stop_daemon(proc)
        assert rc == 0
        log = (tmp_path / "state" / "daemon-test.log").read_text().splitlines()
        lines = [ln for ln in log if "event=job_failed" in ln]
        assert len(lines) == 1 and "level=warning" in lines[0]
        for field in (f"job={failed[0]['key']}", "kind=biasnight", f"night={N}", "expid=26112400",
                      "state=failed", "reason='exit code 3'", "log="):
            assert field in lines[0], field
        assert sum("job_failed" in x["message"] for x in rx.posts) == 1
        assert any("event=daemon_started" in ln and "level=warning" in ln for ln in log)
        assert any("event=daemon_stopped" in ln and "level=warning" in ln for ln in log)
    finally:
        if proc.poll() is None:
            proc.kill()
        rx.close()


def _scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def test_metrics_endpoint_shows_jobs_moving_while_a_night_runs(tmp_path):
    port = free_port()
    conf = production(tmp_path, extra=f"metrics_port = {port}\nmetrics_textfile = \"m/d.prom\"\n",
                      overrides={"science": "sleep 2", "redshift": "sleep 2"})
    proc = start(conf, tmp_path / "d.out")
    states_seen: set[str] = set()
    try:
        wait_for(lambda: status_json(conf)["health"]["daemon_running"], 60, what="the daemon")
        write_night(tmp_path / "raw")

        def all_done() -> bool:
            fams = _scrape(port)
            jobs = {s.labels["state"]: s.value for s in fams["desinight_jobs"].samples}
            states_seen.update(st for st, v in jobs.items() if v)
            return bool(jobs) and set(k for k, v in jobs.items() if v) == {"completed"}
        wait_for(all_done, 120, interval=0.3, what="all jobs completed in the metrics")
        assert states_seen & {"planned", "submitted", "pending", "running"}, states_seen
        fams = _scrape(port)
        progress = {s.labels["progress"]: s.value for s in fams["desinight_exposures"].samples}
        assert progress == {"done": 5}
        lat = {s.name: s.value for s in fams["desinight_arrival_to_submission_seconds"].samples}
        assert lat["desinight_arrival_to_submission_seconds_count"] >= 1
        assert fams["desinight_heartbeat_timestamp_seconds"].samples[0].value > time.time() - 60
        assert {s.labels.get("tick") for s in fams["desinight_tick_duration_seconds"].samples} >= {"ingest", "poll"}
        stop_daemon(proc)
        text = (tmp_path / "m" / "d.prom").read_text()
        assert "desinight_jobs" in {f.name for f in text_string_to_metric_families(text)}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)


def test_a_taken_metrics_port_is_one_line_and_a_non_zero_exit(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        conf = production(tmp_path, extra=f"metrics_port = {busy.getsockname()[1]}")
        r = cli(conf, "daemon", check=False, timeout=60)
    assert r.returncode == 1 and "daemon.metrics_port: cannot listen on 127.0.0.1:" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("desinight: error:")


def test_ingest_wait_exits_5_when_jobs_failed(tmp_path):
    conf = production(tmp_path, overrides={"biasnight": "exit 3"})
    write_exposure(tmp_path / "raw", N, 0, "ZERO")
    r = cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("\n") == 1 and "1 job(s) did not complete" in r.stderr
    assert json.loads(cli(conf, "status", "--json").stdout)["jobs"][0]["state"] == "failed"
