"""Simulate a night: the schedule of exposures, what each camera sees, and the raw files.

Layout written (what ``desinight.rawdata`` reads)::

    RAWROOT/NIGHT/EXPID/fiberassign-TILEID.fits   (science only, written first)
    RAWROOT/NIGHT/EXPID/desi-EXPID.fits.fz        (primary header + one RICE image per camera)
    RAWROOT/NIGHT/EXPID/request-EXPID.json        (written LAST: marks the exposure complete)
    TRUTH_DIR/truth-NIGHT.fits                    (default RAWROOT/truth, outside the layout)

Every file is written to a dot-name in the same directory and renamed into place, except in
realtime mode where the raw file appears half-written for a while, as a transfer would leave it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..core.errors import DesinightError
from . import ccd
from . import instrument as I
from . import targets as TG
from .badmodes import BAD_MODES, apply_bad

PROGRAMS = {"ZERO": "calib zeros", "DARK": "calib darks", "ARC": "calib arcs",
            "FLAT": "calib flats", "SCIENCE": "dark"}
EXPTIMES = {"ZERO": 0.0, "DARK": 300.0, "ARC": 5.0, "FLAT": 10.0}


@dataclass
class Exposure:
    expid: int
    night: int
    obstype: str
    exptime: float
    seqnum: int
    seqtot: int
    date: datetime
    tileid: int = -1
    transparency: float = 1.0
    bad: str | None = None
    cameras: list[str] = field(default_factory=list)


def expid_for(night: int, seq: int) -> int:
    return (night - 20000000) * 100 + seq


def schedule(p: I.Preset, night: int, seed: int, bad: Sequence[str] = ()) -> list[Exposure]:
    """The night's exposures in time order: afternoon calibrations, then tiles every ~20 min."""
    rng = np.random.default_rng([seed, night, 1])
    d = datetime.strptime(str(night), "%Y%m%d").replace(tzinfo=timezone.utc)
    t = d + timedelta(hours=22)                      # 15:00 at Kitt Peak (UTC-7)
    out: list[Exposure] = []
    cams = p.cameras()

    def add(obstype, exptime, seqnum, seqtot, gap_s, **kw):
        nonlocal t
        out.append(Exposure(expid_for(night, len(out)), night, obstype, exptime, seqnum, seqtot,
                            t, cameras=list(cams), **kw))
        t += timedelta(seconds=exptime + gap_s)

    for kind, n in (("ZERO", p.nzero), ("ARC", p.narc), ("FLAT", p.nflat)):
        for k in range(n):
            add(kind, EXPTIMES[kind], k + 1, n, 60.0)
    t = max(t, d + timedelta(hours=26, minutes=30))  # evening twilight: science starts
    for i in range(p.ntiles):
        tileid = (night % 10000) * 10 + i
        for k in range(p.nscience):
            add("SCIENCE", p.exptime, k + 1, p.nscience, 300.0, tileid=tileid,
                transparency=float(rng.uniform(0.85, 1.0)))
    for mode in bad:
        if mode not in BAD_MODES:
            raise DesinightError(f"unknown bad-data mode {mode!r} (one of {', '.join(BAD_MODES)})")
        add("ZERO", 0.0, 1, 1, 60.0, bad=mode)
    if len(out) > 100:
        raise DesinightError(f"{len(out)} exposures do not fit in one night's 100 EXPIDs")
    return out


# --- what one camera sees -------------------------------------------------------------------
def fiber_throughput(p: I.Preset, spectro: int, wave: np.ndarray) -> np.ndarray:
    """Relative throughput of each fibre (what the fiberflat measures), (nfib, ny)."""
    rng = np.random.default_rng([spectro, 3131])
    t0 = rng.normal(1.0, 0.06, p.nfiber)[:, None]
    slope = rng.normal(0.0, 0.03, p.nfiber)[:, None]
    return t0 * (1 + slope * (wave - 6700.0) / 3000.0)


