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
from . import conditions as C
from . import instrument as I
from . import sky as SKY
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
    seeing: float = C.NOMINAL_SEEING
    airmass: float = 1.0
    moon: float = 0.0
    moonsep: float = 90.0
    flex_y: float = 0.0         # flexure vs the arcs: rows (wavelength) and columns
    flex_x: float = 0.0
    bad: str | None = None
    cameras: list[str] = field(default_factory=list)
    defects: bool = False       # the CCDs' hot pixels/columns are in it (ccd.dark_current)


def expid_for(night: int, seq: int) -> int:
    return (night - 20000000) * 100 + seq


#: broken arc sequences the simulator can take before the night's good one (calibration sets):
#: ``incomplete`` SEQTOT=5 but only SEQNUM 1-3 taken; ``corrupt`` a sequence of 3 whose second
#: raw file is truncated (ingest quarantines it, so the sequence lacks SEQNUM 2)
BROKEN_ARCS = ("incomplete", "corrupt")


def schedule(p: I.Preset, night: int, seed: int, bad: Sequence[str] = (),
             cond: C.Conditions = C.Conditions(), tileids: Sequence[int] = (),
             darks: int = 0, narc: int | None = None,
             broken_arcs: str | None = None) -> list[Exposure]:
    """The night's exposures in time order: afternoon calibrations, then tiles every ~20 min;
    each science exposure with its conditions (cond's knobs, or drawn). ``tileids`` replace
    the night's own TILEIDs, in order (a tile observed again on a later night).

    darks: DARK exposures (300 s) after the zeros; with any, every exposure of the night
    carries the CCD defects (ccd.dark_current). narc: arcs in the good sequence (None: the
    preset's). broken_arcs: one of BROKEN_ARCS, an arc sequence taken before the good one."""
    if len(tileids) > p.ntiles or any(t <= 0 for t in tileids) or len(set(tileids)) < len(tileids):
        raise DesinightError(f"--tileid: at most {p.ntiles} distinct positive TILEID(s) "
                             f"(preset {p.name} observes {p.ntiles} tile(s) a night)")
    rng = np.random.default_rng([seed, night, 1])
    crng = np.random.default_rng([seed, night, 2])
    exptime = p.exptime if cond.exptime is None else float(cond.exptime)
    d = datetime.strptime(str(night), "%Y%m%d").replace(tzinfo=timezone.utc)
    t = d + timedelta(hours=22)                      # 15:00 at Kitt Peak (UTC-7)
    out: list[Exposure] = []
    cams = p.cameras()

    def add(obstype, exptime, seqnum, seqtot, gap_s, **kw):
        nonlocal t
        out.append(Exposure(expid_for(night, len(out)), night, obstype, exptime, seqnum, seqtot,
                            t, cameras=list(cams), defects=darks > 0, **kw))
        t += timedelta(seconds=exptime + gap_s)

    if broken_arcs is not None and broken_arcs not in BROKEN_ARCS:
        raise DesinightError(f"unknown broken arc sequence {broken_arcs!r} "
                             f"(one of {', '.join(BROKEN_ARCS)})")
    if darks < 0 or (narc is not None and narc < 1):
        raise DesinightError("darks must be >= 0 and narc >= 1")
    for kind, n in (("ZERO", p.nzero), ("DARK", darks), ("ARC", p.narc if narc is None else narc),
                    ("FLAT", p.nflat)):
        if kind == "ARC" and broken_arcs == "incomplete":
            for k in range(3):                          # SEQNUM 4 and 5 never taken
                add("ARC", EXPTIMES["ARC"], k + 1, 5, 60.0)
        elif kind == "ARC" and broken_arcs == "corrupt":
            for k in range(3):
                add("ARC", EXPTIMES["ARC"], k + 1, 3, 60.0, bad="truncated" if k == 1 else None)
        for k in range(n):
            add(kind, EXPTIMES[kind], k + 1, n, 60.0)
    t = max(t, d + timedelta(hours=26, minutes=30))  # evening twilight: science starts
    for i in range(p.ntiles):
        tileid = tileids[i] if i < len(tileids) else (night % 10000) * 10 + i
        for k in range(p.nscience):
            kw = dict(tileid=tileid, transparency=float(rng.uniform(0.85, 1.0)),
                      **C.draw(cond, crng))
            texp = exptime
            if cond.efftime is not None:
                # the exposure-time calculator: this exposure's share of the tile's goal, at
                # the effective time per second its conditions give
                probe = Exposure(expid_for(night, len(out)), night, "SCIENCE", 1.0, k + 1,
                                 p.nscience, t, **kw)
                rel = sky_rel(probe, seed, exposure_sky(p, probe, seed))
                texp = cond.efftime / p.nscience / C.efftime(probe, rel)
                if texp > 10000:
                    raise DesinightError(f"--efftime {cond.efftime:g}: these conditions need "
                                         f"{texp:.0f} s exposures (at most 10000)")
            add("SCIENCE", texp, k + 1, p.nscience, 300.0, **kw)
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


