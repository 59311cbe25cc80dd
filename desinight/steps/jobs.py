"""run_job: what one batch job runs — one kind of step over a set of cameras, MPI over cameras.

Tasks (one per camera) are dealt round-robin to the ranks; each rank writes only its own tasks'
outputs.  A failing task is caught, recorded in the job's status file, and the other tasks go on;
the job's return code (the same on every rank) is non-zero when any task failed anywhere.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from desinight.core import kinds as K
from desinight.core.cameras import parse_cameras
from desinight.core.errors import DesinightError

import numpy as np

from . import extract, fiberflat, fluxcalib, io, preproc, psf, redshift, sky

#: every job kind (core/kinds.py, the registry): a live view, so kinds declared later count
KINDS = K.view("name")


def _raw_cameras(night: int, expid: int) -> list[str]:
    import fitsio

    with io.reading(io.raw_path(night, expid)):
        hdr = fitsio.read_header(str(io.raw_path(night, expid)), 0)
    return parse_cameras(str(hdr["CAMERAS"]))


def _bias_for(night: int, cam: str, calib_night: int | None) -> Path | None:
    p = io.calibnight_path("biasnight", calib_night or night, cam)
    return p if p.exists() else None


def _task_biasnight(night, expids, tileid, cam, calib_night):
    raws = [io.raw_path(night, e) for e in expids]
    preproc.biasnight_camera(raws, cam, io.calibnight_path("biasnight", night, cam))


def _raw_anywhere(night: int, expid: int) -> Path:
    """The raw file of ``expid``: on ``night``, else on whichever night holds it (a
    darknight's darks come from neighbouring nights too; EXPIDs are unique in the survey)."""
    p = io.raw_path(night, expid)
    if p.exists():
        return p
    found = sorted(io.raw_root().glob(f"*/{expid:08d}/desi-{expid:08d}.fits.fz"))
    if not found:
        raise FileNotFoundError(f"no raw file of EXPID {expid} under {io.raw_root()}")
    return found[0]


def _task_darknight(night, expids, tileid, cam, calib_night):
    raws = [_raw_anywhere(night, e) for e in expids]
    preproc.darknight_camera(raws, cam, _bias_for(night, cam, calib_night),
                             io.calibnight_path("darknight", night, cam))


def _dark_for(night: int, cam: str, calib_night: int | None) -> Path | None:
    """A measured dark (darknight, e-/s per pixel): the night's own (the planner makes every
    preproc wait for it), else the calibration night's; none: no dark is subtracted."""
    for n in (night, calib_night):
        p = io.calibnight_path("darknight", n, cam) if n else None
        if p is not None and p.exists():
            return p
    return None


#: amplifiers the job masks (``b7D``...), from `step run --bad-amps`: one job per process
_BAD_AMPS: list[str] = []


def _task_preproc_each(night, expids, tileid, cam, calib_night):
    amps = [a[-1] for a in _BAD_AMPS if a[:-1] == cam]
    for e in expids:
        preproc.preproc_camera(io.raw_path(night, e), cam, _bias_for(night, cam, calib_night),
                               io.preproc_path(night, e, cam), _dark_for(night, cam, calib_night),
                               bad_amps=amps)


def _calib(prefix: str, night: int, cam: str, calib_night: int | None) -> Path:
    path = io.calibnight_path(prefix, calib_night or night, cam)
    if not path.exists():
        raise FileNotFoundError(f"missing {path.name} (run its calibration job first)")
    return path


def _task_arc(night, expids, tileid, cam, calib_night):
    _task_preproc_each(night, expids, tileid, cam, calib_night)
    for e in expids:
        psf.psf_from_arc(io.preproc_path(night, e, cam), cam, io.exposure_path("psf", night, e, cam))


def _task_psfnight(night, expids, tileid, cam, calib_night):
    files = [io.exposure_path("psf", night, e, cam) for e in expids]
    psf.psfnight([f for f in files if f.exists()], cam, io.calibnight_path("psfnight", night, cam))


def _on_root(comm, fn):
    """Run fn on rank 0 of a camera's rank group; its failure is raised on every rank of it."""
    if comm is None or comm.Get_size() == 1:
        return fn()
    out, err = None, None
    if comm.Get_rank() == 0:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below on every rank
            err = e
    msg = comm.bcast(None if err is None else f"{type(err).__name__}: {err}", root=0)
    if err is not None:
        raise err
    if msg:
        raise RuntimeError(f"rank 0 of this camera failed: {msg}")
    return comm.bcast(out, root=0)


def _task_flat(night, expids, tileid, cam, calib_night, comm=None):
    _on_root(comm, lambda: _task_preproc_each(night, expids, tileid, cam, calib_night))
    psfn = _calib("psfnight", night, cam, calib_night)
    for e in expids:
        frame = extract.extract_camera(io.preproc_path(night, e, cam), psfn, cam,
                                       io.exposure_path("frame", night, e, cam), comm=comm)
        _on_root(comm, lambda: fiberflat.fiberflat_from_frame(
            frame, cam, io.exposure_path("fiberflat", night, e, cam)))


def _task_fiberflatnight(night, expids, tileid, cam, calib_night):
    files = [io.exposure_path("fiberflat", night, e, cam) for e in expids]
    fiberflat.fiberflatnight([f for f in files if f.exists()], cam,
                             io.calibnight_path("fiberflatnight", night, cam))


def sky_fibers(night: int, expid: int, cam: str, nfiber: int) -> np.ndarray:
    """Boolean per fibre of this camera's spectrograph: OBJTYPE == SKY in the fiberassign."""
    import fitsio

    expdir = io.raw_path(night, expid).parent
    fa_files = sorted(expdir.glob("fiberassign-*.fits"))
    if not fa_files:
        raise FileNotFoundError(f"no fiberassign file in {expdir}")
    with io.reading(fa_files[0]):
        fa = fitsio.read(str(fa_files[0]), "FIBERASSIGN")
    spectro = int(cam[1:])
    isky = np.zeros(nfiber, bool)
    sel = fa["FIBER"] // nfiber == spectro
    isky[fa["FIBER"][sel] % nfiber] = np.char.strip(fa["OBJTYPE"][sel].astype(str)) == "SKY"
    return isky


def _task_science(night, expids, tileid, cam, calib_night, comm=None):
    _on_root(comm, lambda: _task_preproc_each(night, expids, tileid, cam, calib_night))
    psfn = _calib("psfnight", night, cam, calib_night)
    ffn = _calib("fiberflatnight", night, cam, calib_night)
    for e in expids:
        frame = extract.extract_camera(io.preproc_path(night, e, cam), psfn, cam,
                                       io.exposure_path("frame", night, e, cam), comm=comm)

        def _sky():
            nfib = io.read_hdu(frame, "FLUX")[0].shape[0]
            sky.subtract_sky(frame, ffn, sky_fibers(night, e, cam, nfib), cam,
                             io.exposure_path("sframe", night, e, cam))
        _on_root(comm, _sky)


#: kinds whose extraction can share one camera between several ranks (bundles over ranks)
BUNDLE_KINDS = tuple(k for k in K.BUILTIN if K.get(k).bundles)
#: kinds that share one unit between several ranks: bundles (extraction), targets (redrock)
GROUP_KINDS = BUNDLE_KINDS + ("redshift", "cumulative")


def _read_fa(night: int, expid: int) -> np.ndarray:
    import fitsio

    expdir = io.raw_path(night, expid).parent
    fa_files = sorted(expdir.glob("fiberassign-*.fits"))
    if not fa_files:
        raise FileNotFoundError(f"no fiberassign file in {expdir}")
    with io.reading(fa_files[0]):
        return fitsio.read(str(fa_files[0]), "FIBERASSIGN")


def _task_stdstars(night, expids, tileid, unit, calib_night):
    """unit = spectrograph number (as text): one output file per spectrograph."""
    spectro = int(unit)
    sframes = {e: {a: p for a in "brz"
                   if (p := io.exposure_path("sframe", night, e, f"{a}{spectro}")).exists()}
               for e in expids}
    sframes = {e: fr for e, fr in sframes.items() if fr}
    if not sframes:
        raise FileNotFoundError(f"no sframes of spectrograph {spectro} for tile {tileid}")
    fluxcalib.stdstars_calib(sframes, _read_fa(night, expids[0]), spectro,
                             io.tile_path("stdstars", tileid, night, spectro))


def _task_fluxcalib(night, expids, tileid, cam, calib_night):
    import fitsio

    for e in expids:
        sframe = io.exposure_path("sframe", night, e, cam)
        tile = tileid if tileid not in (None, -1) else int(fitsio.read_header(str(sframe), "FLUX")["TILEID"])
        std = io.tile_path("stdstars", tile, night, int(cam[1:]))
        fluxcalib.fluxcalib_camera(sframe, std, cam, io.exposure_path("fluxcalib", night, e, cam),
                                   io.exposure_path("cframe", night, e, cam))


def _task_redshift(night, expids, tileid, unit, calib_night, comm=None):
    """unit = spectrograph: coadd its three arms over the tile's exposures, fit redshifts
    (with a rank group, redrock spreads the targets over it)."""
    spectro = int(unit)
    cfr = {a: [f for f in (io.exposure_path("cframe", night, e, f"{a}{spectro}") for e in expids)
               if f.exists()] for a in "brz"}
    redshift.redshift_spectrograph(cfr, _read_fa(night, expids[0]), spectro,
                                   io.tile_path("coadd", tileid, night, spectro),
                                   io.tile_path("redrock", tileid, night, spectro), comm=comm)


def _nights_of(expids: Sequence[int], upto: int) -> dict[int, int]:
    """{expid: night} of a cumulative job's exposures, from where their cframes are
    (exposures/NIGHT/EXPID/; EXPIDs are unique in a production), latest night first."""
    root = io.redux_dir() / "exposures"
    nights = sorted((int(d.name) for d in root.iterdir() if d.name.isdigit() and int(d.name) <= upto),
                    reverse=True) if root.is_dir() else []
    out = {}
    for e in expids:
        out[e] = next((n for n in nights if (root / str(n) / f"{e:08d}").is_dir()), None)
        if out[e] is None:
            raise FileNotFoundError(f"exposure {e}: no exposures/NIGHT/{e:08d} on or before "
                                    f"night {upto} (its flux calibration has not run)")
    return out


def _task_cumulative(night, expids, tileid, unit, calib_night, comm=None):
    """unit = spectrograph: as _task_redshift, over the tile's exposures of this and earlier
    nights, written under tiles/cumulative/TILEID/NIGHT/ (each night's result is kept)."""
    spectro = int(unit)
    nights = _nights_of(expids, night)
    cfr = {a: [f for f in (io.exposure_path("cframe", nights[e], e, f"{a}{spectro}") for e in expids)
               if f.exists()] for a in "brz"}
    last = max(expids, key=lambda e: (nights[e], e))      # tonight's: its fiberassign
    redshift.redshift_spectrograph(cfr, _read_fa(nights[last], last), spectro,
                                   redshift.cumulative_path("coadd", tileid, night, spectro),
                                   redshift.cumulative_path("redrock", tileid, night, spectro),
                                   comm=comm)


def calib_night_of(cam: str, calib_night: int | None,
                   calib_nights: Mapping[str, int] | None) -> int | None:
    """The night whose calibnight files camera ``cam`` reads (None: the job's own night)."""
    return (calib_nights or {}).get(cam, calib_night)


def task_of(kind: str) -> Callable:
    """The kind's task function, from its registry entry point "module:function"."""
    module, _, name = K.get(kind).step.partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(kind: str, night: int, expids: Sequence[int], tileid: int | None,
            cameras: Sequence[str] | str | None, calib_night: int | None = None,
            comm=None, bad_amps: Sequence[str] = (),
            calib_nights: Mapping[str, int] | None = None) -> int:
    """Run one job; 0 when every camera succeeded, 1 otherwise (same answer on every rank).

    calib_nights: cameras whose calibnight files come from another night than calib_night
    (`calib use --cameras`); each camera's task gets its own."""
    _BAD_AMPS[:] = list(bad_amps)
    if kind not in KINDS:
        raise DesinightError(f"unknown step kind {kind!r} (one of {', '.join(KINDS)})")
    task = task_of(kind)
    expids = [int(e) for e in expids]
    if cameras:
        cams = parse_cameras(cameras)
    elif expids:
        cams = _raw_cameras(night, expids[0])
    else:
        raise DesinightError(f"{kind}: no cameras and no exposures to find them in")
    if K.get(kind).unit == "spectrograph":   # one output per spectrograph: the unit of work
        cams = sorted({c[1:] for c in cams}, key=int)
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    results = []
    group = None
    if comm is not None and size > len(cams) and kind in GROUP_KINDS:
        # more ranks than units: each camera (spectrograph) gets a group of ranks sharing its
        # bundles (targets);
        # the group's rank 0 does the camera's serial parts and writes every file
        group = comm.Split(rank % len(cams), rank)
        mine = [cams[rank % len(cams)]]
    else:
        mine = cams[rank::size]
    for cam in mine:
        t0 = time.perf_counter()
        lead = group is None or group.Get_rank() == 0
        try:
            cn = calib_night_of(cam, calib_night, calib_nights)
            if group is None:
                task(night, expids, tileid, cam, cn)
            else:
                task(night, expids, tileid, cam, cn, comm=group)
            if lead:
                results.append({"camera": cam, "ok": True, "seconds": time.perf_counter() - t0,
                                "outputs": _checksums(kind, night, expids, tileid, cam)})
        except Exception as err:  # one camera's failure must not stop the others
            if lead:
                results.append({"camera": cam, "ok": False,
                                "error": f"{type(err).__name__}: {err}",
                                "traceback": traceback.format_exc(),
                                "seconds": time.perf_counter() - t0})
    if group is not None:
        group.Free()
    _write_status(kind, night, expids, tileid, rank, results)
    nfail = sum(not r["ok"] for r in results)
    if comm is not None:
        nfail = comm.allreduce(nfail)
    return 0 if nfail == 0 else 1


def _checksums(kind, night, expids, tileid, unit) -> dict[str, str]:
    """sha256 of the task's declared outputs as written (what `resubmit --adopt` checks)."""
    import hashlib
    out = {}
    for rel in K.output_paths(kind, night, expids, tileid, unit):
        path = io.redux_dir() / rel
        if path.is_file():
            with open(path, "rb") as f:
                out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _write_status(kind, night, expids, tileid, rank, results) -> None:
    """Per-rank JSON record of every task (one file per rank: no two ranks share a file)."""
    ident = K.record_ident(kind, expids, tileid)
    path = io.redux_dir() / "run" / "steps" / str(night) / f"{kind}-{ident}-rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "night": night, "expids": expids, "tileid": tileid,
                               "rank": rank, "tasks": results}, indent=1))
    os.replace(tmp, path)
    for r in results:
        state = "ok" if r["ok"] else f"FAILED ({r['error'].splitlines()[0][:400]})"  # room for a path
        print(f"{kind} {night} {r['camera']}: {state} {r['seconds']:.1f}s", flush=True)
