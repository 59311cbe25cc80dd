"""systemd's notify protocol, spoken directly (one datagram per message, no dependency).

With ``Type=notify`` systemd waits for READY=1 before it calls the service started; with
``WatchdogSec=`` it kills and restarts the service when WATCHDOG=1 stops coming. Outside
systemd ($NOTIFY_SOCKET unset) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("desinight")


class Notifier:
    def __init__(self, address: str | None = None):
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on the wire
        self.address = ("\0" + addr[1:]) if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        """Send e.g. "READY=1"; never raises, never blocks (a lost datagram only costs a
        watchdog beat, while a blocked send would hang the tick that systemd is watching)."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            self._sock.sendto(message.encode(), self.address)
            return True
        except BlockingIOError:   # the receiver is not reading: drop this one
            return False
        except OSError as e:
            if not self._warned:   # once: systemd gone away must not flood the log
                log.warning("sd_notify_failed", extra={"fields": {"error": str(e)}})
                self._warned = True
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