def camera_electrons(p: I.Preset, camera: str, exp: Exposure, tile: TG.Tile | None,
                     seed: int = 0) -> np.ndarray:
    arm, spectro = camera[0], int(camera[1:])
    y = np.arange(p.ny)
    if exp.obstype in ("ZERO", "DARK"):
        return np.zeros((p.ny, p.nx), np.float32)
    science = exp.obstype == "SCIENCE"
    wave = I.true_wave(p, camera, y, exp.flex_y if science else 0.0)
    tf = fiber_throughput(p, spectro, wave)
    lsf = I.lsf_sigma(p, camera)
    if exp.obstype == "ARC":
        lines = I.arc_lines(arm)
        lw = np.broadcast_to(lines, (p.nfiber, lines.size))
        le = I.arc_intensity(lw) * exp.exptime * \
            np.array([np.interp(lines, wave[f], tf[f]) for f in range(p.nfiber)])
        rows = ccd.spectra_to_rows(wave, np.zeros_like(wave), lw, le, np.zeros_like(lw), lsf)
    elif exp.obstype == "FLAT":
        rows = ccd.spectra_to_rows(wave, I.flat_lamp(wave) * exp.exptime * tf,
                                   np.zeros((p.nfiber, 0)), np.zeros((p.nfiber, 0)),
                                   np.zeros((p.nfiber, 0)))
    else:
        rows = _science_rows(p, camera, exp, tile, wave, tf, lsf, seed)
    return ccd.spread(p, I.true_trace(p, camera, y, exp.flex_x if science else 0.0), rows)


def exposure_sky(p: I.Preset, exp: Exposure, seed: int) -> SKY.ExposureSky:
    return SKY.ExposureSky(SKY.night_level(exp.night, seed), exp.airmass, exp.moon, exp.moonsep,
                           np.random.default_rng([seed, exp.expid, 78]), p.nspec * p.nfiber)


def sky_rel(exp: Exposure, seed: int, sky: SKY.ExposureSky) -> float:
    """The exposure's continuum sky (r; ``sky`` is its exposure_sky) relative to the night's
    dark sky at the zenith."""
    dark = SKY.ExposureSky(SKY.night_level(exp.night, seed), 1.0, 0.0, 90.0,
                           np.random.default_rng(0), 1)
    return float(10 ** (-0.4 * (sky.r_mag() - dark.r_mag())))


def _science_rows(p, camera, exp, tile, wave, tf, lsf, seed):
    """Electrons per row: sky through the instrument; targets also through the atmosphere and
    the fibre's aperture (seeing, size)."""
    spectro = int(camera[1:])
    conv_k = 1e-17 * I.TEL_AREA_CM2 * exp.exptime / I.HC_ERG_A      # x lambda x T -> e/A
    instr = I.throughput(wave, camera[0]) * C.instrument_curve(wave, camera) * \
        C.exposure_tilt(wave, camera, seed, exp.expid)
    t_sky = conv_k * wave * instr * tf                                # e/A per unit flux
    atm = C.atmosphere(wave, exp.airmass, exp.transparency)
    sky = exposure_sky(p, exp, seed)
    cont = np.empty_like(wave)
    lines_w, lines_e, lines_s = [], [], []
    for f in range(p.nfiber):
        g = spectro * p.nfiber + f
        spec = tile.spectra[g]
        cont[f] = sky.continuum(g, wave[f]) * t_sky[f]
        sw, sf, ss = sky.line_list(g)
        ws, es, sgs = [sw], [sf * np.interp(sw, wave[f], t_sky[f])], [ss]
        if spec is not None:
            t_obj = t_sky[f] * atm[f] * C.fiber_acceptance(wave[f], exp.seeing, spec.half_light)
            cont[f] += spec.continuum(wave[f]) * t_obj
            w2, f2, s2 = spec.line_list()
            ws.append(w2), es.append(f2 * np.interp(w2, wave[f], t_obj)), sgs.append(s2)
        lines_w.append(np.concatenate(ws)), lines_e.append(np.concatenate(es))
        lines_s.append(np.concatenate(sgs))
    n = max(len(w) for w in lines_w)
    lw, le, ls = (np.zeros((p.nfiber, n)) for _ in range(3))
    for f in range(p.nfiber):
        k = len(lines_w[f])
        lw[f, :k], le[f, :k], ls[f, :k] = lines_w[f], lines_e[f], lines_s[f]
        lw[f, k:] = -1.0
    inside = (lw > wave[:, :1] - 50) & (lw < wave[:, -1:] + 50)
    le = np.where(inside, le, 0.0)
    return ccd.spectra_to_rows(wave, cont, np.where(inside, lw, 0.0), le, ls, lsf)


