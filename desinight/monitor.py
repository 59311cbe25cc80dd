"""The daemon's monitoring hooks in one place: heartbeat, systemd notify/watchdog, metrics,
notifications, backend-outage events and end-of-night summaries.

``service.Daemon`` calls ``start()`` / ``ready()`` / ``stop()`` around its life and wraps each
tick with ``wrap()``; everything else happens here, after a healthy tick, at most once per
heartbeat interval (one short transaction), so monitoring costs an idle daemon almost nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from functools import wraps

from sqlalchemy import select

from . import alerts, sdnotify, transitions
from .core import defaults as D
from .core.errors import DesinightError
from .db import repo
from .db.engine import transaction
from .db.models import Night
from .notify import Notifier

log = logging.getLogger("desinight")

#: nights looked at for an end-of-night summary: the latest few (older ones were summarised
#: when they finished; a resubmission weeks later is an operator's own business)
SUMMARY_NIGHTS = 7
#: at most one watchdog ping per second: ticks can run several times a second, and systemd
#: only needs one ping per WatchdogSec/2
WATCHDOG_EVERY_S = 1.0


class DaemonMonitor:
    def __init__(self, ctx, clock: Callable[[], datetime]):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.now = clock
        self.sd = sdnotify.Notifier()
        self.notifier = Notifier(self.cfg, ctx.production)
        self.metrics = None
        if self.cfg.metrics_port or self.cfg.metrics_textfile:
            from .metrics import Metrics
            self.metrics = Metrics(ctx)
        self.beat_every = min(D.HEARTBEAT_EVERY_S, self.cfg.heartbeat_stale_s / 3)
        self._last_beat = float("-inf")
        self._last_textfile = float("-inf")
        self._last_ping = float("-inf")
        self._backend_error: str | None = None
        self._error_since: datetime | None = None
        self._failing = False

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Before the first tick: hook the notifier onto the event bus, open the endpoint."""
        self.ctx.loud = True   # alert events are WARNING/ERROR lines in the daemon's log
        previous = self.ctx.on_event

        def on_event(name: str, fields: dict) -> None:
            previous(name, fields)
            self.notifier.on_event(name, fields)
        self.ctx.on_event = on_event
        # Every job move goes through transitions.transition(): hear the failures there,
        # for the nightly production and the campaigns the daemon carries alike.
        self._on_move = alerts.move_listener(self.ctx)
        transitions.LISTENERS.append(self._on_move)
        self.notifier.start()
        with transaction(self.ctx.sessions) as s:
            st = repo.service_state(s, repo.get_production(s, self.ctx.production))
            row = st.get("backend_error")
            if row is not None and row.value:
                self._backend_error, self._error_since = row.value, row.updated_at
        if self.metrics is not None and self.cfg.metrics_port:
            try:
                port = self.metrics.serve(self.cfg.metrics_port, self.cfg.metrics_addr)
            except OSError as e:   # port taken, address not on this host: one clear line
                raise DesinightError(f"daemon.metrics_port: cannot listen on {self.cfg.metrics_addr}:"
                                     f"{self.cfg.metrics_port}: {e.strerror or e}") from None
            log.info("metrics_listening", extra={"fields": {"addr": self.cfg.metrics_addr,
                                                              "port": port}})

    def ready(self) -> None:
        """Started: heartbeat now, and tell systemd (Type=notify) we are up."""
        self._beat()
        self.sd.send(f"READY=1\nSTATUS=watching {self.cfg.raw_root}\nMAINPID={os.getpid()}")

    def stop(self) -> None:
        """After the daemon_stopped event: record the clean stop, flush notifications."""
        self.sd.send("STOPPING=1")
        if getattr(self, "_on_move", None) in transitions.LISTENERS:
            transitions.LISTENERS.remove(self._on_move)
        try:
            with transaction(self.ctx.sessions) as s:
                now = self.now()
                repo.set_service(s, repo.get_production(s, self.ctx.production),
                                 "daemon_stopped", now.isoformat(), now)
        except Exception as e:  # noqa: BLE001 - a stop must finish; status then sees a stale beat
            log.warning("record_stop_failed", extra={"fields": {"error": str(e)[:200]}})
        self.notifier.stop()
        if self.metrics is not None:
            if self.cfg.metrics_textfile:
                self._write_textfile(force=True)
            self.metrics.close()
        self.sd.close()

    # --- per tick ---------------------------------------------------------------------------
    def wrap(self, fn: Callable[[], None]) -> Callable[[], None]:
        """The tick, timed; after it returns (a healthy tick): watchdog ping and heartbeat."""
        name = getattr(fn, "__name__", "tick").removeprefix("tick_")

        @wraps(fn)
        def run() -> None:
            t0 = time.monotonic()
            fn()
            self.after_tick(name, time.monotonic() - t0)
        return run

    def after_tick(self, name: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.tick(name, seconds)
        if time.monotonic() - self._last_ping >= WATCHDOG_EVERY_S:
            self._last_ping = time.monotonic()
            self.sd.send("WATCHDOG=1")
        if time.monotonic() - self._last_beat >= self.beat_every:
            self._beat()

    def _beat(self) -> None:
        """Heartbeat, outage start/end, end-of-night summaries, metrics: one transaction."""
        self._last_beat = time.monotonic()
        now = self.now()
        events: list[tuple[str, dict]] = []
        try:
            with transaction(self.ctx.sessions) as s:
                prod = repo.get_production(s, self.ctx.production)
                repo.set_service(s, prod, "heartbeat", now.isoformat(), now)
                row = repo.service_state(s, prod).get("backend_error")
                error = row.value if row is not None else None
                ev = alerts.outage_event(self._backend_error, error, self._error_since, now)
                if ev is not None:
                    events.append(ev)
                    self._error_since = now if error else None
                    # `check` measures an outage from its start, not from the last failed call
                    repo.set_service(s, prod, "backend_error_since",
                                     now.isoformat() if error else None, now)
                self._backend_error = error
                if self.cfg.notify_night_summary:
                    events += self._summaries(s, prod, now)
            if self.metrics is not None:
                self.metrics.beat(now)
                self.metrics.observe_submissions(now)
                self._write_textfile()
            self._failing = False
        except Exception as e:  # noqa: BLE001 - monitoring must never stop the work
            if not self._failing:   # once per run of failures, not once per tick
                log.warning("heartbeat_failed", extra={"fields": {"error": str(e)[:200]}})
            self._failing = True
        for name, fields in events:   # after the commit: an event is never about a rollback
            self.ctx.event(name, **fields)

    def _summaries(self, s, prod, now: datetime) -> list[tuple[str, dict]]:
        nights = s.scalars(select(Night.night).where(Night.production_id == prod.id,
                                                     Night.closed.is_(True))
                           .order_by(Night.night.desc()).limit(SUMMARY_NIGHTS)).all()
        st = repo.service_state(s, prod)
        out = []
        for night in nights:
            key = f"night_summary:{night}"
            if key in st:
                continue
            summary = alerts.night_summary(s, prod, night)
            if summary is not None:
                repo.set_service(s, prod, key, now.isoformat(), now)   # sent once, ever
                out.append(("night_summary", summary))
        return out

    def _write_textfile(self, force: bool = False) -> None:
        if self.metrics is None or not self.cfg.metrics_textfile:
            return
        if force or time.monotonic() - self._last_textfile >= D.METRICS_TEXTFILE_EVERY_S:
            self._last_textfile = time.monotonic()
            self.metrics.write_textfile(self.cfg.metrics_textfile)
