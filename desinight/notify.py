"""Notifications: the daemon's alert events, sent to Apprise URLs (Slack, Mattermost, mail, ...)
and/or to a command that reads one JSON document on stdin.

A tick only puts the event on a bounded queue (never blocks, drops and counts when full); one
background thread does the sending, so a slow or failing receiver never delays a tick. Rate
limit: the first event after a quiet interval goes out at once (someone hears of a failure in
seconds); what arrives within ``min_interval_s`` after a message is held and sent as one digest
when the interval ends, with identical events folded into one line with a count.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from . import alerts
from .config import Config

log = logging.getLogger("desinight")

Message = dict[str, Any]
_STOP = object()


class Notifier:
    def __init__(self, cfg: Config, production: str,
                 deliver: Callable[[Message], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.production = production
        self.interval = cfg.notify_min_interval_s
        self.urls = cfg.notify_urls
        self.command = cfg.notify_command
        self.timeout = cfg.notify_timeout_s
        self.deliver = deliver or self._deliver
        self.clock = clock
        self.queue: queue.Queue = queue.Queue(maxsize=cfg.notify_queue_size)
        self.dropped = 0
        self.sent = 0
        self._thread: threading.Thread | None = None
        self._apprise = None

    @property
    def enabled(self) -> bool:
        return bool(self.urls or self.command)

    # --- producer side (the daemon's tick thread) ---------------------------------------
    def on_event(self, name: str, fields: dict) -> None:
        """The ``Context.on_event`` hook: alerts only; never blocks, never raises."""
        if not alerts.is_alert(name):
            return
        try:
            self.queue.put_nowait((name, dict(fields), datetime.now(timezone.utc)))
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="desinight-notify", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is held (the daemon_stopped event with it), then end the thread."""
        if self._thread is None:
            return
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    # --- the sender thread -------------------------------------------------------------
    def _run(self) -> None:
        held: list[tuple[str, dict, datetime]] = []
        last_sent: float | None = None
        while True:
            now = self.clock()
            due = None if last_sent is None else last_sent + self.interval
            wait = 1.0 if not held or due is None else max(0.0, min(1.0, due - now))
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _STOP:
                if held:
                    self._send(held)
                return
            if item is not None:
                held.append(item)
            now = self.clock()
            if held and (last_sent is None or now >= last_sent + self.interval):
                self._send(held)
                held, last_sent = [], now

    def _send(self, events: list[tuple[str, dict, datetime]]) -> None:
        msg = digest(events, self.production, self.dropped)
        self.dropped = 0
        try:
            self.deliver(msg)
            self.sent += 1
        except Exception as e:  # noqa: BLE001 - a receiver's trouble is logged, never fatal
            log.warning("notify_failed", extra={"fields": {"error": str(e).splitlines()[0][:300]
                                                            if str(e) else type(e).__name__}})

    def _deliver(self, msg: Message) -> None:
        errors = []
        if self.urls:
            ok = self._apprise_object().notify(body=msg["body"], title=msg["title"],
                                               notify_type=_apprise_type(msg["level"]))
            if not ok:
                errors.append(f"apprise could not deliver to all of {len(self.urls)} URL(s)")
        if self.command:
            try:
                p = subprocess.run(list(self.command), input=json.dumps(msg), text=True,
                                   capture_output=True, timeout=self.timeout, check=False)
                if p.returncode != 0:
                    first = next((ln for ln in p.stderr.splitlines() if ln.strip()), "")
                    errors.append(f"{self.command[0]} exited {p.returncode}: {first}")
            except subprocess.TimeoutExpired:
                errors.append(f"{self.command[0]} took more than {self.timeout:g} s")
            except OSError as e:
                errors.append(f"{self.command[0]}: {e.strerror or e}")
        if errors:
            raise RuntimeError("; ".join(errors))

    def _apprise_object(self):
        if self._apprise is None:
            import apprise
            ap = apprise.Apprise()
            for url in self.urls:
                if not ap.add(url):
                    log.warning("notify_bad_url", extra={"fields": {"url": _redact(url)}})
            self._apprise = ap
        return self._apprise


def digest(events: list[tuple[str, dict, datetime]], production: str, dropped: int = 0) -> Message:
    """One message for a batch of events: identical events folded, grouped by night."""
    folded: dict[str, list] = {}
    for name, fields, when in events:
        key = json.dumps([name, {k: v for k, v in fields.items() if k not in ("lasted_s",)}],
                         sort_keys=True, default=str)
        if key in folded:
            folded[key][3] += 1
        else:
            folded[key] = [name, fields, when, 1]
    items = list(folded.values())
    items.sort(key=lambda it: (it[1].get("night") or 0, it[2]))
    lines = [alerts.event_text(n, f) + (f" (x{c})" if c > 1 else "") for n, f, _, c in items]
    if dropped:
        lines.append(f"({dropped} more events dropped: the notification queue was full)")
    kinds: dict[str, int] = {}
    for name, *_ in events:
        kinds[name] = kinds.get(name, 0) + 1
    level = max(alerts.level_of(n) for n, *_ in events)
    if len(events) == 1:
        title = f"desinight {production}: {events[0][0].replace('_', ' ')}"
    else:
        title = (f"desinight {production}: {len(events)} events ("
                 + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")")
    return {"source": "desinight", "production": production, "host": socket.gethostname(),
            "title": title, "body": "\n".join(lines), "level": logging.getLevelName(level).lower(),
            "events": [{"event": n, "time": w.isoformat(), "count": c, **f}
                       for n, f, w, c in items],
            "dropped": dropped}


def _apprise_type(level: str):
    import apprise
    return {"error": apprise.NotifyType.FAILURE,
            "warning": apprise.NotifyType.WARNING}.get(level, apprise.NotifyType.INFO)


def _redact(url: str) -> str:
    """Scheme and host only: Apprise URLs carry tokens."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/')[0].split('@')[-1]}/..."
