"""Monitoring without a daemon: liveness rules, the `check` probe through the CLI, alert
events, notifications to a real local HTTP server, metrics text, configuration."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from desinight import liveness
from desinight.config import load_config
from desinight.core.errors import ConfigError
from desinight.core.states import JobState
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Attempt, Job, JobExposure
from tests.daemonkit import cli, write_config
from tests.monitorkit import Receiver

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
HOST = socket.gethostname()


# --- liveness ------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_liveness_says_why_the_daemon_is_not_running():
    fresh = (NOW - timedelta(seconds=3)).isoformat()
    old = (NOW - timedelta(minutes=4)).isoformat()
    me = f"{os.getpid()}@{HOST}"
    assert liveness.assess(fresh, me, None, NOW, 120).running
    dead = _dead_pid()
    live = liveness.assess(old, f"{dead}@{HOST}", None, NOW, 120)
    assert not live.running
    assert live.text == f"not running (last heartbeat 4 min ago; pid {dead} on {HOST} gone)"
    # a dead pid on this host is not running even before the heartbeat is stale
    assert not liveness.assess(fresh, f"{dead}@{HOST}", None, NOW, 120).running
    # another host: only the heartbeat can tell
    assert liveness.assess(fresh, "1234@elsewhere", None, NOW, 120).running
    other = liveness.assess(old, "1234@elsewhere", None, NOW, 120)
    assert other.text == "not running (last heartbeat 4 min ago; pid 1234 on elsewhere not checked from this host)"
    hung = liveness.assess(old, me, None, NOW, 120)
    assert not hung.running and "still there, not responding" in hung.text
    stopped = liveness.assess(old, me, (NOW - timedelta(minutes=3)).isoformat(), NOW, 120)
    assert not stopped.running and stopped.text.startswith("not running (stopped 3 min ago")
    assert liveness.assess(None, None, None, NOW, 120).text == "not running (never started)"


# --- a production to probe -------------------------------------------------------------------
@pytest.fixture
def prod(tmp_path, ctx, db_url):
    conf = write_config(tmp_path, db_url=db_url)
    return ctx, conf


def _beat(ctx, age_s: float = 1.0, pid_host: str | None = None) -> None:
    now = datetime.now(timezone.utc)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.set_service(s, prod, "heartbeat", (now - timedelta(seconds=age_s)).isoformat(), now)
        repo.set_service(s, prod, "daemon_pid", pid_host or f"{os.getpid()}@{HOST}", now)


def _job(ctx, key: str, state: JobState, reason: str | None = None, att_state: JobState | None = None,
         att_reason: str | None = None, night: int = 20261124, expid: int | None = None) -> None:
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.ensure_night(s, prod, night)
        job = Job(production_id=prod.id, key=key, kind="science", night=night, state=state.value,
                  reason=reason)
        s.add(job)
        s.flush()
        if expid is not None:
            s.add(JobExposure(job_id=job.id, expid=expid))
        s.add(Attempt(job=job, number=1, backend="fake", backend_id="7", comment="c",
                      attempt_dir="/nonexistent/a", script_path="/nonexistent/a/job.sh",
                      log_path="/nonexistent/a/job.log",
                      command="x", state=(att_state or state).value, reason=att_reason))


def _exposure(ctx, expid: int, arrived_min_ago: float, night: int = 20261124) -> None:
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.ensure_night(s, prod, night)
        repo.add_exposure(s, prod, expid=expid, night=night, obstype="SCIENCE", tileid=1,
                          raw_path="/raw", status="ingested",
                          arrived_at=datetime.now(timezone.utc) - timedelta(minutes=arrived_min_ago))


def _check(conf, *args):
    r = cli(conf, "check", *args, check=False)
    assert r.stdout.count("\n") == 1 and "|" in r.stdout and r.stderr == "", (r.stdout, r.stderr)
    return r.returncode, r.stdout.strip()


@pytest.mark.slow
def test_check_ok_then_each_problem_raises_its_status(prod):
    ctx, conf = prod
    rc, line = _check(conf)
    assert rc == 2 and line.startswith("DESINIGHT CRITICAL - daemon not running (never started)")
    _beat(ctx)
    rc, line = _check(conf)
    assert rc == 0 and line.startswith("DESINIGHT OK - daemon running (pid ")
    perf = dict(p.split("=", 1) for p in line.split(" | ")[1].split())
    assert {"heartbeat_age", "backend_error_age", "failed_jobs", "exposures_waiting",
            "pending_stuck", "state_free", "output_free"} <= set(perf)

    # failed jobs of the current night: WARNING by default, CRITICAL past --failed-crit
    _job(ctx, "20261124/science/1", JobState.FAILED, reason="exit code 3")
    rc, line = _check(conf)
    assert rc == 1 and "1 failed job(s) in night 20261124" in line and "exit code 3" in line
    assert _check(conf, "--failed-crit", "1")[0] == 2
    assert _check(conf, "--failed-warn", "0")[0] == 0

    # an exposure that arrived 45 min ago with no job in the batch system
    _exposure(ctx, 26112410, 45)
    rc, line = _check(conf, "--failed-warn", "0")
    assert rc == 1 and "1 exposure(s) of night 20261124 not processing after 45 min" in line
    assert _check(conf, "--failed-warn", "0", "--waiting-crit", "40")[0] == 2
    assert _check(conf, "--failed-warn", "0", "--waiting-warn", "60", "--waiting-crit", "90")[0] == 0
    rc, line = _check(conf, "--night", "20261123")     # another night: nothing there
    assert rc == 0 and "1 failed" not in line


@pytest.mark.slow
def test_check_finds_jobs_pending_forever_backend_errors_and_full_disks(prod):
    ctx, conf = prod
    _beat(ctx)
    _job(ctx, "20261124/science/2", JobState.PENDING, att_state=JobState.PENDING, att_reason="Priority")
    assert _check(conf)[0] == 0                          # waiting its turn: fine
    _job(ctx, "20261124/science/3", JobState.PENDING, att_state=JobState.PENDING,
         att_reason="InvalidAccount")
    rc, line = _check(conf)
    assert rc == 2 and "1 job(s) pending with a reason that never clears" in line
    assert "20261124/science/3: InvalidAccount" in line and "pending_stuck=1" in line

    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        s.delete(s.get(Job, s.scalar(Job.__table__.select().with_only_columns(Job.id)
                                     .where(Job.key == "20261124/science/3"))))
        repo.set_service(s, prod, "backend_error", "submit: sbatch: error: controller down",
                         datetime.now(timezone.utc) - timedelta(minutes=15))
    rc, line = _check(conf)
    assert rc == 1 and "backend error for 15 min: submit: sbatch: error: controller down" in line
    assert _check(conf, "--backend-error-crit", "12")[0] == 2
    # free space: no filesystem has more than 100 % free
    rc, line = _check(conf, "--disk-warn", "100", "--disk-crit", "0", "--backend-error-warn", "60",
                      "--backend-error-crit", "60")
    assert rc == 1 and "state dir" in line and "% free" in line


def test_check_is_unknown_when_the_database_cannot_be_read(tmp_path):
    conf = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "desinight.db").write_bytes(b"this is not a database" * 100)
    rc, line = _check(conf)
    assert rc == 3 and line.startswith("DESINIGHT UNKNOWN - ")
    rc, line = _check(conf, "--disk-warn", "5", "--disk-crit", "10")
    assert rc == 3 and "CRITICAL threshold is milder" in line


def test_status_says_not_running_with_the_dead_pid(prod):
    ctx, conf = prod
    dead = _dead_pid()
    _beat(ctx, age_s=240, pid_host=f"{dead}@{HOST}")
    want = f"not running (last heartbeat 4 min ago; pid {dead} on {HOST} gone)"
    import json
    data = json.loads(cli(conf, "status", "--json").stdout)
    assert data["health"]["daemon"] == want and data["health"]["daemon_running"] is False
    assert f"daemon: {want}" in cli(conf, "status").stdout


# --- alert events ----------------------------------------------------------------------------
def test_a_move_into_failure_is_one_warning_event_with_what_to_look_at(ctx, caplog):
    from desinight import orchestrate as O
    from tests.fakes import FakeBackend
    assert isinstance(ctx.backend, FakeBackend)
    seen = []
    ctx.on_event = lambda name, fields: seen.append((name, fields))
    ctx.loud = True                      # as in the daemon (DaemonMonitor.start)
    _exposure(ctx, 26112403, 1)
    _job(ctx, "20261124/science/26112403", JobState.PENDING, att_state=JobState.PENDING,
         expid=26112403)
    ctx.backend.finish("7", JobState.FAILED, exit_code=3)
    from desinight import alerts, transitions
    listener = alerts.move_listener(ctx)      # as DaemonMonitor.start registers it
    transitions.LISTENERS.append(listener)
    try:
        with caplog.at_level(logging.INFO, logger="desinight"):
            O.poll(ctx, datetime.now(timezone.utc))
            O.poll(ctx, datetime.now(timezone.utc))       # no move: no second event
    finally:
        transitions.LISTENERS.remove(listener)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["job_failed"]
    fields = warnings[0].fields
    assert fields == {"job": "20261124/science/26112403", "kind": "science", "night": 20261124,
                      "expid": "26112403", "state": "failed", "reason": "exit code 3",
                      "log": "/nonexistent/a/job.log", "actor": "daemon"}
    assert [n for n, _ in seen] == ["job_failed"]


# --- notifications ---------------------------------------------------------------------------
def _notifier(tmp_path, **cfg):
    from desinight.config import Config
    from desinight.notify import Notifier
    return Notifier(Config(**cfg), "test")


def test_fifty_failures_in_a_minute_are_at_most_two_messages(tmp_path):
    rx = Receiver()
    n = _notifier(tmp_path, notify_urls=(rx.url,), notify_min_interval_s=60.0)
    n.start()
    try:
        for i in range(50):
            n.on_event("job_failed", {"job": f"20261124/science/{i}", "night": 20261124,
                                      "state": "failed", "reason": "exit code 3"})
        n.on_event("submitted", {"job": "x"})      # not an alert: never sent
        posts = rx.wait_for(lambda p: len(p) >= 1, 10)
        assert "job failed" in posts[0]["title"]
        n.stop()                                    # sends what was held: one digest
        assert len(rx.posts) == 2
        assert "49 events (job_failed 49)" in rx.posts[1]["title"]
        assert rx.posts[1]["message"].count("job_failed") == 49
    finally:
        n.stop()
        rx.close()


def test_command_gets_one_json_document_and_its_failure_is_logged(tmp_path, caplog):
    import json
    out = tmp_path / "got.json"
    n = _notifier(tmp_path, notify_command=("sh", "-c", f"cat > {out}"), notify_min_interval_s=0.0)
    n.start()
    n.on_event("exposure_quarantined", {"night": 20261124, "expid": "00000012", "reason": "bad"})
    n.stop()
    doc = json.loads(out.read_text())
    assert doc["events"][0]["event"] == "exposure_quarantined" and doc["events"][0]["reason"] == "bad"
    assert doc["production"] == "test" and doc["level"] == "warning"

    bad = _notifier(tmp_path, notify_command=("sh", "-c", "echo nope >&2; exit 7"))
    with caplog.at_level(logging.WARNING, logger="desinight"):
        bad.start()
        bad.on_event("job_failed", {"job": "k"})
        bad.stop()
    failed = [r for r in caplog.records if r.getMessage() == "notify_failed"]
    assert len(failed) == 1 and "exited 7: nope" in failed[0].fields["error"]


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    n = _notifier(tmp_path, notify_command=("true",), notify_queue_size=2)
    for i in range(5):                              # sender not started: nothing drains
        n.on_event("job_failed", {"job": str(i)})
    assert n.dropped == 3 and n.queue.qsize() == 2


def test_digest_folds_identical_events_and_counts_dropped_ones():
    from desinight.notify import digest
    when = datetime.now(timezone.utc)
    ev = ("backend_outage_started", {"error": "poll: sacct: error: slurmdbd down"}, when)
    msg = digest([ev, ev, ev, ("job_failed", {"job": "k", "night": 20261124}, when)], "daily",
                 dropped=7)
    assert msg["title"] == "desinight daily: 4 events (backend_outage_started 3, job_failed 1)"
    assert "backend_outage_started error=poll: sacct: error: slurmdbd down (x3)" in msg["body"]
    assert "(7 more events dropped: the notification queue was full)" in msg["body"]
    assert msg["level"] == "error" and [e["count"] for e in msg["events"]] == [3, 1]


def test_a_quarantine_is_one_warning_line_with_its_reason(ctx, caplog):
    from desinight.ingest import ingest_night
    from tests.rawfixture import N, write_exposure
    ctx.loud = True
    write_exposure(ctx.cfg.raw_root, N, 7, "TWILIGHT")
    with caplog.at_level(logging.INFO, logger="desinight"):
        ingest_night(ctx, N, datetime.now(timezone.utc))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["exposure_quarantined"]
    assert warnings[0].fields["expid"] == "26112407" and "unknown OBSTYPE 'TWILIGHT'" in \
        warnings[0].fields["reason"]


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_text_parses_and_counts_scheduler_calls(ctx, tmp_path):
    from desinight.batch.slurm import SlurmBackend
    from desinight.metrics import Metrics
    ctx.backend = SlurmBackend(runner=lambda argv, timeout: "")
    ctx.backend.cancel(["1", "2"])
    _job(ctx, "20261124/science/1", JobState.FAILED)
    _job(ctx, "20261124/science/2", JobState.RUNNING)
    m = Metrics(ctx)
    m.tick("ingest", 0.02)
    m.beat(NOW)
    path = tmp_path / "tf" / "desinight.prom"
    m.write_textfile(path)
    fams = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    jobs = {(s.labels["state"], s.labels["kind"]): s.value for s in fams["desinight_jobs"].samples}
    assert jobs == {("failed", "science"): 1, ("running", "science"): 1}
    calls = {s.labels["command"]: s.value for s in fams["desinight_scheduler_calls"].samples
             if s.name.endswith("_total")}
    assert calls["scancel"] == 1 and calls["sbatch"] == 0
    assert fams["desinight_heartbeat_timestamp_seconds"].samples[0].value == NOW.timestamp()
    assert any(s.labels.get("tick") == "ingest" for s in fams["desinight_tick_duration_seconds"].samples)
    assert "desinight_arrival_to_submission_seconds" in fams
    assert fams["desinight_database_up"].samples[0].value == 1


# --- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[daemon]\nheartbeat_stale_s = 0", "daemon.heartbeat_stale_s must be between 1 and 86400"),
    ("[daemon]\nmetrics_port = 70000", "daemon.metrics_port must be 0 (off) or a port 1-65535"),
    ("[check]\nwaiting_warn_min = 50\nwaiting_crit_min = 10", "check.waiting_warn_min must be > 0 and <="),
    ("[check]\ndisk_warn_pct = 3\ndisk_crit_pct = 5", "check.disk_crit_pct <= check.disk_warn_pct"),
    ("[notify]\nurls = \"json://x\"", "notify.urls must be a list of non-empty strings"),
    ("[notify]\nurls = [\"slack\"]", "is not an Apprise URL"),
    ("[notify]\nnight_summary = 1", "notify.night_summary must be true or false"),
    ("[check]\nbogus = 1", "unknown key check.bogus"),
])
def test_monitoring_config_is_validated(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(p, env={})


def test_monitoring_config_reads(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[daemon]\nmetrics_port = 9464\nmetrics_textfile = "m/d.prom"\n'
                 '[notify]\nurls = ["json://127.0.0.1:1/"]\ncommand = "mail -s \'desinight\' ops"\n'
                 'min_interval_s = 60\n[check]\nfailed_crit = 5\n'
                 'pending_never_clear = ["InvalidAccount"]\n')
    cfg = load_config(p, env={})
    assert cfg.metrics_port == 9464 and cfg.metrics_textfile == tmp_path / "m" / "d.prom"
    assert cfg.notify_command == ("mail", "-s", "desinight", "ops")
    assert cfg.notify_min_interval_s == 60.0 and cfg.check_failed_crit == 5
    assert cfg.check_pending_never_clear == ("InvalidAccount",)


# --- the daemon's monitor, driven by hand ------------------------------------------------------
def _monitor(ctx):
    from desinight.monitor import DaemonMonitor
    events = []
    ctx.on_event = lambda name, fields: events.append((name, fields))
    m = DaemonMonitor(ctx, lambda: datetime.now(timezone.utc))
    m.start()
    return m, events


def test_backend_outage_start_and_end_are_one_event_each(ctx):
    m, events = _monitor(ctx)
    m._beat()
    with transaction(ctx.sessions) as s:
        repo.set_service(s, repo.get_production(s, ctx.production), "backend_error",
                         "submit: sbatch: error: Slurm controller not responding")
    m._beat()
    m._beat()                                          # still down: no second event
    with transaction(ctx.sessions) as s:               # `check` measures from the start
        st = repo.service_state(s, repo.get_production(s, ctx.production))
        assert st["backend_error_since"].value
    with transaction(ctx.sessions) as s:
        repo.clear_backend_error(s, repo.get_production(s, ctx.production), "submit",
                                 datetime.now(timezone.utc))
    m._beat()
    m.stop()
    names = [n for n, _ in events]
    assert names == ["backend_outage_started", "backend_outage_ended"]
    assert events[0][1]["error"].startswith("submit: sbatch: error")
    assert events[1][1]["lasted_s"] is not None
    with transaction(ctx.sessions) as s:
        st = repo.service_state(s, repo.get_production(s, ctx.production))
        assert st["heartbeat"].value and st["daemon_stopped"].value


def test_end_of_night_summary_once_when_a_closed_night_is_final(ctx):
    t0 = datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc)
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        repo.ensure_night(s, prod, 20261124)
        for expid, mins in ((26112400, 0), (26112401, 10), (26112402, 20)):
            repo.add_exposure(s, prod, expid=expid, night=20261124, obstype="SCIENCE", tileid=1,
                              raw_path="/raw", status="planned", arrived_at=t0 + timedelta(minutes=mins))
    # exposure 0: done in 5 min; 1: done in 15 min; 2: its job failed (not "done")
    for i, (expid, state, took) in enumerate(((26112400, JobState.COMPLETED, 5),
                                              (26112401, JobState.COMPLETED, 15),
                                              (26112402, JobState.FAILED, 1))):
        _job(ctx, f"20261124/science/{expid}", state, reason="exit code 3" if i == 2 else None,
             expid=expid)
        with transaction(ctx.sessions) as s:
            att = s.scalars(Attempt.__table__.select().with_only_columns(Attempt.id)
                            .order_by(Attempt.id.desc())).first()
            a = s.get(Attempt, att)
            a.ended_at = t0 + timedelta(minutes=10 * i + took)
    m, events = _monitor(ctx)
    m._beat()
    assert [n for n, _ in events] == []                # night not closed yet
    with transaction(ctx.sessions) as s:
        repo.ensure_night(s, repo.get_production(s, ctx.production), 20261124).closed = True
    m._beat()
    m._beat()
    m.stop()
    summaries = [f for n, f in events if n == "night_summary"]
    assert len(summaries) == 1
    s = summaries[0]
    assert s["states"] == {"completed": 2, "failed": 1} and s["jobs"] == 3
    assert s["failures"] == [{"job": "20261124/science/26112402", "state": "failed",
                              "reason": "exit code 3"}]
    assert s["exposures_done"] == 2
    assert s["arrival_to_done_median_s"] == 600 and s["arrival_to_done_max_s"] == 900
    from desinight.alerts import summary_text
    assert "median 10.0 min, max 15.0 min" in summary_text(s)


def test_sd_notify_never_blocks_on_a_receiver_that_does_not_read(tmp_path):
    from desinight.sdnotify import Notifier as SdNotifier
    from tests.monitorkit import NotifySocket
    sock = NotifySocket(tmp_path / "n.sock")
    sd = SdNotifier(str(sock.path))
    try:
        sent = [sd.send("WATCHDOG=1") for _ in range(5000)]   # far beyond the socket's queue
        assert sent[0] and not all(sent)
        assert not SdNotifier("").send("READY=1")              # outside systemd: a no-op
    finally:
        sd.close()
        sock.close()
