"""The daemon: APScheduler drives ingest, plan + submit, poll (with back-off) and the full
scan; all ticks run on one worker thread, so ticks never overlap and each is one short
sequence of transactions.

Crash safety: one active daemon per production (``leader.py``: the ``flock`` on a
per-production lock file with SQLite, a PostgreSQL session advisory lock across hosts; both
are dropped when the holder dies, even by ``kill -9``, so no stale pid files); ``--standby``
waits for that lock and takes over. On start, ``reconcile`` settles submissions whose id was
never recorded before anything new is submitted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from . import leader as L
from . import orchestrate as O
from . import readers, watch
from .batch.exitfile import EXIT_FILE
from .pollclock import PollClock
from .core import defaults as D
from .ingest import ingest_night, note_sightings
from .retry import auto_retry
from .core.errors import BackendError, DesinightError
from .core.states import BROKEN, JobState
from .db import repo
from .db.engine import transaction
from .monitor import DaemonMonitor

log = logging.getLogger("desinight")


class FileLock:
    """An ``flock`` on a file in the state dir: one daemon per production, one round at a
    time per campaign. The kernel drops it when the holder dies, even by SIGKILL."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock, or raise naming its holder; ``wait`` blocks until it is free."""
        if not self.try_acquire(wait):
            holder = self.path.read_text(errors="replace").strip() if self.path.exists() else ""
            raise DesinightError(f"another desinight process holds {self.path} "
                                 f"({holder or 'unknown pid'})")

    def try_acquire(self, wait: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Daemon:
    def __init__(self, ctx: O.Context, clock=O.utc_now, standby: bool = False):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.now = clock
        self.candidates = watch.Candidates()
        self.stability = watch.Stability()
        #: when to ask the backend next: the load budget (pollclock.py)
        self.pollclock = PollClock.from_config(self.cfg, time.monotonic())
        #: attempt dirs of queued/running jobs: an exit record there asks for an early poll
        self.exit_dirs: set[Path] = set()
        self.sched = None   # the running scheduler (``_loop``); None when ticks are driven by hand
        #: held around a tick's call into the scheduler and around taking it away at stop:
        #: APScheduler's shutdown(wait=True) holds its job-store lock while it waits for the
        #: running tick, so a tick then calling reschedule_job would wait for it forever
        self.sched_lock = threading.Lock()
        self.submit_backoff_until = 0.0
        self.submit_backoff = 0.0
        self.dirty_nights: set[int] = set()
        self.stop_event = threading.Event()
        self.tick_errors: dict[str, str] = {}   # tick name -> its error, until it succeeds
        self.mode = watch.choose_mode(self.cfg.watch_mode, self.cfg.raw_root)
        self.idle_submit_at = 0.0
        self.watcher: watch.Watcher | None = None
        #: wait for the active daemon's lock instead of exiting (``desinight daemon --standby``)
        self.standby = standby
        self.leader = L.for_daemon(self.cfg.database_url, self.cfg.state_dir, ctx.production)
        self.exit_code = 0
        self.monitor = DaemonMonitor(ctx, clock)   # heartbeat, watchdog, metrics, alerts

    # --- ticks (all on the scheduler's single worker thread) ------------------------------
    def tick_ingest(self) -> None:
        """Look at changed exposure dirs; ingest the complete ones; plan and submit.

        A dir whose request file (written last) was just closed or renamed into place is
        complete once its files are there; others need two equal looks of their sizes."""
        changed, complete = self.candidates.drain_split()
        now = self.now()
        ready: dict[int, list[Path]] = {}
        watched = {str(n) for n in self.watcher.nights()} if self.watcher is not None else None
        for d in changed | complete:
            if watched is not None and d.parent.name not in watched:
                self.stability.forget(d)      # its night left the window: `ingest NIGHT` reads it
                continue
            via = "marker" if d in complete and self.stability.present(d) else (
                "looks" if self.stability.look(d) else None)
            if via:
                self.stability.forget(d)
                ready.setdefault(int(d.parent.name), []).append(d)
                log.info("exposure_complete", extra={"fields": {"dir": str(d), "via": via}})
            else:
                self.candidates.add(d)   # look again next tick: growing or not there yet
                self.candidates.event.clear()
        for night, dirs in sorted(ready.items()):
            counts = ingest_night(self.ctx, night, now, only=sorted(dirs),
                                    settle_s=self.cfg.settle_s)
            if counts.get("ingested") or counts.get("quarantined"):
                self.dirty_nights.add(night)
                self._close_earlier_nights(night)
        if ready or self.dirty_nights or time.monotonic() >= self.idle_submit_at:
            self.idle_submit_at = time.monotonic() + D.IDLE_SUBMIT_S
            self.tick_plan_submit()

    def _close_earlier_nights(self, night: int) -> None:
        """Rule: data of a new night means earlier nights are over (end-of-night work)."""
        from sqlalchemy import select

        from .db.models import Night
        with transaction(self.ctx.sessions) as s:
            prod = repo.get_production(s, self.ctx.production)
            for row in s.scalars(select(Night).where(Night.production_id == prod.id,
                                                     Night.night < night, Night.closed.is_(False))):
                row.closed = True
                self.dirty_nights.add(row.night)

    def tick_plan_submit(self) -> None:
        planned = 0
        for night in sorted(self.dirty_nights):
            planned += O.plan(self.ctx, night)
        self.dirty_nights.clear()
        if time.monotonic() < self.submit_backoff_until:
            return
        if not planned and not O.submit_work_waiting(self.ctx):
            return      # nothing planned, no intent to settle: skip the full reads
        now = self.now()
        try:
            O.reconcile(self.ctx, now)
            n = O.submit_ready(self.ctx, now)
        except BackendError as e:
            # slurmctld down: retry with back-off instead of hammering it every second
            self.submit_backoff = min(max(2 * self.submit_backoff, 2.0), 60.0)
            self.submit_backoff_until = time.monotonic() + self.submit_backoff
            log.warning("submit_backoff", extra={"fields": {"seconds": self.submit_backoff,
                                                            "error": str(e)}})
            return
        self.submit_backoff = 0.0
        if n:   # confirm they reached the queue (a script that fails at once settles soon)
            self.exit_dirs = O.active_attempt_dirs(self.ctx)
            self._poll_soon("submitted")

    def tick_poll(self) -> None:
        changes: dict[str, int] = {}
        try:
            changes = O.poll(self.ctx, self.now())
        finally:   # a failed poll counts against the budget too: no hammering a sick slurmctld
            self.pollclock.polled(time.monotonic(), self.ctx.poll_latency_s, changed=bool(changes))
        retried = auto_retry(self.ctx)   # [desinight] auto_retry: NODE_FAIL/TIMEOUT/OOM only
        # the poll's own list when it has one (retries submit through tick_plan_submit,
        # which reads the dirs again)
        dirs = self.ctx.active_dirs
        self.exit_dirs = dirs if dirs is not None and not retried else O.active_attempt_dirs(self.ctx)
        if changes or retried:
            if any(JobState(k) in BROKEN for k in changes):
                self._poll_soon("failure")   # its dependents: cancelled now, confirmed soon
            self.tick_plan_submit()      # finished parents (or retried jobs) may be submitted

    def tick_exits(self) -> None:
        """A job's exit record appeared: its end wants an early poll (one lstat per active
        job, no scheduler call; the poll then asks SLURM, whose word is the truth)."""
        ended = {d for d in self.exit_dirs if os.path.lexists(d / EXIT_FILE)}
        if ended:
            self.exit_dirs -= ended
            self._poll_soon("ended")

    def _poll_soon(self, reason: str) -> None:
        """An answer is needed: poll early if the budget allows (``PollClock.want``)."""
        if self.pollclock.want(time.monotonic(), reason):
            log.debug("poll_soon", extra={"fields": {"reason": reason}})
            self._reschedule_poll()

    def _reschedule_poll(self) -> None:
        from apscheduler.jobstores.base import JobLookupError
        with self.sched_lock:
            if self.sched is None:
                return   # driven by hand, or stopping
            try:
                self.sched.reschedule_job("poll", trigger="interval",
                                          seconds=max(0.05, self.pollclock.due - time.monotonic()))
            except JobLookupError:
                pass   # the scheduler is shutting down

    def tick_campaigns(self) -> None:
        """One poll + submit round per submitted campaign, under its throttle. A campaign
        whose lock is taken (`campaign run` in a tick) is skipped this round."""
        from . import campaign as C
        first_error: Exception | None = None
        for name in C.unfinished_campaigns(self.ctx):
            lock = campaign_lock(self.cfg, name)
            if not lock.try_acquire():
                continue
            try:
                submitted = C.run_tick(C.campaign_context(self.ctx, name), self.now())
            except Exception as e:  # noqa: BLE001 - one campaign's trouble must not stall the others
                log.warning("campaign_tick_failed", extra={"fields": {"campaign": name, "error": str(e)[:200]}})
                first_error = first_error or e
                continue
            finally:
                lock.release()
            if submitted:
                log.info("campaign_tick", extra={"fields": {"campaign": name, "submitted": submitted}})
        if first_error is not None:
            raise first_error

    def tick_scan(self) -> None:
        """The bounded safety net: the watched nights only, never the archive."""
        if self.watcher is not None:
            self.watcher.refresh()
            self.stability.keep_only({p.name for p in self.watcher.watched()})
        nights = watch.night_names(self.cfg.raw_root)[-(self.cfg.watch_nights + 1):]
        dirs = watch.scan_recent(self.cfg.raw_root, self.cfg.watch_nights + 1)
        known: dict[int, set[str]] = {}   # one database read per night, not per directory
        for d in dirs:
            night = int(d.parent.name)
            if night not in known:
                known[night] = self._known_names(night)
            if d.name not in known[night]:
                self.candidates.add(d)
        note_sightings(self.ctx, dirs, self.now(), nights)

    def _known_names(self, night: int) -> set[str]:
        with transaction(self.ctx.sessions) as s:
            prod = repo.get_production(s, self.ctx.production)
            known = repo.known_expids(s, prod, night)
        return {f"{e:08d}" for e in known}

    # --- life cycle -----------------------------------------------------------------------
    def _lead(self) -> bool:
        """Take the production's lock; a standby waits for it (False: stopped while waiting).

        Without ``standby`` a held lock is one error naming its holder (pid, host)."""
        if self.leader.try_acquire():
            return True
        if not self.standby:
            raise DesinightError(self.leader.refused())
        log.info("standby_waiting", extra={"fields": {"production": self.ctx.production,
                                                      "active": self.leader.holder(), "pid": os.getpid()}})
        while not self.stop_event.wait(D.STANDBY_RETRY_S):
            try:
                got = self.leader.try_acquire()
            except SQLAlchemyError as e:   # database restarting: keep waiting, say why
                log.warning("standby_retry_failed", extra={"fields": {"error": str(e).splitlines()[0][:200]}})
                continue
            if got:
                log.info("standby_took_over", extra={"fields": {"production": self.ctx.production,
                                                                "pid": os.getpid()}})
                return True
        return False

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        if not self._lead():
            return 0
        try:
            self._record_start()
            readers.pool_for(self.cfg).warm()   # readers ready before the first exposure
            self.monitor.start()
            O.reconcile(self.ctx, self.now(), settled=True)   # before anything new is submitted
            # watch first, then scan: nothing lands unseen between the two
            self.watcher = watch.start_watcher(self.cfg.raw_root, self.mode, self.candidates,
                                               self.cfg.watch_poll_s, self.cfg.watch_nights)
            self.tick_scan()
            self.ctx.event("daemon_started", production=self.ctx.production, watch=self.mode,
                           pid=os.getpid(), host=socket.gethostname(), lock=self.leader.kind)
            self.monitor.ready()   # READY=1 + first heartbeat: only once SIGTERM stops it cleanly
            self._loop()
            return self.exit_code
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            self.ctx.event("daemon_stopped", production=self.ctx.production, pid=os.getpid(),
                           host=socket.gethostname())
            self.monitor.stop()      # records the stop while still holding the lock: a
            self.leader.release()    # successor's heartbeat is always newer than our "stopped"

    def _loop(self) -> None:
        """Scheduling on APScheduler, with the ticks serialised on one worker thread."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)},
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": 30})
        sched.add_job(self._guard(self.tick_ingest), "interval", seconds=1.0, id="ingest")
        sched.add_job(self._guard(self.tick_scan), "interval", seconds=self.cfg.full_scan_s, id="scan")
        # the poll job re-arms itself at the budget's next due time after each run; its
        # interval is only the fallback should that fail
        sched.add_job(self._guard(self._poll_rearmed(), "poll"), "interval",
                      seconds=max(0.05, self.pollclock.due - time.monotonic()), id="poll")
        sched.add_job(self._guard(self.tick_exits), "interval", seconds=D.EXIT_LOOK_S, id="exits")
        sched.add_job(self._guard(self.tick_campaigns), "interval",
                      seconds=self.cfg.campaign_tick_s, id="campaigns")
        sched.add_job(self.check_leader, "interval", seconds=D.LEADER_CHECK_S, id="leader")
        self.sched = sched
        sched.start()
        try:
            while not self.stop_event.is_set():
                # a completion marker ingests now, queued on the same worker thread as
                # every tick (two instances: one running, one waiting, never more)
                if self.candidates.wake.wait(0.2):
                    self.candidates.wake.clear()
                    sched.add_job(self._guard(self.tick_ingest), id="ingest_now",
                                  replace_existing=True, max_instances=2)
        finally:
            readers.close_shared(final=True)   # a tick waiting on a reader stops waiting now
            self._stop_scheduler(sched)

    def _stop_scheduler(self, sched) -> None:  # noqa: ANN001 - APScheduler's scheduler
        """Let a running tick finish its transaction, then stop: no tick calls into the
        scheduler once its shutdown holds the job-store lock (``sched_lock``)."""
        with self.sched_lock:
            self.sched = None
        sched.shutdown(wait=True)

    def check_leader(self) -> None:
        """A daemon whose lock connection died has lost the lock: stop before a standby,
        now active, and this one both submit."""
        if not self.stop_event.is_set() and not self.leader.alive():
            log.error("leadership_lost", extra={"fields": {"production": self.ctx.production}})
            self.exit_code = 1
            self.stop_event.set()

    def _poll_rearmed(self):
        def tick_poll() -> None:   # named so: metrics and tick errors call it "poll"
            try:
                self.tick_poll()
            finally:
                self._reschedule_poll()
        return tick_poll

    def _guard(self, fn, name: str | None = None):
        """A tick that fails is logged and retried next time; it never kills the daemon.
        Its error (``tick_error:NAME``) stays until that same tick succeeds."""
        name = name or getattr(fn, "__name__", "tick").removeprefix("tick_")
        fn = self.monitor.wrap(fn)   # timed; heartbeat and watchdog after a healthy tick

        def run() -> None:
            if self.stop_event.is_set():
                return
            try:
                fn()
                if name in self.tick_errors:
                    self.tick_errors.pop(name)
                    self._record(f"tick_error:{name}", None)
            except readers.ReadersClosed:
                return   # stopping: the tick was cut short on purpose
            except Exception as e:  # noqa: BLE001 - the daemon must survive any one bad tick
                log.exception("tick_failed", extra={"fields": {"tick": name}})
                self.tick_errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                self._record(f"tick_error:{name}", self.tick_errors[name])
        return run

    def _record(self, key: str, value: str | None) -> None:
        """Best effort: with the disk full even this write fails, and status then shows
        the daemon's last poll getting old."""
        try:
            with transaction(self.ctx.sessions) as s:
                repo.set_service(s, repo.get_production(s, self.ctx.production), key, value, self.now())
        except Exception:  # noqa: BLE001 - already logged by the caller
            pass

    def _record_start(self) -> None:
        with transaction(self.ctx.sessions) as s:
            prod = repo.get_production(s, self.ctx.production)
            now = self.now()
            repo.set_service(s, prod, "daemon_pid", f"{os.getpid()}@{socket.gethostname()}", now)
            repo.set_service(s, prod, "daemon_started", now.isoformat(), now)
            repo.set_service(s, prod, "tick_error", None, now)   # pre-0002 key: now per tick
            # a tick that failed before a restart stays shown until it succeeds here
            self.tick_errors.update({k.split(":", 1)[1]: r.value for k, r in
                                     repo.service_state(s, prod).items()
                                     if k.startswith("tick_error:") and r.value})


def campaign_lock(cfg, name: str) -> FileLock:
    """Held for one round of a campaign (daemon tick or `campaign run` tick): two processes
    never submit the same campaign at once."""
    return FileLock(cfg.state_dir.resolve() / f"campaign-{name}.lock")


def run_daemon(ctx: O.Context, standby: bool = False) -> int:
    return Daemon(ctx, standby=standby).run()

