"""Raw-data discovery: a watchdog observer plus a periodic full scan, and the rule that
decides when an exposure directory is complete.

inotify only sees changes made by this kernel: on Lustre/NFS/GPFS files written by the
data-transfer nodes are invisible to it, so ``auto`` picks the polling observer there.
The full scan is the safety net for any event an observer misses.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from . import rawdata

log = logging.getLogger("desinight")

NETWORK_FS = {"lustre", "nfs", "nfs4", "gpfs", "cifs", "smb3", "fuse.sshfs", "beegfs", "ceph",
              "fuse.glusterfs", "panfs"}


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    path = path.resolve()
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mnt = parts[1].replace("\\040", " ")
                    if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                        best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def choose_mode(mode: str, raw_root: Path) -> str:
    if mode != "auto":
        return mode
    return "polling" if fs_type(raw_root) in NETWORK_FS else "native"


class Candidates:
    """Exposure directories that changed; filled by observer threads, drained by the tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: set[Path] = set()
        self.event = threading.Event()

    def add(self, d: Path) -> None:
        with self._lock:
            self._dirs.add(d)
        self.event.set()

    def drain(self) -> set[Path]:
        with self._lock:
            out, self._dirs = self._dirs, set()
        self.event.clear()
        return out


def exposure_dir_of(raw_root: Path, path: Path) -> Path | None:
    """RAW/NIGHT/EXPID[/file] -> RAW/NIGHT/EXPID, else None."""
    try:
        rel = path.relative_to(raw_root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) >= 2 and rawdata.NIGHT_RE.match(parts[0]) and rawdata.EXPID_RE.match(parts[1]):
        return raw_root / parts[0] / parts[1]
    return None


class Stability:
    """An exposure is complete when its request file is there and the sizes of all its files
    are unchanged across two looks (a transfer still writing changes them)."""

    def __init__(self) -> None:
        self._last: dict[Path, dict[str, int]] = {}

    def look(self, d: Path) -> bool:
        sizes = rawdata.file_sizes(d)
        prev = self._last.get(d)
        self._last[d] = sizes
        expid = d.name
        ready = (f"request-{expid}.json" in sizes and f"desi-{expid}.fits.fz" in sizes
                 and not any(".tmp" in n or n.startswith(".") for n in sizes))
        return ready and prev == sizes

    def forget(self, d: Path) -> None:
        self._last.pop(d, None)


def start_observer(raw_root: Path, mode: str, candidates: Candidates, poll_s: float):
    """Start a watchdog observer feeding ``candidates``; returns it (call .stop())."""
    from watchdog.events import FileSystemEventHandler
    if mode == "polling":
        from watchdog.observers.polling import PollingObserver
        observer = PollingObserver(timeout=poll_s)
    else:
        from watchdog.observers import Observer
        observer = Observer()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog event
            for p in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
                if p:
                    d = exposure_dir_of(raw_root, Path(p if isinstance(p, str) else p.decode()))
                    if d is not None:
                        candidates.add(d)

    raw_root.mkdir(parents=True, exist_ok=True)
    observer.schedule(Handler(), str(raw_root), recursive=True)
    observer.daemon = True
    observer.start()
    return observer


def scan_recent(raw_root: Path, nights: int = 2) -> list[Path]:
    """Exposure directories of the latest nights (the full-scan safety net)."""
    out: list[Path] = []
    for night in rawdata.list_nights(raw_root)[-nights:]:
        out.extend(rawdata.list_exposure_dirs(raw_root, night))
    return out
