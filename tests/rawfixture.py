"""A tiny raw-night writer for ingest tests, independent of the simulator: header layout only."""

from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np

N = 20261124


def write_exposure(root: Path, night: int, seq: int, obstype: str, tile: int = -1,
                   seqnum: int = 1, seqtot: int = 1, cameras=("b0", "r0", "z0"),
                   drop_keys=(), hdus=None, expid: int | None = None) -> Path:
    expid = expid if expid is not None else (night - 20000000) * 100 + seq
    d = root / str(night) / f"{expid:08d}"
    d.mkdir(parents=True, exist_ok=True)
    hdr = {"EXPID": expid, "NIGHT": night, "OBSTYPE": obstype, "TILEID": tile, "EXPTIME": 900.0,
           "PROGRAM": "dark" if obstype == "SCIENCE" else "calib", "SEQNUM": seqnum,
           "SEQTOT": seqtot, "CAMERAS": ",".join(cameras), "DATE-OBS": "2026-11-25T01:00:00",
           "MJD-OBS": 61000.0}
    for k in drop_keys:
        hdr.pop(k)
    path = d / f"desi-{expid:08d}.fits.fz"
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=[{"name": k, "value": v} for k, v in hdr.items()])
        for cam in (hdus if hdus is not None else cameras):
            f.write(np.full((32, 32), 1000, dtype=np.int16), extname=cam.upper(),
                    compress="RICE", header={"CAMERA": cam})
    (d / f"request-{expid:08d}.json").write_text(json.dumps({"EXPID": expid, "OBSTYPE": obstype}))
    return d


def write_night(root: Path, night: int = N, science=2, tile=1000) -> list[Path]:
    dirs = [write_exposure(root, night, 0, "ZERO"), write_exposure(root, night, 1, "ARC"),
            write_exposure(root, night, 2, "FLAT")]
    for i in range(science):
        dirs.append(write_exposure(root, night, 3 + i, "SCIENCE", tile, i + 1, science))
    return dirs
