"""FITS helpers and the survey's output layout under $DESI_SPECTRO_REDUX/$SPECPROD.

Every output is written by exactly one rank, to a temporary name in its directory and renamed
into place, so a reader never sees half a file and a crash leaves no partial output.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from desinight import __version__
from desinight.core.errors import ConfigError


def raw_root() -> Path:
    try:
        return Path(os.environ["DESI_SPECTRO_DATA"])
    except KeyError:
        raise ConfigError("DESI_SPECTRO_DATA is not set (raw data root)") from None


def redux_dir() -> Path:
    try:
        return Path(os.environ["DESI_SPECTRO_REDUX"]) / os.environ.get("SPECPROD", "daily")
    except KeyError:
        raise ConfigError("DESI_SPECTRO_REDUX is not set (production root)") from None


def raw_path(night: int, expid: int) -> Path:
    return raw_root() / str(night) / f"{expid:08d}" / f"desi-{expid:08d}.fits.fz"


def preproc_path(night: int, expid: int, cam: str) -> Path:
    return redux_dir() / "preproc" / str(night) / f"{expid:08d}" / f"preproc-{cam}-{expid:08d}.fits"


def exposure_path(prefix: str, night: int, expid: int, cam: str) -> Path:
    """exposures/NIGHT/EXPID/{prefix}-CAM-EXPID.fits (frame, sframe, cframe, psf, fiberflat...)."""
    return redux_dir() / "exposures" / str(night) / f"{expid:08d}" / f"{prefix}-{cam}-{expid:08d}.fits"


def calibnight_path(prefix: str, night: int, cam: str) -> Path:
    return redux_dir() / "calibnight" / str(night) / f"{prefix}-{cam}-{night}.fits"


def tile_path(prefix: str, tileid: int, night: int, spectro: int) -> Path:
    return redux_dir() / "tiles" / str(tileid) / str(night) / f"{prefix}-{spectro}-{tileid}-{night}.fits"


def provenance(step: str, inputs: list[Path], config: dict | None = None) -> list[dict]:
    """Header cards recording how an output was made: code version, step, inputs, config."""
    cards = [{"name": "DNVER", "value": __version__, "comment": "desinight version"},
             {"name": "DNSTEP", "value": step, "comment": "step that wrote this file"}]
    for i, p in enumerate(inputs[:50]):
        cards.append({"name": f"INPUT{i:03d}", "value": Path(p).name[:68]})
    for k, v in sorted((config or {}).items()):
        cards.append({"name": k[:8].upper(), "value": v})
    return cards


def write_fits(path: Path, hdus: list[tuple[str, np.ndarray, list[dict] | None]]) -> Path:
    """Write image/table HDUs atomically (temp name + os.replace)."""
    import fitsio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
        for name, data, header in hdus:
            f.write(data, extname=name, header=header)
    os.replace(tmp, path)
    return path


class InputFileError(Exception):
    """A step could not read one of its inputs; the message names the file (a bare
    UnicodeDecodeError or fitsio error does not say which of a job's many files it was)."""


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Name ``path`` in any error raised while reading it."""
    try:
        yield
    except InputFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader error, re-raised with the file named
        raise InputFileError(f"reading {path}: {type(e).__name__}: {e}") from e


def read_hdu(path: Path, ext: str) -> tuple[np.ndarray, dict]:
    import fitsio

    with reading(path), fitsio.FITS(str(path)) as f:
        return f[ext].read(), dict(f[ext].read_header())


def read_calvar(path: Path, shape: tuple) -> np.ndarray:
    """The CALVAR plane of a frame, sframe or cframe (see steps/calvar.py); zeros when the file
    has none (reduced without a nightly bias, or by an older desinight)."""
    import fitsio

    with reading(path), fitsio.FITS(str(path)) as f:
        if "CALVAR" not in f:
            return np.zeros(shape)
        return f["CALVAR"].read().astype(float)