def camera_electrons(p: I.Preset, camera: str, exp: Exposure, tile: TG.Tile | None) -> np.ndarray:
    arm, spectro = camera[0], int(camera[1:])
    y = np.arange(p.ny)
    if exp.obstype in ("ZERO", "DARK"):
        return np.zeros((p.ny, p.nx), np.float32)
    wave = I.true_wave(p, camera, y)
    tf = fiber_throughput(p, spectro, wave)
    if exp.obstype == "ARC":
        lines = I.arc_lines(arm)
        lw = np.broadcast_to(lines, (p.nfiber, lines.size))
        le = I.arc_intensity(lw) * exp.exptime * \
            np.array([np.interp(lines, wave[f], tf[f]) for f in range(p.nfiber)])
        rows = ccd.spectra_to_rows(wave, np.zeros_like(wave), lw, le, np.zeros_like(lw))
    elif exp.obstype == "FLAT":
        rows = ccd.spectra_to_rows(wave, I.flat_lamp(wave) * exp.exptime * tf,
                                   np.zeros((p.nfiber, 0)), np.zeros((p.nfiber, 0)),
                                   np.zeros((p.nfiber, 0)))
    else:
        rows = _science_rows(p, camera, exp, tile, wave, tf)
    return ccd.spread(p, I.true_trace(p, camera, y), rows)


def _science_rows(p, camera, exp, tile, wave, tf):
    arm, spectro = camera[0], int(camera[1:])
    conv_k = 1e-17 * I.TEL_AREA_CM2 * exp.exptime / I.HC_ERG_A      # x lambda x T -> e/A
    conv = conv_k * wave * I.throughput(wave, arm) * tf
    sky = TG.sky_spectrum()
    cont = np.empty_like(wave)
    lines_w, lines_f, lines_s = [], [], []
    sw, sf, ss = sky.line_list()
    for f in range(p.nfiber):
        spec = tile.spectra[spectro * p.nfiber + f]
        c = sky.continuum(wave[f])
        ow, of, os_ = sw, sf, ss
        if spec is not None:
            c = c + exp.transparency * spec.continuum(wave[f])
            w2, f2, s2 = spec.line_list()
            ow, of, os_ = (np.concatenate([sw, w2]), np.concatenate([sf, exp.transparency * f2]),
                           np.concatenate([ss, s2]))
        cont[f] = c
        lines_w.append(ow), lines_f.append(of), lines_s.append(os_)
    n = max(len(w) for w in lines_w)
    lw, lf, ls = (np.zeros((p.nfiber, n)) for _ in range(3))
    for f in range(p.nfiber):
        k = len(lines_w[f])
        lw[f, :k], lf[f, :k], ls[f, :k] = lines_w[f], lines_f[f], lines_s[f]
        lw[f, k:] = -1.0
    # electrons of each line: flux x conversion at the line's wavelength (per fibre)
    le = lf * conv_k * np.abs(lw) * I.throughput(np.abs(lw), arm) * \
        np.array([np.interp(lw[f], wave[f], tf[f]) for f in range(p.nfiber)])
    inside = (lw > wave[:, :1] - 50) & (lw < wave[:, -1:] + 50)
    le = np.where(inside, le, 0.0)
    return ccd.spectra_to_rows(wave, cont * conv, np.where(inside, lw, 0.0), le, ls)


#: tiles of the night being simulated; worker processes inherit it by fork, because the
#: spectra hold closures that cannot be pickled
TILES: dict[int, TG.Tile] = {}


def render_camera(args) -> tuple[str, np.ndarray]:
    p, camera, exp, seed = args
    tile = TILES.get(exp.tileid)
    rng = np.random.default_rng([seed, exp.expid, ord(camera[0]), int(camera[1:])])
    e = camera_electrons(p, camera, exp, tile)
    return camera, ccd.raw_image(p, camera, e, exp.exptime, rng)


# --- writing ----------------------------------------------------------------------------------
def _mjd(t: datetime) -> float:
    return (t - datetime(1858, 11, 17, tzinfo=timezone.utc)).total_seconds() / 86400.0


def primary_keys(exp: Exposure) -> list[dict]:
    return [
        {"name": "EXPID", "value": exp.expid, "comment": "exposure id"},
        {"name": "NIGHT", "value": exp.night, "comment": "night of observation (local date)"},
        {"name": "OBSTYPE", "value": exp.obstype, "comment": "ZERO, DARK, ARC, FLAT, SCIENCE"},
        {"name": "TILEID", "value": exp.tileid, "comment": "-1 for calibrations"},
        {"name": "EXPTIME", "value": exp.exptime, "comment": "seconds"},
        {"name": "PROGRAM", "value": PROGRAMS[exp.obstype]},
        {"name": "DATE-OBS", "value": exp.date.strftime("%Y-%m-%dT%H:%M:%S.000")},
        {"name": "MJD-OBS", "value": round(_mjd(exp.date), 6)},
        {"name": "CAMERAS", "value": ",".join(exp.cameras)},
        {"name": "SEQNUM", "value": exp.seqnum, "comment": "position in its sequence"},
        {"name": "SEQTOT", "value": exp.seqtot, "comment": "length of its sequence"},
        {"name": "FLAVOR", "value": exp.obstype.lower()},
        {"name": "INSTRUME", "value": "DESINIGHT-SIM"},
    ]


