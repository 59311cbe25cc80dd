"""Reading the raw-data layout: ``RAW/NIGHT/EXPID/desi-EXPID.fits.fz`` + ``request-EXPID.json``.

``inspect_exposure`` decides whether an exposure directory is complete and what it holds,
and turns every problem with the data into a ``BadExposure`` whose message is the
quarantine reason an operator reads in `status`. It never raises anything else on bad
files, so one bad exposure can never stop ingest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


def inspect_exposure(expdir: Path, verify_data: bool = True) -> RawExposure:
    """Read and check one exposure directory.

    Raises ``Incomplete`` while files are missing (the request file is written last) and
    ``BadExposure`` (with the operator-facing reason) when the data are bad.
    """
    expid = int(expdir.name)
    request = expdir / f"request-{expid:08d}.json"
    fits_path = raw_file(expdir, expid)
    if not request.exists() or not fits_path.exists():
        raise Incomplete(f"{expdir}: waiting for request and raw files")
    try:
        req = json.loads(request.read_text())
        if not isinstance(req, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise BadExposure(f"unreadable {request.name}: {e}") from None
    _verify_checksums(expdir, expid)
    return _read_fits(fits_path, expid, req, verify_data)


def _verify_checksums(expdir: Path, expid: int) -> None:
    path = expdir / CHECKSUM_FILE.format(expid=expid)
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        digest, name = parts[0], parts[1].lstrip("*")
        target = expdir / name
        if not target.exists():
            raise Incomplete(f"{target} listed in {path.name} not there yet")
        h = hashlib.sha256()
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise BadExposure(f"checksum mismatch for {name}")


def _read_fits(path: Path, expid: int, req: dict, verify_data: bool) -> RawExposure:
    import fitsio  # heavy import kept out of CLI start-up

    try:
        fits = fitsio.FITS(str(path))
    except (OSError, ValueError) as e:
        raise BadExposure(f"{path.name} is not a readable FITS file ({_short(e)})") from None
    with fits:
        try:
            hdr = fits[0].read_header()
            size = path.stat().st_size
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
