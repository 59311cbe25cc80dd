"""Reading the raw-data layout: ``RAW/NIGHT/EXPID/desi-EXPID.fits.fz`` + ``request-EXPID.json``.

``inspect_exposure`` decides whether an exposure directory is complete and what it holds,
and turns every problem with the data into a ``BadExposure`` whose message is the
quarantine reason an operator reads in `status`. It never raises anything else on bad
files, so one bad exposure can never stop ingest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .core.cameras import parse_cameras
from .core.errors import BadExposure, DesinightError
from .core.states import ObsType

NIGHT_RE = re.compile(r"^20\d{6}$")
EXPID_RE = re.compile(r"^\d{8}$")
REQUIRED_KEYS = ("EXPID", "NIGHT", "OBSTYPE", "EXPTIME")
CHECKSUM_FILE = "checksum-{expid:08d}.sha256"


class Truncated(BadExposure):
    """Shorter than its headers say: still being transferred, or cut for good."""


class Incomplete(Exception):
    """Not all files are there yet (or still growing): look again later, not an error."""


@dataclass(frozen=True)
class RawExposure:
    expid: int
    night: int
    obstype: str
    tileid: int | None
    exptime: float
    program: str | None
    seqnum: int | None
    seqtot: int | None
    cameras: tuple[str, ...]        # camera HDUs present in the file
    bad_cameras: tuple[str, ...]    # listed in CAMERAS but missing or unreadable
    raw_path: Path


def raw_file(expdir: Path, expid: int) -> Path:
    return expdir / f"desi-{expid:08d}.fits.fz"


def list_nights(raw_root: Path) -> list[int]:
    try:
        return sorted(int(p.name) for p in raw_root.iterdir() if NIGHT_RE.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


def list_exposure_dirs(raw_root: Path, night: int) -> list[Path]:
    try:
        return sorted(p for p in (raw_root / str(night)).iterdir()
                      if EXPID_RE.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Oddity:
    """Something in a night directory that will never become an exposure as it stands."""

    path: Path
    kind: str       # unreadable-name | loop | special-file | unreadable
    reason: str


def survey_night(raw_root: Path, night: int) -> list[Oddity]:
    """What in RAW/NIGHT cannot complete: directories with names that are not an EXPID,
    symlink loops, special files, unreadable entries. Only lstat/stat and directory
    listings: safe to run in the daemon (nothing is opened, no symlink loop followed)."""
    out: list[Oddity] = []
    ndir = raw_root / str(night)
    try:
        entries = sorted(os.scandir(ndir), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        path = Path(e.path)
        if e.name.startswith("."):
            continue
        odd = _odd_entry(path, raw_root)
        if odd is not None:
            out.append(odd)
            continue
        if not EXPID_RE.match(e.name):
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                out.append(Oddity(path, "unreadable-name",
                                  f"directory name {e.name!r} is not an 8-digit EXPID"))
            continue
        try:
            inner = sorted(os.scandir(path), key=lambda x: x.name)
        except NotADirectoryError:
            continue
        except OSError as err:
            out.append(Oddity(path, "unreadable", f"cannot list: {_os_reason(err)}"))
            continue
        for f in inner:
            sub = _odd_entry(Path(f.path), raw_root)
            if sub is not None:
                out.append(Oddity(path, sub.kind, f"{f.name}: {sub.reason}"))
                break
    return out


def _odd_entry(path: Path, raw_root: Path) -> Oddity | None:
    try:
        st = os.lstat(path)
    except OSError as e:
        return Oddity(path, "unreadable", _os_reason(e))
    if stat.S_ISLNK(st.st_mode):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return Oddity(path, "loop", "symlink loop")
            return None   # dangling: maybe its target is still in transfer
        if not _inside(path, raw_root):
            return Oddity(path, "escape", "symlink pointing outside the raw tree")
        target = Path(os.path.realpath(path))
        if target.is_dir() and Path(os.path.realpath(path.parent)).is_relative_to(target):
            return Oddity(path, "loop", "symlink loop (points to a directory above it)")
        return None
    kind = special_kind(st.st_mode)
    if kind is not None:
        return Oddity(path, "special-file", f"{kind}, not a regular file")
    return None


def waiting_reason(expdir: Path) -> str:
    """Why a directory is not ingested yet, as far as a listing tells (no file is opened)."""
    sizes = file_sizes(expdir)
    names = (f"request-{expdir.name}.json", f"desi-{expdir.name}.fits.fz")
    missing = [n for n in names if n not in sizes]
    return f"waiting for {' and '.join(missing)}" if missing else "files not yet complete"


def file_sizes(expdir: Path) -> dict[str, int]:
    """Name -> size of the files in an exposure dir (the 'look' used for stability checks)."""
    out = {}
    try:
        for entry in os.scandir(expdir):
            if entry.is_file(follow_symlinks=False):
                out[entry.name] = entry.stat().st_size
    except FileNotFoundError:
        pass
    return out


def inspect_exposure(expdir: Path, verify_data: bool = True,
                     raw_root: Path | None = None) -> RawExposure:
    """Read and check one exposure directory (in a reader process: see readers.py).

    Raises ``Incomplete`` while files are missing (the request file is written last) and
    ``BadExposure`` (with the operator-facing reason) when the data are bad. Only regular
    files inside the directory (or reached by a symlink staying inside ``raw_root``) are
    opened, and never blocking: a FIFO or device where a file should be is refused.
    """
    expid = int(expdir.name)
    root = Path(raw_root) if raw_root is not None else expdir.parent.parent
    request = expdir / f"request-{expid:08d}.json"
    fits_path = raw_file(expdir, expid)
    try:
        os.stat(expdir)
    except FileNotFoundError:
        raise Incomplete(f"{expdir} went away") from None
    except OSError as e:
        raise BadExposure(f"{expdir.name}: {_os_reason(e)}") from None
    if not _lexists(request) or not _lexists(fits_path):
        raise Incomplete(waiting_reason(expdir))
    with open_regular(request, root) as f:
        text = f.read(MAX_REQUEST_BYTES + 1)
    if len(text) > MAX_REQUEST_BYTES:
        raise BadExposure(f"{request.name} is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(text)
        if not isinstance(req, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise BadExposure(f"unreadable {request.name}: {e}") from None
    _verify_checksums(expdir, expid, root)
    with open_regular(fits_path, root) as f:
        # fitsio opens the very file we checked (through /proc), not whatever the name
        # points at a moment later.
        return _read_fits(fits_path, f"/proc/self/fd/{f.fileno()}", expid, req, verify_data)


#: a request file is a few hundred bytes; anything huge is not one
MAX_REQUEST_BYTES = 1 << 20


def _lexists(path: Path) -> bool:
    try:
        os.lstat(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise BadExposure(f"{path.name}: {_os_reason(e)}") from None


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return e.strerror or type(e).__name__


def special_kind(mode: int) -> str | None:
    """'FIFO', 'socket', 'device' for a special file's mode, None for a file/dir/link."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False


