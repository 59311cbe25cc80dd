"""One active daemon per production across hosts: two daemons on one PostgreSQL database with
separate state dirs (as on two workflow nodes), real processes; the takeover on the real cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from desinight.testhooks import CRASH_EXIT
from tests.daemonkit import cli, fast_templates, night_completed, status_json, stop_daemon, wait_for
from tests.rawfixture import N, write_exposure


NIGHT = [("ZERO", -1, 1, 1), ("ARC", -1, 1, 1), ("FLAT", -1, 1, 1),
         ("SCIENCE", 1000, 1, 2), ("SCIENCE", 1000, 2, 2)]          # 11 jobs


@pytest.fixture
def pg_url():
    base = os.environ.get("DESINIGHT_TEST_PG_URL")
    if not base:
        pytest.skip("PostgreSQL not available (set DESINIGHT_TEST_PG_URL; scripts/local-postgres up)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    name = f"dn_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def two_hosts(root: Path, db_url: str, backend: str, run: str) -> tuple[Path, Path, str]:
    """Config files of "host a" and "host b": one database, one raw and output tree (shared
    filesystems), each its own state dir. The production has a name of its own (the SLURM
    cluster is shared, and jobs are found by their tag)."""
    name = f"sb{uuid.uuid4().hex[:8]}"
    templates = fast_templates(root / "templates", run=run)
    confs = []
    for host in ("a", "b"):
        d = root / host
        d.mkdir()
        conf = d / "desinight.toml"
        conf.write_text("\n".join([
            "[desinight]", f'production = "{name}"', f'raw_root = "{root / "raw"}"',
            f'redux_root = "{root / "redux"}"', 'state_dir = "state"', f'backend = "{backend}"',
            f'templates_dir = "{templates}"', f'db_url = "{db_url}"',
            "[daemon]", "poll_min_s = 0.5", "poll_max_s = 2.0", "full_scan_s = 5.0"]) + "\n")
        confs.append(conf)
    cli(confs[0], "init")
    return confs[0], confs[1], name


def daemon(conf: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(conf.parent / "daemon.out", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon",
                                 *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def logged(conf: Path, name: str, event: str) -> bool:
    log = conf.parent / "state" / f"daemon-{name}.log"
    return log.exists() and event in log.read_text(errors="replace")


@pytest.mark.postgres
@pytest.mark.slow
def test_second_daemon_on_another_host_is_refused_naming_the_holder(tmp_path, pg_url):
    a, b, name = two_hosts(tmp_path, pg_url, "local", "true")
    pa = daemon(a)
    try:
        wait_for(lambda: logged(a, name, "daemon_started"), 30, what="daemon a to start")
        r = cli(b, "daemon", check=False, timeout=60)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert f"pid {pa.pid} on {socket.gethostname()}" in lines[0]
        assert "--standby" in lines[0]
        assert pa.poll() is None
    finally:
        stop_daemon(pa)


@pytest.mark.postgres
@pytest.mark.slow
def test_standby_waits_and_stops_cleanly_on_sigterm(tmp_path, pg_url):
    a, b, name = two_hosts(tmp_path, pg_url, "local", "true")
    pa = daemon(a)
    try:
        wait_for(lambda: logged(a, name, "daemon_started"), 30, what="daemon a to start")
        pb = daemon(b, "--standby")
        wait_for(lambda: logged(b, name, "standby_waiting"), 30, what="daemon b to stand by")
        assert not logged(b, name, "daemon_started") and pb.poll() is None
        assert stop_daemon(pb)[0] == 0
        assert pa.poll() is None
    finally:
        stop_daemon(pa)


@pytest.mark.postgres
@pytest.mark.slow
def test_active_daemon_that_loses_its_lock_connection_stops(tmp_path, pg_url):
    """The lock's session ended server-side (a network cut looks the same): the lock is gone,
    so the daemon stops with status 1 and the standby takes over."""
    from sqlalchemy import create_engine, text
    a, b, name = two_hosts(tmp_path, pg_url, "local", "true")
    pa = daemon(a)
    pb = None
    try:
        wait_for(lambda: logged(a, name, "daemon_started"), 30, what="daemon a to start")
        pb = daemon(b, "--standby")
        wait_for(lambda: logged(b, name, "standby_waiting"), 30, what="daemon b to stand by")
        admin = create_engine(pg_url)
        with admin.connect() as c:
            killed = c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE application_name = :n"),
                               {"n": f"desinight daemon pid {pa.pid} on {socket.gethostname()}"}).all()
        admin.dispose()
        assert killed == [(True,)]
        assert pa.wait(timeout=30) == 1
        assert logged(a, name, "leadership_lost")
        wait_for(lambda: logged(b, name, "standby_took_over"), 30, what="the standby to take over")
        assert stop_daemon(pb)[0] == 0
    finally:
        for p in (pa, pb):
            if p is not None and p.poll() is None:
                p.kill()


@pytest.mark.postgres
def test_lock_connection_keepalives_and_key(pg_url):
    """Server-side keepalives on the lock's own connection (a vanished host frees the lock);
    the key is the same for a production on every host, and differs between productions."""
    from desinight.core import defaults as D
    from desinight.leader import PgLeadership, lock_key
    from sqlalchemy import text
    first, second = PgLeadership(pg_url, "daily"), PgLeadership(pg_url, "daily")
    try:
        assert first.try_acquire() and not second.try_acquire()
        shown = [first.conn.execute(text(f"SHOW {k}")).scalar() for k in
                 ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")]
        assert shown == [str(D.LEADER_KEEPALIVE_IDLE_S), str(D.LEADER_KEEPALIVE_INTERVAL_S),
                         str(D.LEADER_KEEPALIVE_COUNT)]
        assert second.holder() == f"pid {os.getpid()} on {socket.gethostname()}"
        first.release()
        assert second.try_acquire()
    finally:
        first.release()
        second.release()
    assert lock_key("daily") == lock_key("daily") != lock_key("daily2")


@pytest.mark.postgres
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("death", ["sigkill", "between_sbatch_and_id"])
def test_standby_takes_over_when_the_active_daemon_is_killed(tmp_path, pg_url, slurm_cluster, death):
    """SIGKILL the active daemon during a realtime night on SLURM (or have it die right after
    its 3rd sbatch, before the id is written): the standby takes over within seconds
    (reconciling first), the night completes, and sacct shows every job's tag exactly once:
    zero duplicate submissions."""
    a, b, name = two_hosts(tmp_path, pg_url, "slurm", "sleep 1")
    env = {**os.environ, "DESINIGHT_TEST_CRASH_AT": "after_sbatch:3"} if death != "sigkill" else None
    pa = daemon(a, env=env)
    pb = None
    try:
        wait_for(lambda: logged(a, name, "daemon_started"), 30, what="daemon a to start")
        pb = daemon(b, "--standby")
        wait_for(lambda: logged(b, name, "standby_waiting"), 30, what="daemon b to stand by")
        for i, spec in enumerate(NIGHT[:3]):
            write_exposure(tmp_path / "raw", N, i, *spec)
        wait_for(lambda: sum(bool(j["backend_id"]) for j in status_json(b, N)["jobs"]) >= 2, 60,
                 what="daemon a's first submissions")
        if death == "sigkill":
            pa.send_signal(signal.SIGKILL)
        assert pa.wait(timeout=30) in (-signal.SIGKILL, CRASH_EXIT)
        t_kill = time.monotonic()
        wait_for(lambda: logged(b, name, "standby_took_over"), 30, interval=0.1,
                 what="the standby to take over")
        took = time.monotonic() - t_kill
        for i in range(3, len(NIGHT)):
            write_exposure(tmp_path / "raw", N, i, *NIGHT[i])
            time.sleep(1)          # a realtime night: exposures keep arriving
        wait_for(lambda: night_completed(b, N, 11), 240, what="the night to complete under b")
        assert stop_daemon(pb)[0] == 0
    finally:
        for p in (pa, pb):
            if p is not None and p.poll() is None:
                p.kill()
    # the takeover's seconds are bench/bench_takeover.py's figure; the wait above bounds it
    print(f"takeover after {death}: {took:.2f} s")
    jobs = status_json(b, N)["jobs"]
    # SLURM's record: every job's tag submitted exactly once, under the id the database holds.
    def tags() -> dict[str, list[str]]:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hour", "-o", "JobID,Comment"],
                             capture_output=True, text=True, check=True).stdout
        got: dict[str, list[str]] = {}
        for line in out.splitlines():
            jobid, _, comment = line.partition("|")
            if comment.startswith(f"desinight:{name}:"):
                got.setdefault(comment.rsplit(":", 1)[0], []).append(jobid)
        return got if len(got) == 11 else {}
    per_job = wait_for(tags, 30, what="sacct to list the night's 11 jobs")
    assert all(len(ids) == 1 for ids in per_job.values()), per_job
    assert sorted(ids[0] for ids in per_job.values()) == sorted(j["backend_id"] for j in jobs)


@pytest.mark.slow
def test_standby_on_sqlite_waits_on_the_flock(tmp_path):
    """SQLite is one host: --standby waits on the state dir's flock and takes over when the
    active daemon dies."""
    from tests.daemonkit import init_production
    root, conf = init_production(tmp_path)
    pa = daemon(conf)
    pb = None
    try:
        wait_for(lambda: logged(conf, "test", "daemon_started"), 30, what="daemon a to start")
        pb = daemon(conf, "--standby")
        wait_for(lambda: logged(conf, "test", "standby_waiting"), 30, what="daemon b to stand by")
        pa.send_signal(signal.SIGKILL)
        pa.wait(timeout=10)
        wait_for(lambda: logged(conf, "test", "standby_took_over"), 30, what="the standby to take over")
        write_exposure(root / "raw", N, 0, "ZERO")
        wait_for(lambda: night_completed(conf, N, 1), 60, what="the standby to process a night")
        assert stop_daemon(pb)[0] == 0
    finally:
        for p in (pa, pb):
            if p is not None and p.poll() is None:
                p.kill()
