"""The SLURM load budget (desinight/pollclock.py, docs/daemon.md "SLURM load budget"):
production cadence polls at most POLL_BURST + W / poll_s times in any W seconds, early only
when an answer is needed, and a night still completes; `status` says how fresh its states are."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from desinight.config import ConfigError, load_config
from desinight.core import defaults as D
from desinight.pollclock import PollClock
from tests.daemonkit import cli, fast_templates, night_completed, stop_daemon, wait_for
from tests.rawfixture import N, write_exposure

NIGHT = [("ZERO", -1, 1, 1), ("ARC", -1, 1, 1), ("FLAT", -1, 1, 1),
         ("SCIENCE", 1000, 1, 2), ("SCIENCE", 1000, 2, 2)]   # 11 jobs


def test_production_defaults_follow_schedmd():
    c = PollClock()
    assert c.regular() >= 30 and c.floor() >= 10
    c.latency = 20.0                      # a slurmctld taking 20 s per query
    assert c.regular() == c.floor() == 100.0


def _run(clock: PollClock, events: list[tuple[float, str | None]], until: float,
         changed: float = 0.5) -> list[tuple[float, bool]]:
    """Drive the clock like the daemon: a poll whenever due; wants at the given times.
    ``changed``: the chance that a poll sees a change. Returns (time, early) per poll."""
    polls, t, ev = [], 0.0, sorted(events)
    clock.due = 0.0
    while t < until:
        while ev and ev[0][0] <= t:
            clock.want(t, ev.pop(0)[1])
        if t >= clock.due:
            polls.append((t, clock.reason is not None))
            clock.polled(t, 0.05, changed=random.random() < changed)
        t = round(t + 0.5, 3)
    return polls


def test_early_polls_stay_within_the_budget():
    random.seed(7)
    clock = PollClock(poll_s=30, min_s=10, max_s=60)
    # an answer wanted every 2 s for an hour: the worst case a busy night can produce
    polls = _run(clock, [(t, "submitted") for t in range(0, 3600, 2)], 3600)
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:])]
    assert min(gaps) >= 10                             # never closer than poll_min_s
    times = [t for t, _ in polls]
    for w in (60, 300, 3600):                          # <= burst + W / poll_s in any window
        assert max(sum(1 for u in times if t <= u < t + w) for t in times) <= 2 + w / 30
    assert sum(early for _, early in polls) >= 10      # and the early ones do happen


def test_quiet_night_backs_off_and_an_answer_brings_the_poll_forward():
    clock = PollClock(poll_s=30, min_s=10, max_s=60)
    polls = _run(clock, [], 600, changed=0)
    assert polls[-1][0] - polls[-2][0] == 60           # nothing wanted: backed off to poll_max_s
    clock.due, clock.last_at, clock.reason, clock.last_early = 1000.0, 940.0, None, False
    assert clock.want(945.0, "failure") and clock.due == 950.0   # last poll + poll_min_s
    assert not clock.want(946.0, "submitted")          # already as early as allowed
    clock.polled(950.0, 0.05, changed=True)
    clock.polled(960.0, 0.05, changed=True)            # the bucket is empty now
    assert clock.want(961.0, "ended") and clock.due > 970.0   # waits for a token


def test_poll_s_is_a_checked_setting(tmp_path):
    conf = tmp_path / "d.toml"
    conf.write_text("[daemon]\npoll_s = 45\n")
    assert load_config(conf).poll_s == 45.0
    assert load_config(None).poll_s == D.POLL_S == 30.0
    conf.write_text("[daemon]\npoll_s = 0\n")
    with pytest.raises(ConfigError, match="daemon.poll_s must be between"):
        load_config(conf)


def _shims(d: Path, log: Path) -> dict[str, str]:
    """PATH shims that log each scheduler command with its time, then run the real one."""
    d.mkdir(parents=True, exist_ok=True)
    for cmd in ("sbatch", "sacct", "squeue", "scancel"):
        (d / cmd).write_text(f'#!/bin/bash\necho "{cmd} $(date +%s.%N)" >> "{log}"\n'
                             f'exec {shutil.which(cmd)} "$@"\n')
        (d / cmd).chmod(0o755)
    import os
    return {**os.environ, "PATH": f"{d}:{os.environ['PATH']}"}


@pytest.mark.slurm
@pytest.mark.slow
def test_production_cadence_night_completes_within_the_budget(tmp_path, slurm_cluster):
    tpl = fast_templates(tmp_path / "tpl")
    conf = tmp_path / "desinight.toml"   # production poll settings: no [daemon] poll keys
    conf.write_text('[desinight]\nproduction = "budget"\nraw_root = "raw"\nredux_root = "redux"\n'
                    f'state_dir = "state"\nbackend = "slurm"\ntemplates_dir = "{tpl}"\n')
    cli(conf, "init")
    log = tmp_path / "calls.log"
    env = _shims(tmp_path / "shims", log)
    with open(tmp_path / "daemon.out", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        t0 = time.monotonic()
        for i, spec in enumerate(NIGHT):
            write_exposure(tmp_path / "raw", N, i, *spec)
        wait_for(lambda: night_completed(conf, N, 11), 300, interval=1,
                 what="the night to complete at production cadence")
        minutes = (time.monotonic() - t0) / 60
        rc, _ = stop_daemon(proc, timeout=30)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    calls = [line.split()[0] for line in log.read_text().splitlines()]
    queries = calls.count("sacct") + calls.count("squeue")
    assert calls.count("sbatch") == 11
    # the submission burst is sbatch calls only: parents the same pass just submitted are
    # not asked again before their children's sbatch
    first, last = calls.index("sbatch"), len(calls) - 1 - calls[::-1].index("sbatch")
    assert set(calls[first:last + 1]) == {"sbatch"}, calls
    # Loose: the old 2 s cadence made ~60 queries a minute here; the budget allows ~6 a
    # minute for polls plus the parent checks before each submission wave.
    assert queries <= 12 * max(minutes, 1), (queries, minutes)
    # status says how fresh the states are, in words and in --json
    text = cli(conf, "status", "--night", str(N)).stdout
    assert "SLURM states as of" in text and "s ago" in text
    health = json.loads(cli(conf, "status", "--json").stdout)["health"]
    assert health["backend"] == "slurm" and health["states_as_of"]
    assert 0 <= health["states_age_s"] < 120


def test_an_exit_record_appearing_brings_the_poll_forward(ctx, tmp_path):
    """The daemon's exits tick (one lstat per active job) asks for an early poll when a job's
    exit record appears, and only once per record."""
    import time as _time

    from desinight.service import Daemon
    d = Daemon(ctx)
    now = _time.monotonic()
    d.pollclock.polled(now - 20, 0.01, changed=True)   # the last poll 20 s ago: next in 10 s
    due = d.pollclock.due
    job_dir = tmp_path / "attempt-1"
    job_dir.mkdir()
    d.exit_dirs = {job_dir}
    d.tick_exits()
    assert d.pollclock.due == due and d.pollclock.reason is None      # no record: no change
    (job_dir / "exit.json").write_text("{}")
    d.tick_exits()
    assert d.pollclock.reason == "ended" and d.pollclock.due < due     # poll_min_s after the last
    assert d.exit_dirs == set()                                        # asked once per record


def test_a_tick_rescheduling_the_poll_while_the_daemon_stops_does_not_hang_it(ctx):
    """APScheduler's shutdown(wait=True) holds its job-store lock while it waits for the
    running tick; a tick that then re-arms the poll (every poll does) must not wait for that
    lock: the daemon's stop hung forever that way (found under load by test_watch)."""
    import threading

    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    from desinight.service import Daemon
    d = Daemon(ctx)
    sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)})
    sched.add_job(lambda: None, "interval", seconds=3600, id="poll")
    running, go, done = threading.Event(), threading.Event(), threading.Event()

    def tick() -> None:
        running.set()
        go.wait(30)
        d._reschedule_poll()
        done.set()
    # an interval job run at once, not a one-shot: APScheduler removes a one-shot after its
    # run, and that removal racing the shutdown raised JobLookupError in its thread
    sched.add_job(tick, "interval", seconds=3600, id="tick", next_run_time=datetime.now())
    d.sched = sched
    sched.start()
    wait_for(running.is_set, 30, interval=0.05, what="the tick to run")
    stopper = threading.Thread(target=d._stop_scheduler, args=(sched,), daemon=True)
    stopper.start()

    def shutdown_holds_the_lock() -> bool:
        if sched._jobstores_lock.acquire(blocking=False):
            sched._jobstores_lock.release()
            return False
        return True
    wait_for(shutdown_holds_the_lock, 30, interval=0.01, what="shutdown to take the job-store lock")
    go.set()                                  # the tick re-arms the poll now
    stopper.join(30)
    assert not stopper.is_alive() and done.is_set()
