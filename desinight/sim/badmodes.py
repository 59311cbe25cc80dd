"""Bad-data modes: each writes one EXTRA exposure (a ZERO appended after the good night).

The good night stays complete and processable; the extra exposure is what ingest must
quarantine (or, for ``missing-camera``, ingest with one bad camera):

- ``truncated``           raw file cut to half its size (a transfer that never finished)
- ``missing-keyword``     primary header without EXPTIME
- ``wrong-obstype``       OBSTYPE = 'OBJECT' (not one of ZERO, DARK, ARC, FLAT, SCIENCE)
- ``duplicate-expid``     a new directory whose header EXPID is the night's first EXPID
- ``missing-camera``      CAMERAS lists every camera but the last one's HDU is absent
- ``corrupt-compression`` the compressed tiles of every camera overwritten with garbage
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BAD_MODES = ("truncated", "missing-keyword", "wrong-obstype", "duplicate-expid",
             "missing-camera", "corrupt-compression")


def apply_bad(mode: str, path: Path, p, exp, images: dict, first_expid: int) -> None:
    """Write ``path`` as the raw file of ``exp`` damaged the way ``mode`` says."""
    import fitsio

    from .night import camera_keys, primary_keys, write_raw
    if mode in ("truncated", "corrupt-compression"):
        write_raw(path, p, exp, images)
        if mode == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            _corrupt(path)
        return
    prim = primary_keys(exp)
    cams = dict(images)
    if mode == "missing-keyword":
        prim = [k for k in prim if k["name"] != "EXPTIME"]
    elif mode == "wrong-obstype":
        prim = [dict(k, value="OBJECT") if k["name"] == "OBSTYPE" else k for k in prim]
    elif mode == "duplicate-expid":
        prim = [dict(k, value=first_expid) if k["name"] == "EXPID" else k for k in prim]
    elif mode == "missing-camera":
        cams.pop(list(cams)[-1])
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=prim)
        for cam, img in cams.items():
            f.write(img, extname=cam.upper(), header=prim + camera_keys(p, cam), compress="RICE")


def _corrupt(path: Path) -> None:
    """Overwrite the middle of each compressed HDU's heap (the RICE byte streams)."""
    import fitsio
    with fitsio.FITS(str(path)) as f:
        spans = [(h.get_offsets()["data_start"], h.get_offsets()["data_end"])
                 for h in f[1:] if h.get_extname() not in ("SPEC", "")]
    rng = np.random.default_rng(5)
    with open(path, "r+b") as fh:
        for a, b in spans:
            n = b - a
            start = a + n // 4
            fh.seek(start)
            fh.write(rng.integers(0, 256, n // 2, dtype=np.uint8).tobytes())
