"""Helpers for the monitoring tests: a real local HTTP receiver, a systemd notify socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Receiver:
    """A real HTTP server on 127.0.0.1 (port 0) that records every POSTed JSON body."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.posts.append(json.loads(body or b"{}"))
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/"

    def wait_for(self, pred, timeout: float) -> list[dict]:
        """Wait (on the condition, no polling sleep) until ``pred(posts)`` holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.posts):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s; posts: {self.posts}")
                self.cond.wait(left)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def receive_until(self, wanted: set[str], timeout: float) -> list[str]:
        """Messages received until every line in ``wanted`` has been seen."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        seen: set[str] = set()
        while not wanted <= seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {wanted - seen}; got {got}")
            self.sock.settimeout(left)
            msg = self.sock.recv(4096).decode()
            got.append(msg)
            seen.update(msg.splitlines())
        return got

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
