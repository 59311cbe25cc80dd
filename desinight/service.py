"""The daemon: APScheduler drives ingest, plan + submit, poll (with back-off) and the full
scan; all ticks run on one worker thread, so ticks never overlap and each is one short
sequence of transactions.

Crash safety: a ``flock`` on a per-production lock file keeps a second daemon out (the
kernel drops the lock when the process dies, even by ``kill -9``, so no stale pid files);
on start, ``reconcile`` settles submissions whose id was never recorded before anything
new is submitted.
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

from . import orchestrate as O
from . import rawdata, readers, watch
from .ingest import ingest_night, note_sightings
from .core.errors import BackendError, DesinightError
from .db import repo
from .db.engine import transaction

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
    def __init__(self, ctx: O.Context, clock=O.utc_now):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.now = clock
        self.candidates = watch.Candidates()
        self.stability = watch.Stability()
        self.poll_interval = self.cfg.poll_min_s
        self.submit_backoff_until = 0.0
        self.submit_backoff = 0.0
        self.dirty_nights: set[int] = set()
        self.stop_event = threading.Event()
        self.tick_error: str | None = None
        self.tick_errors: dict[str, str] = {}   # tick name -> its error, until it succeeds
        self.mode = watch.choose_mode(self.cfg.watch_mode, self.cfg.raw_root)
        self.lock = FileLock(self.cfg.state_dir.resolve() / f"daemon-{ctx.production}.lock")

    # --- ticks (all on the scheduler's single worker thread) ------------------------------
    def tick_ingest(self) -> None:
        """Look at changed exposure dirs; ingest the complete ones; plan and submit."""
        pending = self.candidates.drain()
        now = self.now()
        ready: dict[int, list[Path]] = {}
        for d in pending:
            if self.stability.look(d):
                self.stability.forget(d)
                ready.setdefault(int(d.parent.name), []).append(d)
            else:
                self.candidates.add(d)   # look again next tick: growing or not there yet
                self.candidates.event.clear()
        for night, dirs in sorted(ready.items()):
            counts = ingest_night(self.ctx, night, now, only=sorted(dirs),
                                    settle_s=self.cfg.settle_s)
            if counts.get("ingested") or counts.get("quarantined"):
                self.dirty_nights.add(night)
                self._close_earlier_nights(night)
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
        for night in sorted(self.dirty_nights):
            O.plan(self.ctx, night)
        self.dirty_nights.clear()
        if time.monotonic() < self.submit_backoff_until:
            return
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
        if n:
            self.poll_interval = self.cfg.poll_min_s

    def tick_poll(self) -> None:
        changes = O.poll(self.ctx, self.now())
        if changes:
            self.poll_interval = self.cfg.poll_min_s
            self.tick_plan_submit()      # finished parents may release children
        else:
            self.poll_interval = min(self.poll_interval * 1.5, self.cfg.poll_max_s)

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
        dirs = watch.scan_recent(self.cfg.raw_root)
        for d in dirs:
            if d.name not in self._known_names(int(d.parent.name)):
                self.candidates.add(d)
        note_sightings(self.ctx, dirs, self.now(), rawdata.list_nights(self.cfg.raw_root)[-2:])

    def _known_names(self, night: int) -> set[str]:
        with transaction(self.ctx.sessions) as s:
            prod = repo.get_production(s, self.ctx.production)
            known = repo.known_expids(s, prod, night)
        return {f"{e:08d}" for e in known}

    # --- life cycle -----------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        self.lock.acquire()
        observer = None
        try:
            self._record_start()
            O.reconcile(self.ctx, self.now())          # before anything new is submitted
            self.tick_scan()
            observer = watch.start_observer(self.cfg.raw_root, self.mode, self.candidates, 1.0)
            log.info("daemon_started", extra={"fields": {"production": self.ctx.production,
                                                           "watch": self.mode, "pid": os.getpid()}})
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
            self._loop()
            return 0
        finally:
            if observer is not None:
                observer.stop()
            self.lock.release()
            log.info("daemon_stopped", extra={"fields": {"production": self.ctx.production}})

    def _loop(self) -> None:
        """Scheduling on APScheduler, with the ticks serialised on one worker thread."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        sched = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)},
                                    job_defaults={"coalesce": True, "max_instances": 1,
                                                  "misfire_grace_time": 30})
        sched.add_job(self._guard(self.tick_ingest), "interval", seconds=1.0, id="ingest")
        sched.add_job(self._guard(self.tick_scan), "interval", seconds=self.cfg.full_scan_s, id="scan")
        sched.add_job(self._guard(self._poll_and_reschedule(sched), "poll"), "interval",
                      seconds=self.poll_interval, id="poll")
        sched.add_job(self._guard(self.tick_campaigns), "interval",
                      seconds=self.cfg.campaign_tick_s, id="campaigns")
        sched.start()
        try:
            while not self.stop_event.wait(0.2):
                pass
        finally:
            readers.close_shared(final=True)   # a tick waiting on a reader stops waiting now
            sched.shutdown(wait=True)   # lets a running tick finish its transaction

    def _poll_and_reschedule(self, sched):
        def run() -> None:
            self.tick_poll()
            sched.reschedule_job("poll", trigger="interval", seconds=self.poll_interval)
        return run

    def _guard(self, fn, name: str | None = None):
        """A tick that fails is logged and retried next time; it never kills the daemon.
        Its error (``tick_error:NAME``) stays until that same tick succeeds."""
        name = name or getattr(fn, "__name__", "tick").removeprefix("tick_")

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
        self.tick_error = "; ".join(f"{k}: {v}" for k, v in self.tick_errors.items()) or None
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


def run_daemon(ctx: O.Context) -> int:
    return Daemon(ctx).run()