#: tiles of the night being simulated; worker processes inherit it by fork, because the
#: spectra hold closures that cannot be pickled
TILES: dict[int, TG.Tile] = {}


def render_camera(args) -> tuple[str, np.ndarray]:
    p, camera, exp, seed = args
    tile = TILES.get(exp.tileid)
    rng = np.random.default_rng([seed, exp.expid, ord(camera[0]), int(camera[1:])])
    e = camera_electrons(p, camera, exp, tile, seed)
    dark = ccd.dark_current(p, camera, seed) if exp.defects else None
    return camera, ccd.raw_image(p, camera, e, exp.exptime, rng, dark)


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
    ] + ([
        {"name": "AIRMASS", "value": round(exp.airmass, 3)},
        {"name": "SEEING", "value": round(exp.seeing, 3), "comment": "guider FWHM, arcsec"},
        {"name": "MOONFRAC", "value": round(exp.moon, 3), "comment": "moon illumination"},
        {"name": "MOONSEP", "value": round(exp.moonsep, 1), "comment": "deg"},
    ] if exp.obstype == "SCIENCE" else [])


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


#: wavelength samples per arm of the THROUGHPUT truth
TRUTH_NWAVE = 100


def truth_tables(p: I.Preset, exps: Sequence[Exposure], seed: int):
    """EXPOSURES (conditions, EFFTIME), THROUGHPUT (true throughput per exposure and camera,
    with and without the point-source fibre acceptance) and SKY (per-fibre sky scales)."""
    sci = [e for e in exps if e.obstype == "SCIENCE" and not e.bad]
    ex = np.zeros(len(sci), [("EXPID", "i4"), ("TILEID", "i4"), ("EXPTIME", "f4"),
                             ("SEEING", "f4"), ("AIRMASS", "f4"), ("MOONFRAC", "f4"),
                             ("MOONSEP", "f4"), ("TRANSPARENCY", "f4"), ("FLEX_Y", "f4"),
                             ("FLEX_X", "f4"), ("SKY_R_MAG", "f4"), ("EFFTIME", "f4")])
    cams = p.cameras()
    th = np.zeros(len(sci) * len(cams), [("EXPID", "i4"), ("CAMERA", "U3"),
                                         ("WAVE", "f4", TRUTH_NWAVE),
                                         ("THROUGHPUT", "f4", TRUTH_NWAVE),
                                         ("FIBERFRAC_PSF", "f4", TRUTH_NWAVE)])
    nf = p.nspec * p.nfiber
    sk = np.zeros(len(sci) * nf, [("EXPID", "i4"), ("FIBER", "i4"), ("CONT_SCALE", "f4"),
                                  ("LINE_SCALE", "f4")])
    for i, e in enumerate(sci):
        sky = exposure_sky(p, e, seed)
        ex[i] = (e.expid, e.tileid, e.exptime, e.seeing, e.airmass, e.moon, e.moonsep,
                 e.transparency, e.flex_y, e.flex_x, sky.r_mag(),
                 C.efftime(e, sky_rel(e, seed, sky)))
        for j, cam in enumerate(cams):
            lo, hi = I.ARM_RANGES[cam[0]]
            w = np.linspace(lo, hi, TRUTH_NWAVE)
            th[i * len(cams) + j] = (e.expid, cam, w, C.true_throughput(w, cam, e, seed),
                                     C.fiber_acceptance(w, e.seeing))
        sk[i * nf:(i + 1) * nf] = list(zip([e.expid] * nf, range(nf), sky.fib_cont, sky.fib_line))
    return ex, th, sk


def write_truth(path: Path, tiles: dict[int, TG.Tile], night: int,
                exps: Sequence[Exposure] = (), seed: int = 0, p: I.Preset | None = None) -> None:
    """The truth file: TRUTH (one row per fibre and tile; the first HDU with data), and with
    exposures, EXPOSURES, THROUGHPUT and SKY (truth_tables); when the night carries CCD
    defects, DARK-<CAMERA> images: each camera's true dark current (e-/s per pixel)."""
    import fitsio
    rows = np.concatenate([t.truth for t in tiles.values()]) if tiles else \
        np.zeros(0, TG.TRUTH_DTYPE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
        f.write(rows, extname="TRUTH", header=[{"name": "NIGHT", "value": night}])
        if p is not None and any(e.obstype == "SCIENCE" for e in exps):
            for name, table in zip(("EXPOSURES", "THROUGHPUT", "SKY"), truth_tables(p, exps, seed)):
                f.write(table, extname=name)
        if p is not None and any(e.defects for e in exps):
            for cam in p.cameras():
                f.write(np.array(ccd.dark_current(p, cam, seed)), extname=f"DARK-{cam.upper()}",
                        header=[{"name": "BUNIT", "value": "electron/s"}])
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