def open_regular(path: Path, raw_root: Path):
    """Open ``path`` for reading only if it is a regular file (directly or by a symlink that
    stays inside ``raw_root``). lstat first, then open with O_NONBLOCK (a FIFO swapped in
    between does not block) and check the opened file again with fstat."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Incomplete(f"{path} not there yet") from None
    except OSError as e:
        raise BadExposure(f"{path.name}: {_os_reason(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            os.stat(path)
        except OSError as e:
            raise BadExposure(f"{path.name}: {_os_reason(e)}") from None
        if not _inside(path, raw_root):
            raise BadExposure(f"{path.name} is a symlink pointing outside the raw tree")
    elif (kind := special_kind(st.st_mode)) is not None:
        raise BadExposure(f"{path.name} is a {kind}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadExposure(f"{path.name}: cannot open ({_os_reason(e)})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadExposure(f"{path.name} is a {special_kind(st.st_mode) or 'directory'}, "
                          "not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _verify_checksums(expdir: Path, expid: int, raw_root: Path) -> None:
    path = expdir / CHECKSUM_FILE.format(expid=expid)
    if not _lexists(path):
        return
    with open_regular(path, raw_root) as f:
        text = f.read(MAX_REQUEST_BYTES + 1).decode(errors="replace")
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        digest, name = parts[0], parts[1].lstrip("*")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or "\x00" in name:
            raise BadExposure(f"{path.name} names {name!r}, outside the exposure directory")
        target = expdir / rel
        if not _lexists(target):
            raise Incomplete(f"{target} listed in {path.name} not there yet")
        h = hashlib.sha256()
        with open_regular(target, raw_root) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise BadExposure(f"checksum mismatch for {name}")


def exposure_to_json(raw: RawExposure) -> dict:
    """What a reader sends back (plain JSON: the daemon never unpickles a reader's bytes)."""
    d = dict(raw.__dict__)
    d["cameras"], d["bad_cameras"], d["raw_path"] = list(raw.cameras), list(raw.bad_cameras), str(raw.raw_path)
    return d


def exposure_from_json(d: dict) -> RawExposure:
    """A reader's answer back into a RawExposure, type-checked field by field (a broken
    reader is refused here, with a reason)."""
    try:
        def opt(v, t):
            if v is None:
                return None
            if not isinstance(v, t) or isinstance(v, bool):
                raise TypeError(f"{v!r} is not {t.__name__}")
            return v
        return RawExposure(
            expid=int(opt(d["expid"], int)), night=int(opt(d["night"], int)),
            obstype=str(opt(d["obstype"], str)), tileid=opt(d.get("tileid"), int),
            exptime=float(opt(d["exptime"], (int, float))), program=opt(d.get("program"), str),
            seqnum=opt(d.get("seqnum"), int), seqtot=opt(d.get("seqtot"), int),
            cameras=tuple(str(c) for c in d["cameras"]),
            bad_cameras=tuple(str(c) for c in d["bad_cameras"]), raw_path=Path(str(d["raw_path"])))
    except (KeyError, TypeError, ValueError) as e:
        raise BadExposure(f"reader answer not understood ({e})") from None


def _read_fits(path: Path, source: str, expid: int, req: dict, verify_data: bool) -> RawExposure:
    import fitsio  # heavy import kept out of CLI start-up

    try:
        fits = fitsio.FITS(source)
    except (OSError, ValueError) as e:
        raise BadExposure(f"{path.name} is not a readable FITS file ({_short(e)})") from None
    with fits:
        try:
            hdr = fits[0].read_header()
            size = os.stat(source).st_size
            ends = [h.get_offsets()["data_end"] for h in fits]
        except (OSError, ValueError, IndexError) as e:
            raise BadExposure(f"{path.name}: cannot read headers ({_short(e)})") from None
        if max(ends) > size:
            raise Truncated(f"{path.name} is truncated ({size} of {max(ends)} bytes)")
        missing = [k for k in REQUIRED_KEYS if k not in hdr]
        if missing:
            raise BadExposure(f"{path.name}: missing header keyword {', '.join(missing)}")
        try:
            hexpid, night = int(hdr["EXPID"]), int(hdr["NIGHT"])
            exptime = float(hdr["EXPTIME"])
        except (TypeError, ValueError):
            raise BadExposure(f"{path.name}: EXPID/NIGHT/EXPTIME are not numbers") from None
        if hexpid != expid:
            raise BadExposure(f"{path.name}: header EXPID {hexpid} does not match directory {expid:08d}")
        obstype = str(hdr["OBSTYPE"]).strip().upper()
        if obstype not in ObsType.__members__:
            raise BadExposure(f"unknown OBSTYPE {obstype!r} (expected one of "
                              f"{', '.join(ObsType.__members__)})")
        if "OBSTYPE" in req and str(req["OBSTYPE"]).upper() != obstype:
            raise BadExposure(f"OBSTYPE {obstype} in {path.name} disagrees with request file "
                              f"({req['OBSTYPE']})")
        present = [h.get_extname().lower() for h in fits if _is_camera(h.get_extname())]
        try:
            listed = parse_cameras(str(hdr.get("CAMERAS", ""))) if hdr.get("CAMERAS") else present
        except DesinightError:
            listed = present
        unreadable = _unreadable(fits, present) if verify_data else []
        good = [c for c in present if c not in unreadable]
        if not good:
            raise BadExposure(f"{path.name}: no readable camera"
                              + (f" ({unreadable[0]} corrupt)" if unreadable else ""))
        tileid = _opt_int(hdr.get("TILEID"))
        return RawExposure(
            expid=expid, night=night, obstype=obstype,
            tileid=tileid if tileid is not None and tileid >= 0 else None, exptime=exptime,
            program=str(hdr["PROGRAM"]).strip() if hdr.get("PROGRAM") is not None else None,
            seqnum=_opt_int(hdr.get("SEQNUM")), seqtot=_opt_int(hdr.get("SEQTOT")),
            cameras=tuple(parse_cameras(present)),
            bad_cameras=tuple(parse_cameras(sorted(set(listed) - set(good)))) if set(listed) - set(good) else (),
            raw_path=path)


def _is_camera(name: str) -> bool:
    return len(name) == 2 and name[0].lower() in "brz" and name[1].isdigit()


def _unreadable(fits, cameras: list[str]) -> list[str]:
    """Cameras whose compressed data do not decompress (corrupted transfer)."""
    bad = []
    for cam in cameras:
        try:
            fits[cam.upper()].read()
        except Exception:  # noqa: BLE001 - cfitsio raises many types for corrupt tiles
            bad.append(cam)
    return bad


def _opt_int(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
