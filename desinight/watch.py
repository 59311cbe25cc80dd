"""Raw-data discovery: a watcher over the nights that can still change, plus a periodic
bounded scan, and the rule that decides when an exposure directory is complete.

The raw root holds every night since the survey began (1,000+ nights, tens of thousands of
files). Only the latest nights can still change, so the watcher looks at the raw root
itself (non-recursively, for new night directories) and at the latest ``watch_nights + 1``
night directories; when a new night appears the oldest watched night is dropped. Earlier
nights are read only by explicit commands (`ingest NIGHT`, campaigns).

Two modes:

* ``native``: inotify (one inotify instance, one watch per watched directory). inotify only
  sees changes made by this kernel, so on Lustre/NFS/GPFS (files written by data-transfer
  nodes) ``auto`` picks polling.
* ``polling``: a thread that looks at the fixed layout RAW/NIGHT/EXPID/file of the watched
  nights only, with ``lstat``: its cost per look is proportional to the watched nights, not
  the archive, and the raw root costs one ``stat`` unless it changed.

Neither mode follows symbolic links: the layout has a fixed depth and every directory entry
is judged with ``follow_symlinks=False``, so a loop (``EXPID/loop -> ..``) or a link to
``/`` is never entered.

Completion: the request file is written last. Its close-after-write or its rename into
place (native) or a second equal look a moment after it appears (polling) marks the
exposure complete at once; other changes go through the two-equal-looks rule of
``Stability`` on the daemon's 1 s tick.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from . import rawdata
from .core import defaults as D

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


# --- the layout, never following links -------------------------------------------------

def night_names(raw_root: Path) -> list[int]:
    """Night directories directly under the raw root, oldest first. Uses the directory
    entries' types (no stat per night: the root may hold thousands); a symlinked night is
    not a night."""
    try:
        with os.scandir(raw_root) as it:
            return sorted(int(e.name) for e in it
                          if rawdata.NIGHT_RE.match(e.name) and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def window_nights(raw_root: Path, back: int) -> list[int]:
    """The nights that can still change: the latest night directory and ``back`` before it."""
    return night_names(raw_root)[-(back + 1):]


def exposure_dirs(night_dir: Path) -> list[Path]:
    """Exposure directories of one night (real directories only, never a link)."""
    try:
        with os.scandir(night_dir) as it:
            return sorted(night_dir / e.name for e in it
                          if rawdata.EXPID_RE.match(e.name) and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def scan_recent(raw_root: Path, nights: int = D.WATCH_NIGHTS + 1) -> list[Path]:
    """Exposure directories of the latest ``nights`` nights (the bounded full-scan safety net)."""
    out: list[Path] = []
    for night in night_names(raw_root)[-nights:]:
        out.extend(exposure_dirs(raw_root / str(night)))
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


def sizes_of(expdir: Path) -> dict[str, int]:
    """``rawdata.file_sizes`` that takes an unreadable directory (no permission, gone) for an
    empty one: one such directory must not stop the look at the others."""
    try:
        return rawdata.file_sizes(expdir)
    except OSError:
        return {}


def marker_name(expdir: Path) -> str:
    """The completion marker: the request file, which the transfer writes last."""
    return f"request-{expdir.name}.json"


def has_all_files(sizes: dict[str, int], expid: str) -> bool:
    """Request and raw file present and nothing half-written beside them."""
    return (f"request-{expid}.json" in sizes and f"desi-{expid}.fits.fz" in sizes
            and not any(".tmp" in n or n.startswith(".") for n in sizes))


# --- what changed, for the tick ----------------------------------------------------------

def confirm_later(candidates: Candidates, dirs: list[Path], delay: float = D.STABLE_LOOK_S) -> None:
    """Directories found already there (a night that just entered the window): each is a
    candidate now, and complete if its files are all there and unchanged ``delay`` later,
    as the polling watcher's second look."""
    looks = {}
    for d in dirs:
        candidates.add(d)
        sizes = sizes_of(d)
        if has_all_files(sizes, d.name):
            looks[d] = sizes
    if not looks:
        return

    def again() -> None:
        for d, sizes in looks.items():
            if sizes_of(d) == sizes:
                candidates.complete(d)
    t = threading.Timer(delay, again)
    t.daemon = True
    t.start()


