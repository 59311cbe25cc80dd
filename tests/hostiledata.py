"""Hostile raw data beside a good night: one writer per class of issue 12, each returning
(exposure dir, the reason ingest must give). Built on tests/rawfixture.py."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import fitsio

from tests.rawfixture import write_exposure

#: reader limits the tests run under (small, so a hang costs seconds)
READER_TIMEOUT_S = 5


def _raw(d: Path) -> Path:
    return d / f"desi-{d.name}.fits.fz"


def _req(d: Path) -> Path:
    return d / f"request-{d.name}.json"


def _sum(d: Path) -> Path:
    return d / f"checksum-{d.name}.sha256"


def fifo_raw(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "ZERO")
    _raw(d).unlink()
    os.mkfifo(_raw(d))
    return d, f"desi-{d.name}.fits.fz is a FIFO, not a regular file"


def fifo_request(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "ZERO")
    _req(d).unlink()
    os.mkfifo(_req(d))
    return d, f"request-{d.name}.json is a FIFO, not a regular file"


def fifo_checksum(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "ZERO")
    os.mkfifo(_sum(d))
    return d, f"checksum-{d.name}.sha256 is a FIFO, not a regular file"


def checksum_escape(root: Path, night: int, seq: int, name: str) -> tuple[Path, str]:
    """A checksum file naming a path outside the directory (``../x`` or absolute)."""
    d = write_exposure(root, night, seq, "ZERO")
    target = (d / name) if not os.path.isabs(name) else Path(name)
    digest = hashlib.sha256(target.read_bytes()).hexdigest() if target.is_file() else "0" * 64
    _sum(d).write_text(f"{digest}  {name}\n")
    return d, f"names {name!r}, outside the exposure directory"


def symlink_outside(root: Path, night: int, seq: int, outside: Path) -> tuple[Path, str]:
    """The raw file is a symlink to a (valid) raw file outside the raw tree."""
    d = write_exposure(root, night, seq, "ZERO")
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / _raw(d).name
    shutil.move(_raw(d), target)
    _raw(d).symlink_to(target)
    return d, f"desi-{d.name}.fits.fz is a symlink pointing outside the raw tree"


def symlink_loop(root: Path, night: int, seq: int) -> tuple[Path, str]:
    """The raw file is a symlink loop (a -> b -> a)."""
    d = write_exposure(root, night, seq, "ZERO")
    _raw(d).unlink()
    (d / "other").symlink_to(_raw(d).name)
    _raw(d).symlink_to("other")
    return d, "symlink loop"


def huge_tileid(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "SCIENCE", tile=2**40)
    return d, f"TILEID {2**40} is beyond the database column's range (32-bit integer)"


def huge_seqnum(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "ZERO", seqnum=2**40)
    return d, f"SEQNUM {2**40} is beyond the database column's range (32-bit integer)"


def long_program(root: Path, night: int, seq: int) -> tuple[Path, str]:
    d = write_exposure(root, night, seq, "ZERO")
    with fitsio.FITS(str(_raw(d)), "rw") as f:
        f[0].write_key("PROGRAM", "p" * 66)
    return d, "PROGRAM is 66 characters, longer than the 64 the database column holds"


def faulty(root: Path, night: int, seq: int, what: str) -> tuple[Path, str]:
    """A good exposure whose reader the test hook ($DESINIGHT_READER_FAULTS) crashes,
    hangs or starves of memory."""
    d = write_exposure(root, night, seq, "ZERO")
    return d, {"segv": "reader crashed (SIGSEGV)",
               "hang": f"reader timed out after {READER_TIMEOUT_S} s",
               "oom": "reader out of memory"}[what]


def every_class(root: Path, night: int, outside: Path, first_seq: int = 20) -> dict[Path, str]:
    """{exposure dir: expected reason} for every class, EXPIDs from ``first_seq`` on."""
    makers = [fifo_raw, fifo_request, fifo_checksum,
              lambda r, n, s: checksum_escape(r, n, s, "../outside.txt"),
              lambda r, n, s: checksum_escape(r, n, s, "/etc/hostname"),
              lambda r, n, s: symlink_outside(r, n, s, outside),
              symlink_loop, huge_tileid, huge_seqnum, long_program,
              lambda r, n, s: faulty(r, n, s, "segv"), lambda r, n, s: faulty(r, n, s, "hang"),
              lambda r, n, s: faulty(r, n, s, "oom")]
    (root / str(night)).mkdir(parents=True, exist_ok=True)
    (root / str(night) / "outside.txt").write_text("not part of any exposure\n")
    out = {}
    for i, make in enumerate(makers):
        d, reason = make(root, night, first_seq + i)
        out[d] = reason
    return out


def fault_env(dirs: dict[Path, str]) -> str:
    """$DESINIGHT_READER_FAULTS for the 'faulty' exposures of ``dirs``."""
    what = {"reader crashed (SIGSEGV)": "segv", "reader out of memory": "oom"}
    items = []
    for d, reason in dirs.items():
        if reason in what:
            items.append(f"{d.name}:{what[reason]}")
        elif reason.startswith("reader timed out"):
            items.append(f"{d.name}:hang")
    return ",".join(items)


def odd_dirs(root: Path, night: int) -> dict[Path, str]:
    """Directories that never complete: {path: expected sighting kind}."""
    ndir = root / str(night)
    ndir.mkdir(parents=True, exist_ok=True)
    (ndir / "0000abcd").mkdir()
    (ndir / "with spaces").mkdir()
    (ndir / "00009999").symlink_to("00009999")                  # a directory symlink loop
    inc = ndir / f"{(night - 20000000) * 100 + 90:08d}"
    inc.mkdir()
    (inc / f"desi-{inc.name}.fits.fz").write_bytes(b"")       # request file never comes
    sock = ndir / f"{(night - 20000000) * 100 + 91:08d}"
    sock.mkdir()
    os.mkfifo(sock / f"desi-{sock.name}.fits.fz")
    return {ndir / "0000abcd": "unreadable-name", ndir / "with spaces": "unreadable-name",
            ndir / "00009999": "loop", inc: "incomplete", sock: "special-file"}