def camera_keys(p: I.Preset, camera: str) -> list[dict]:
    keys = [{"name": "CAMERA", "value": camera}, {"name": "PRESET", "value": p.name},
            {"name": "CCDSIZE", "value": f"{p.ny},{p.nx}"}]
    par = ccd.amp_params(camera)
    for amp, reg in I.amp_layout(p).items():
        keys += [{"name": f"DATASEC{amp}", "value": I.fits_section(reg["DATA"])},
                 {"name": f"BIASSEC{amp}", "value": I.fits_section(reg["BIAS"])},
                 {"name": f"PRESEC{amp}", "value": I.fits_section(reg["PRE"])},
                 {"name": f"CCDSEC{amp}", "value": I.fits_section(reg["CCD"])},
                 {"name": f"GAIN{amp}", "value": par[amp]["GAIN"], "comment": "e/ADU"},
                 {"name": f"RDNOISE{amp}", "value": par[amp]["RDNOISE"], "comment": "e"}]
    keys.append({"name": "SATURATE", "value": I.SATURATION_ADU})
    return keys


def write_raw(path: Path, p: I.Preset, exp: Exposure, images: dict[str, np.ndarray]) -> None:
    import fitsio
    prim = primary_keys(exp)
    if path.exists():
        path.unlink()
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=prim)
        for cam, img in images.items():
            f.write(img, extname=cam.upper(), header=prim + camera_keys(p, cam), compress="RICE")


def write_fiberassign(path: Path, tile: TG.Tile, exp: Exposure) -> None:
    import fitsio
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header=[{"name": "TILEID", "value": tile.tileid},
                              {"name": "TILERA", "value": tile.ra},
                              {"name": "TILEDEC", "value": tile.dec}])
        f.write(tile.fiberassign, extname="FIBERASSIGN",
                header=[{"name": "TILEID", "value": tile.tileid}])


def write_truth(path: Path, tiles: dict[int, TG.Tile], night: int) -> None:
    import fitsio
    rows = np.concatenate([t.truth for t in tiles.values()]) if tiles else \
        np.zeros(0, TG.TRUTH_DTYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
        f.write(rows, extname="TRUTH", header=[{"name": "NIGHT", "value": night}])
    os.replace(tmp, path)


def request_json(exp: Exposure) -> str:
    return json.dumps({"EXPID": exp.expid, "NIGHT": exp.night, "OBSTYPE": exp.obstype,
                       "TILEID": exp.tileid, "EXPTIME": exp.exptime,
                       "PROGRAM": PROGRAMS[exp.obstype], "CAMERAS": ",".join(exp.cameras),
                       "SEQNUM": exp.seqnum, "SEQTOT": exp.seqtot}, indent=1)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_exposure(root: Path, p: I.Preset, exp: Exposure, images: dict[str, np.ndarray],
                   tile: TG.Tile | None, first_expid: int,
                   hold_partial_s: float | None = None) -> Path:
    """All files of one exposure in the contract order; returns its directory."""
    dir_expid = exp.expid
    expdir = root / str(exp.night) / f"{dir_expid:08d}"
    expdir.mkdir(parents=True, exist_ok=True)
    if tile is not None:
        fa = expdir / f"fiberassign-{tile.tileid}.fits"
        tmp = expdir / f".{fa.name}.tmp"
        write_fiberassign(tmp, tile, exp)
        os.replace(tmp, fa)
    final = expdir / f"desi-{dir_expid:08d}.fits.fz"
    tmp = expdir / f".{final.name}.tmp"
    if exp.bad:
        apply_bad(exp.bad, tmp, p, exp, images, first_expid)
    else:
        write_raw(tmp, p, exp, images)
    if hold_partial_s:
        data = tmp.read_bytes()
        tmp.unlink()
        half = (len(data) // 2880 // 2) * 2880
        with open(final, "wb") as f:      # a transfer in progress: half the bytes, for a while
            f.write(data[:half])
        time.sleep(hold_partial_s)
        with open(final, "ab") as f:
            f.write(data[half:])
    else:
        os.replace(tmp, final)
    atomic_write_text(expdir / f"request-{dir_expid:08d}.json", request_json(exp))
    return expdir