class Candidates:
    """Exposure directories that changed, and those whose completion marker was just
    written; filled by watcher threads, drained by the tick. ``wake`` is set when a marker
    arrives so the daemon ingests at once instead of on its next tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: set[Path] = set()
        self._complete: set[Path] = set()
        self.event = threading.Event()
        self.wake = threading.Event()

    def add(self, d: Path) -> None:
        with self._lock:
            self._dirs.add(d)
        self.event.set()

    def complete(self, d: Path) -> None:
        with self._lock:
            self._complete.add(d)
        self.event.set()
        self.wake.set()

    def drain(self) -> set[Path]:
        """Every candidate (changed or complete); see ``drain_split``."""
        changed, complete = self.drain_split()
        return changed | complete

    def drain_split(self) -> tuple[set[Path], set[Path]]:
        """(changed, marked complete); a directory in both is only in the second."""
        with self._lock:
            changed, complete = self._dirs - self._complete, self._complete
            self._dirs, self._complete = set(), set()
        self.event.clear()
        return changed, complete

    def __len__(self) -> int:
        with self._lock:
            return len(self._dirs | self._complete)


class Stability:
    """An exposure is complete when its request file is there and the sizes of all its files
    are unchanged across two looks (a transfer still writing changes them)."""

    def __init__(self) -> None:
        self._last: dict[Path, dict[str, int]] = {}

    def look(self, d: Path) -> bool:
        sizes = sizes_of(d)
        prev = self._last.get(d)
        self._last[d] = sizes
        return has_all_files(sizes, d.name) and prev == sizes

    def present(self, d: Path) -> bool:
        """One look, for a directory whose marker was just written: all files there."""
        return has_all_files(sizes_of(d), d.name)

    def forget(self, d: Path) -> None:
        self._last.pop(d, None)

    def keep_only(self, nights: set[str]) -> None:
        """Drop what is remembered about nights no longer watched (bounded memory)."""
        for d in [d for d in self._last if d.parent.name not in nights]:
            del self._last[d]


# --- watchers ------------------------------------------------------------------------------

class Watcher(Protocol):
    """What the daemon uses of either mode."""

    mode: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def refresh(self) -> None: ...
    def nights(self) -> list[int]: ...
    def watched(self) -> list[Path]: ...


class _WindowMixin:
    """The sliding window of watched nights, shared by both modes."""

    raw_root: Path
    back: int
    candidates: Candidates
    _nights: list[int]

    def _new_window(self) -> tuple[list[int], list[int]]:
        """(added, dropped) nights when the window is recomputed from the raw root."""
        nights = window_nights(self.raw_root, self.back)
        added = [n for n in nights if n not in self._nights]
        dropped = [n for n in self._nights if n not in nights]
        self._nights = nights
        return added, dropped

    def nights(self) -> list[int]:
        return list(self._nights)


class NativeWatcher(_WindowMixin):
    """inotify on the raw root (non-recursive) and on each watched night (recursive, which
    watchdog does without following links)."""

    mode = "native"

    def __init__(self, raw_root: Path, candidates: Candidates, back: int = D.WATCH_NIGHTS) -> None:
        from watchdog.observers.inotify import InotifyObserver
        self.raw_root, self.candidates, self.back = raw_root, candidates, back
        self._nights: list[int] = []
        self._watches: dict[int, object] = {}
        self._lock = threading.RLock()
        # full events: a file renamed in from outside the watched tree is a move, not a create
        self.observer = InotifyObserver(generate_full_events=True)
        self.observer.daemon = True

    def start(self) -> None:
        from watchdog.events import DirCreatedEvent, DirMovedEvent
        self.raw_root.mkdir(parents=True, exist_ok=True)
        self.observer.schedule(_RootHandler(self), str(self.raw_root), recursive=False,
                               event_filter=[DirCreatedEvent, DirMovedEvent])
        self.observer.start()
        self.refresh(initial=True)

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    def refresh(self, initial: bool = False) -> None:
        """Follow the window: watch nights that entered it, unwatch those that left."""
        from watchdog.events import (DirCreatedEvent, DirMovedEvent, FileClosedEvent,
                                     FileCreatedEvent, FileDeletedEvent, FileModifiedEvent,
                                     FileMovedEvent)
        # opens and reads are left out: ingest reading the files would otherwise wake it
        events = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
                  FileDeletedEvent, DirCreatedEvent, DirMovedEvent]
        with self._lock:
            added, dropped = self._new_window()
            for night in dropped:
                watch = self._watches.pop(night, None)
                if watch is not None:
                    try:
                        self.observer.unschedule(watch)
                    except (KeyError, OSError):
                        pass
            for night in added:
                try:
                    self._watches[night] = self.observer.schedule(
                        _NightHandler(self.raw_root, self.candidates),
                        str(self.raw_root / str(night)), recursive=True, event_filter=events)
                except OSError as e:   # removed meanwhile, or no permission: the scan retries
                    log.warning("watch_failed", extra={"fields": {"night": night, "error": str(e)}})
                    self._nights.remove(night)
                    continue
                if not initial:  # files written before the watch started raised no event
                    confirm_later(self.candidates, exposure_dirs(self.raw_root / str(night)))
            if added or dropped:
                log.info("watching", extra={"fields": {"nights": ",".join(map(str, self._nights))}})

    def watched(self) -> list[Path]:
        with self._lock:
            return [self.raw_root] + [self.raw_root / str(n) for n in self._watches]


class _RootHandler:
    """New night directory under the raw root -> move the window."""

    def __init__(self, watcher: NativeWatcher) -> None:
        self.watcher = watcher

    def dispatch(self, event) -> None:  # noqa: ANN001 - watchdog event
        path = getattr(event, "dest_path", "") or event.src_path
        name = os.path.basename(path if isinstance(path, str) else os.fsdecode(path))
        if event.is_directory and rawdata.NIGHT_RE.match(name):
            self.watcher.refresh()


class _NightHandler:
    """Any change under RAW/NIGHT/EXPID makes EXPID a candidate; the request file closed
    after writing, or renamed into place, makes it complete.

    A new exposure directory is watched only once inotify reports it: files the transfer
    put there before that raise no event of their own (watchdog reports them as created),
    so a new directory, or a request file reported as created, gets the polling watcher's
    second look."""

    def __init__(self, raw_root: Path, candidates: Candidates) -> None:
        self.raw_root, self.candidates = raw_root, candidates

    def dispatch(self, event) -> None:  # noqa: ANN001 - watchdog event
        from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if not p:
                continue
            path = Path(p if isinstance(p, str) else os.fsdecode(p))
            d = exposure_dir_of(self.raw_root, path)
            if d is None:
                continue
            is_marker = path.parent == d and path.name == marker_name(d)
            arrived = (isinstance(event, FileClosedEvent) and p == event.src_path) or (
                isinstance(event, FileMovedEvent) and p == event.dest_path)
            if arrived and is_marker:
                self.candidates.complete(d)
            elif (event.is_directory and path == d) or (is_marker and isinstance(event, FileCreatedEvent)):
                confirm_later(self.candidates, [d])
            else:
                self.candidates.add(d)


class PollingWatcher(_WindowMixin):
    """Looks at the watched nights every ``poll_s`` with lstat only: one stat of the raw
    root (its listing only when its mtime changed), one listing per watched night, and per
    exposure directory one listing plus one lstat per regular file."""

    mode = "polling"

    def __init__(self, raw_root: Path, candidates: Candidates, back: int = D.WATCH_NIGHTS,
                 poll_s: float = D.POLL_OBSERVER_S) -> None:
        self.raw_root, self.candidates, self.back, self.poll_s = raw_root, candidates, back, poll_s
        self._nights: list[int] = []
        self._root_mtime: int | None = None
        self._sizes: dict[Path, dict[str, int]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="desinight-poll-watch", daemon=True)

    def start(self) -> None:
        self.raw_root.mkdir(parents=True, exist_ok=True)
        self.poll_once(initial=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def refresh(self, initial: bool = False) -> None:
        with self._lock:
            added, dropped = self._new_window()
            keep = {str(n) for n in self._nights}
            for d in [d for d in self._sizes if d.parent.name not in keep]:
                del self._sizes[d]
            if initial:   # later, a new night's dirs are new to the look that follows
                for night in added:
                    for d in exposure_dirs(self.raw_root / str(night)):
                        self._sizes[d] = sizes_of(d)
            if added or dropped:
                log.info("watching", extra={"fields": {"nights": ",".join(map(str, self._nights))}})

    def watched(self) -> list[Path]:
        with self._lock:
            return [self.raw_root] + [self.raw_root / str(n) for n in self._nights]

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the watcher thread must outlive any one bad look
                log.exception("poll_watch_failed")

    def poll_once(self, initial: bool = False) -> None:
        """One look at the watched nights; new and changed exposure dirs become candidates.
        A directory whose request file is there gets a second look ``STABLE_LOOK_S`` later:
        equal sizes mark it complete now instead of one poll interval later."""
        with self._lock:
            try:
                mtime: int | None = os.stat(self.raw_root).st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._root_mtime or initial:
                self._root_mtime = mtime
                self.refresh(initial=initial)
            confirm: dict[Path, dict[str, int]] = {}
            for night in self._nights:
                for d in exposure_dirs(self.raw_root / str(night)):
                    sizes = sizes_of(d)
                    if self._sizes.get(d) != sizes:
                        self._sizes[d] = sizes
                        self.candidates.add(d)
                        if has_all_files(sizes, d.name):
                            confirm[d] = sizes
        if not confirm or self._stop.wait(D.STABLE_LOOK_S):
            return
        with self._lock:
            for d, sizes in confirm.items():
                again = sizes_of(d)
                if again == sizes:
                    self.candidates.complete(d)
                elif d in self._sizes:
                    self._sizes[d] = again
                    self.candidates.add(d)


def start_watcher(raw_root: Path, mode: str, candidates: Candidates, poll_s: float = D.POLL_OBSERVER_S,
                  back: int = D.WATCH_NIGHTS) -> NativeWatcher | PollingWatcher:
    """Start watching the raw root and its latest ``back + 1`` nights; call ``.stop()``."""
    watcher: NativeWatcher | PollingWatcher = (
        PollingWatcher(raw_root, candidates, back, poll_s) if mode == "polling"
        else NativeWatcher(raw_root, candidates, back))
    watcher.start()
    return watcher


def start_observer(raw_root: Path, mode: str, candidates: Candidates, poll_s: float,
                   back: int = D.WATCH_NIGHTS) -> NativeWatcher | PollingWatcher:
    """Former name of ``start_watcher``."""
    return start_watcher(raw_root, mode, candidates, poll_s, back)
