"""Untrusted input is read in worker processes, never in the daemon.

Raw headers go through fitsio's C reader, and request, checksum and exit files are written
by whoever can write the raw tree or a job directory. A C library crashing on a hostile
file must cost one exposure, not the night, so all of it is parsed in a small pool of
persistent worker processes (``python -m desinight.readers``):

- a worker that dies (any signal), overruns ``timeout_s`` or its address-space limit
  (``memory_mb``, ``RLIMIT_AS`` set in the child) fails only the request it held, with a
  one-line reason such as ``reader crashed (SIGSEGV)``; a fresh worker replaces it;
- workers are persistent, so Python and fitsio start-up is paid once per worker, not per
  exposure;
- messages are length-prefixed JSON both ways (never pickle: the parent must not run code
  a compromised reader sends).

The pool is shared by everything in one process (`shared_pool`) and closed with
`close_shared`; closing wakes a caller waiting on a worker with ``ReadersClosed``, so a
SIGTERM never waits for a hanging reader.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .core import defaults as D
from .core.errors import DesinightError

#: env var of the test-only fault hook: "EXPID:segv,EXPID:hang,EXPID:oom" (see docs)
FAULT_ENV = "DESINIGHT_READER_FAULTS"
#: a reply longer than this is a broken or hostile worker, not an answer
MAX_REPLY = 64 << 20
_HEADER = struct.Struct("!I")
#: seconds a new worker may take to import Python, numpy and fitsio (a cold shared
#: filesystem can take tens of seconds); not counted in the per-request limit
STARTUP_S = 120.0


class ReadersClosed(DesinightError):
    """The pool was closed (daemon stopping) while a request waited: nothing was decided."""


@dataclass
class Reply:
    """One request's outcome: ``ok`` (the worker's answer) or ``kind``/``message`` when the
    worker said the data are bad (``bad``, ``incomplete``) or the reader itself failed
    (``crashed``, ``timeout``, ``memory``, ``error``)."""

    ok: Any = None
    kind: str | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        env = {**os.environ, "DESINIGHT_READER_MEMORY_MB": str(memory_mb),
               # one thread: BLAS pools reserve address space the memory limit counts
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "desinight.readers"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=None, close_fds=True)
        self.out = self.proc.stdout.fileno()
        os.set_blocking(self.out, False)
        self.buf = b""

    def send(self, msg: dict) -> None:
        body = json.dumps(msg).encode()
        self.proc.stdin.write(_HEADER.pack(len(body)) + body)
        self.proc.stdin.flush()

    def take(self) -> dict | None:
        """Read what is there; the reply once complete, else None. Raises EOFError when
        the worker closed its end (it died)."""
        try:
            chunk = os.read(self.out, 1 << 20)
        except BlockingIOError:
            return None
        if not chunk:
            raise EOFError
        self.buf += chunk
        if len(self.buf) < _HEADER.size:
            return None
        (n,) = _HEADER.unpack_from(self.buf)
        if n > MAX_REPLY:
            raise EOFError
        if len(self.buf) < _HEADER.size + n:
            return None
        body, self.buf = self.buf[_HEADER.size:_HEADER.size + n], self.buf[_HEADER.size + n:]
        reply = json.loads(body)
        if not isinstance(reply, dict):
            raise EOFError
        return reply

    def kill(self) -> int | None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:   # unkillable (D state on a dead NFS): let it go
            return None


class ReaderPool:
    """At most ``workers`` reader processes, started on demand and replaced when they die."""

    def __init__(self, workers: int = D.READER_WORKERS, timeout_s: float = D.READER_TIMEOUT_S,
                 memory_mb: int = D.READER_MEMORY_MB) -> None:
        self.workers, self.timeout_s, self.memory_mb = workers, timeout_s, memory_mb
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._lock = threading.Lock()     # one caller at a time
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self.started = 0                  # workers started so far (replacements included)

    def run(self, requests: list[dict]) -> list[Reply]:
        """Answer every request (in order), ``workers`` at a time."""
        with self._lock:
            return self._run(requests)

    def _run(self, requests: list[dict]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(requests)
        todo = list(enumerate(requests))[::-1]
        held: dict[int, tuple[_Worker, int, float]] = {}   # fd -> (worker, index, deadline)
        while todo or held:
            if self._closed.is_set():
                for w, _, _ in held.values():
                    w.kill()
                raise ReadersClosed("reader pool closed")
            while todo and len(held) < self.workers:
                i, req = todo.pop()
                w = self._idle.pop() if self._idle else self._start()
                try:
                    w.send(req)
                except (BrokenPipeError, OSError):
                    w.kill()   # died while idle: a fresh one takes the request
                    w = self._start()
                    w.send(req)
                held[w.out] = (w, i, time.monotonic() + self.timeout_s)
            wait = max(0.0, min(d for _, _, d in held.values()) - time.monotonic())
            ready, _, _ = select.select([*held, self._wake_r], [], [], wait)
            for fd in ready:
                if fd == self._wake_r:
                    continue
                w, i, _ = held[fd]
                try:
                    reply = w.take()
                except (EOFError, ValueError):
                    rc = w.kill()
                    del held[fd]
                    replies[i] = Reply(kind="crashed", message=_death(rc))
                    continue
                if reply is not None:
                    del held[fd]
                    self._idle.append(w)
                    replies[i] = _to_reply(reply)
            now = time.monotonic()
            for fd, (w, i, deadline) in list(held.items()):
                if now >= deadline and replies[i] is None:
                    w.kill()
                    del held[fd]
                    replies[i] = Reply(kind="timeout",
                                       message=f"reader timed out after {self.timeout_s:g} s")
        return [r if r is not None else Reply(kind="error", message="no reply") for r in replies]

    def warm(self) -> None:
        """Start every worker now (the daemon at start): the first exposures of the night
        must not pay Python + fitsio start-up in their reaction time, and a long-running
        daemon pays it once, not in the night that first reads two exposures at once."""
        with self._lock:
            while len(self._idle) < self.workers and not self._closed.is_set():
                self._idle.append(self._start())

    def _start(self) -> _Worker:
        """A new worker, once it has imported its libraries: the per-request time limit
        must not count Python start-up on a busy node."""
        self.started += 1
        w = _Worker(self.memory_mb)
        deadline = time.monotonic() + STARTUP_S
        while not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                w.kill()
                raise DesinightError(f"reader process did not start within {STARTUP_S:g} s")
            ready, _, _ = select.select([w.out, self._wake_r], [], [], left)
            if w.out in ready:
                try:
                    hello = w.take()
                except (EOFError, ValueError):
                    rc = w.kill()
                    raise DesinightError(f"reader process failed to start ({_death(rc)})") from None
                if hello is not None:
                    return w
        w.kill()
        raise ReadersClosed("reader pool closed")

    def close(self) -> None:
        """Stop every worker; a caller waiting in ``run`` gets ``ReadersClosed``. Safe to
        call from another thread (the daemon's signal path)."""
        self._closed.set()
        os.write(self._wake_w, b"x")
        with self._lock:
            for w in self._idle:
                w.kill()
            self._idle.clear()


def _death(rc: int | None) -> str:
    if rc is not None and rc < 0:
        return f"reader crashed ({signal_name(-rc)})"
    if rc is None:
        return "reader crashed (unkillable)"
    return f"reader crashed (exit code {rc})"


def _to_reply(msg: dict) -> Reply:
    if "ok" in msg:
        return Reply(ok=msg["ok"])
    return Reply(kind=str(msg.get("kind") or "error"), message=str(msg.get("message") or "")[:500],
                 extra=msg.get("extra") if isinstance(msg.get("extra"), dict) else {})


_shared: ReaderPool | None = None
_shared_lock = threading.Lock()
_final = threading.Event()     # the process is stopping: no new pool


def shared_pool(workers: int = D.READER_WORKERS, timeout_s: float = D.READER_TIMEOUT_S,
                memory_mb: int = D.READER_MEMORY_MB) -> ReaderPool:
    """The process's pool (a new one when the settings changed or it was closed)."""
    global _shared
    with _shared_lock:
        if _final.is_set():
            raise ReadersClosed("reader pool closed (stopping)")
        p = _shared
        if p is None or p._closed.is_set() or (p.workers, p.timeout_s, p.memory_mb) != (
                workers, timeout_s, memory_mb):
            if p is not None:
                p.close()
            _shared = p = ReaderPool(workers, timeout_s, memory_mb)
        return p


def pool_for(cfg) -> ReaderPool:  # noqa: ANN001 - a Config (no import cycle)
    return shared_pool(cfg.reader_workers, cfg.reader_timeout_s, cfg.reader_memory_mb)


def close_shared(final: bool = False) -> None:
    """Stop the shared pool; ``final`` (the daemon stopping): a tick still running gets
    ``ReadersClosed`` instead of starting new readers."""
    global _shared
    if final:
        _final.set()
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared = None


def inspect_many(raw_root: Path, dirs: list[Path], pool: ReaderPool | None = None,
                 verify: bool = True) -> dict[Path, Any]:
    """{dir: RawExposure, or the Incomplete/BadExposure to raise}, read by reader processes
    (for callers holding no Config, e.g. a campaign reading nights never ingested)."""
    from . import rawdata
    pool = pool or shared_pool()
    reqs = [{"op": "inspect", "expdir": str(d), "raw_root": str(Path(raw_root).resolve()),
             "verify": verify} for d in dirs]
    out: dict[Path, Any] = {}
    for d, r in zip(dirs, pool.run(reqs) if reqs else []):
        if r.kind is None:
            try:
                out[d] = rawdata.exposure_from_json(r.ok if isinstance(r.ok, dict) else {})
            except rawdata.BadExposure as e:
                out[d] = e
        elif r.kind == "incomplete":
            out[d] = rawdata.Incomplete(r.message)
        elif r.kind == "bad" and r.extra.get("truncated"):
            out[d] = rawdata.Truncated(r.message)
        else:
            out[d] = rawdata.BadExposure(r.message)
    return out


def result(value: Any) -> Any:
    """An `inspect_many` value: the RawExposure, or its exception raised."""
    if isinstance(value, Exception):
        raise value
    return value


# No reader outlives its owner's process (one-shot commands, tests).
atexit.register(close_shared)


# --- the worker side ---------------------------------------------------------------------
def _serve() -> None:
    """The worker loop: one request in, one reply out, until stdin closes."""
    import resource
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    mb = int(os.environ.get("DESINIGHT_READER_MEMORY_MB") or D.READER_MEMORY_MB)
    resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    # The protocol owns the real stdout; a C library printing would corrupt it.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    try:
        import fitsio  # noqa: F401 - paid once per worker, not per exposure
    except ImportError:
        pass
    from . import rawdata  # noqa: F401 - so is the parser: before the hello, not in a request
    hello = json.dumps({"ready": True}).encode()
    out.write(_HEADER.pack(len(hello)) + hello)
    out.flush()
    while True:
        head = inp.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (n,) = _HEADER.unpack(head)
        try:
            reply = handle(json.loads(inp.read(n)), mb)
        except MemoryError:
            reply = {"kind": "memory", "message": f"reader out of memory (limit {mb} MB)"}
        except Exception as e:  # noqa: BLE001 - any failure is this request's answer
            reply = {"kind": "error", "message": f"reader failed: {type(e).__name__}: {e}"[:300]}
        body = json.dumps(reply, default=str).encode()
        out.write(_HEADER.pack(len(body)) + body)
        out.flush()


def handle(req: dict, mb: int) -> dict:
    """One request, in the worker: ``inspect`` an exposure directory or read ``exits``."""
    op = req.get("op")
    if op == "inspect":
        from . import rawdata
        _fault_hook(req["expdir"])
        try:
            raw = rawdata.inspect_exposure(Path(req["expdir"]), verify_data=bool(req.get("verify", True)),
                                           raw_root=Path(req["raw_root"]) if req.get("raw_root") else None)
        except rawdata.Incomplete as e:
            return {"kind": "incomplete", "message": str(e)}
        except rawdata.BadExposure as e:
            return {"kind": "bad", "message": str(e),
                    "extra": {"truncated": isinstance(e, rawdata.Truncated)}}
        return {"ok": rawdata.exposure_to_json(raw)}
    if op == "exits":
        from .batch.exitfile import parse_exit_file
        return {"ok": {d: parse_exit_file(Path(d)) for d in req.get("dirs", [])}}
    return {"kind": "error", "message": f"unknown request {op!r}"}


def _fault_hook(expdir: str) -> None:
    """Test-only: $DESINIGHT_READER_FAULTS="EXPID:segv,EXPID:hang,EXPID:oom" makes the
    reader of that exposure crash, hang or run out of memory, as a hostile file could."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name = Path(expdir).name
    for item in spec.split(","):
        expid, _, what = item.partition(":")
        if expid.strip() != name:
            continue
        if what == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif what == "hang":
            while True:
                time.sleep(60)
        elif what == "oom":
            import numpy as np   # np.empty reserves address space without touching it
            hog = [np.empty(64 << 20, dtype=np.uint8) for _ in range(1 << 16)]
            del hog


if __name__ == "__main__":
    _serve()
