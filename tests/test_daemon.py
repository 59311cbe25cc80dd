"""The daemon as a real process: local backend, exposures arriving one by one, crashes."""

from __future__ import annotations

import random
import signal
import time

import pytest
from sqlalchemy import create_engine, func, select

from desinight.db.models import Exposure, Job
from tests.daemonkit import (attempts_per_job, cli, init_production, night_completed, start_daemon,
                             status_json, stop_daemon, wait_for)
from tests.rawfixture import N, write_exposure

pytestmark = pytest.mark.slow

NIGHT = [("ZERO", -1, 1, 1), ("ARC", -1, 1, 1), ("FLAT", -1, 1, 1),
         ("SCIENCE", 1000, 1, 2), ("SCIENCE", 1000, 2, 2)]


def all_completed(conf):
    return night_completed(conf, N, 11)


@pytest.fixture
def prod(tmp_path, db_url):
    """On SQLite and PostgreSQL: the daemon's state writes and kill -9 recovery are the
    database's job (docs/daemon.md recommends PostgreSQL for production)."""
    return init_production(tmp_path, db_url=db_url)


def test_daemon_processes_a_night_as_it_arrives(prod):
    root, conf = prod
    proc = start_daemon(conf, root / "daemon.out")
    try:
        for i, (obstype, tile, seqnum, seqtot) in enumerate(NIGHT):
            d = write_exposure(root / "raw", N, i, obstype, tile, seqnum, seqtot)
            if i == 3:
                # a half-written raw file: truncated, request file already there
                raw = d / f"desi-{d.name}.fits.fz"
                full = raw.read_bytes()
                raw.write_bytes(full[: len(full) // 2])
                # the daemon looked at it and listed it as still in transfer, not ingested
                seen = wait_for(lambda: [u for u in status_json(conf, N).get("unfinished", [])
                                         if u["path"] == str(d)], 60, what="the half-written file listed")
                assert seen[0]["kind"] == "incomplete", seen
                assert int(d.name) not in [e["expid"] for e in status_json(conf, N)["exposures"]]
                raw.write_bytes(full)
            time.sleep(0.5)
        data = wait_for(lambda: all_completed(conf), 120, what="the night to complete")
        assert [e["status"] for e in data["exposures"]] == ["planned"] * 5
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _pid_at(proc) -> str:
    import socket
    return f"{proc.pid}@{socket.gethostname()}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)   # PostgreSQL: test_standby.py
def test_second_daemon_on_same_production_is_refused(prod):
    root, conf = prod
    proc = start_daemon(conf, root / "daemon.out")
    try:
        wait_for(lambda: status_json(conf)["health"]["daemon_pid"] == _pid_at(proc), 60,
                 what="the first daemon to hold the production")
        r = cli(conf, "daemon", check=False, timeout=30)
        assert r.returncode != 0 and "another desinight process holds" in r.stderr and "daemon-test.lock" in r.stderr
    finally:
        stop_daemon(proc)


def test_sigkill_at_random_moments_never_duplicates_or_loses(prod, db_url):
    root, conf = prod
    rng = random.Random(7)
    kills = 0
    proc = start_daemon(conf, root / "daemon.out")
    written = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if written < len(NIGHT) and rng.random() < 0.5:
                obstype, tile, seqnum, seqtot = NIGHT[written]
                write_exposure(root / "raw", N, written, obstype, tile, seqnum, seqtot)
                written += 1
            time.sleep(rng.uniform(0.2, 1.5))
            if kills < 20:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                proc = start_daemon(conf, root / "daemon.out")
            elif written == len(NIGHT) and all_completed(conf):
                break
        assert kills == 20
        wait_for(lambda: all_completed(conf), 120, what="the night to complete after the crashes")
    finally:
        stop_daemon(proc) if proc.poll() is None else None
    engine = create_engine(db_url)
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Exposure)) == len(NIGHT)
        assert c.scalar(select(func.count()).select_from(Job)) == 11
    engine.dispose()
    per_job = attempts_per_job(root, db_url)    # exactly one attempt that reached the backend per job
    assert len(per_job) == 11 and set(per_job.values()) == {1}
    # and the backend itself ran each job once
    import json
    comments = [json.loads(p.read_text())["comment"]
                for p in (root / "state" / "local-spool" / "jobs").glob("*/request.json")]
    assert len(comments) == 11 and len(set(c.rsplit(":", 2)[1] for c in comments)) == 11
