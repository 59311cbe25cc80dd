"""Raw-data simulator of a DESI-like night (see docs/simulator.md).

``simulate_night`` is the one entry point: it writes the raw layout the pipeline reads,
plus a truth table outside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import DesinightError

__all__ = ["simulate_night"]


def simulate_night(night: int, out: Path, preset: str = "small", seed: int = 0,
                   realtime: float | None = None, bad: Sequence[str] = (),
                   truth_dir: Path | None = None, progress: bool = False,
                   exptime: float | None = None, seeing: float | None = None,
                   moon: float | None = None, airmass: float | None = None,
                   efftime: float | None = None, tileids: Sequence[int] = (), darks: int = 0,
                   narc: int | None = None,
                   broken_arcs: str | None = None) -> list[Path]:
    """Write night ``night`` under ``out``; return the exposure directories in time order.

    realtime: speed-up factor; files appear in time order with the night's gaps divided by
      it, and each raw file sits half-written for a moment before it is completed.
    bad: bad-data modes (``desinight.sim.badmodes.BAD_MODES``), each one extra exposure.
    exptime, seeing, moon, airmass: conditions of every science exposure (None: the preset's
      exposure time; seeing, airmass drawn per exposure; dark time). See docs/simulator.md.
    efftime: instead of exptime, the tile's goal of effective time: each exposure's EXPTIME is
      set for its conditions (as DESI's exposure-time calculator does).
    tileids: TILEIDs of the night's tiles, in order, instead of the night's own (a TILEID of
      an earlier night with the same seed observes the same targets again).
    darks, narc, broken_arcs: DARK exposures (and with them the CCD defects), arcs in the
      good sequence, a broken arc sequence before it (``night.schedule``).
    """
    import numpy as np

    from . import conditions as C
    from . import instrument as I
    from . import night as N
    from . import targets as TG

    if preset not in I.PRESETS:
        raise DesinightError(f"unknown preset {preset!r} (one of {', '.join(I.PRESETS)})")
    if not (20000101 <= int(night) <= 20991231):
        raise DesinightError(f"bad night {night}: expected YYYYMMDD")
    if realtime is not None and realtime <= 0:
        raise DesinightError("--realtime needs a positive speed-up factor")
    cond = C.Conditions(exptime, seeing, moon, airmass, efftime)
    _check_conditions(cond)
    p = I.PRESETS[preset]
    out = Path(out)
    exps = N.schedule(p, int(night), seed, bad, cond, tileids, darks=darks, narc=narc,
                      broken_arcs=broken_arcs)
    tiles: dict[int, TG.Tile] = {}
    for e in exps:
        if e.obstype == "SCIENCE" and e.tileid not in tiles:
            tiles[e.tileid] = TG.make_tile(p, e.tileid, np.random.default_rng([seed, e.tileid, 5]))
    N.write_truth(Path(truth_dir or out / "truth") / f"truth-{night}.fits", tiles, int(night),
                  exps, seed, p)

    N.TILES.clear()
    N.TILES.update(tiles)      # before the pool forks
    written: list[Path] = []
    bar = _progress(progress, len(exps))
    pool = _pool(p)
    try:
        for i, e in enumerate(exps):
            tile = tiles.get(e.tileid)
            if realtime and i > 0:
                time.sleep(max(0.0, (e.date - exps[i - 1].date).total_seconds() / realtime))
            jobs = [(p, cam, e, seed) for cam in e.cameras]
            images = dict(pool.map(N.render_camera, jobs) if pool and e.obstype != "ZERO"
                          else map(N.render_camera, jobs))
            hold = min(2.0, 60.0 / realtime) if realtime and i == len(exps) // 2 else None
            written.append(N.write_exposure(out, p, e, images, tile, exps[0].expid, hold))
            if bar:
                bar[0].update(bar[1], advance=1, description=f"{e.expid:08d} {e.obstype}")
    finally:
        if pool:
            pool.close()
        if bar:
            bar[0].stop()
    return written


def _check_conditions(c) -> None:
    if c.exptime is not None and not (0 < c.exptime <= 10000):
        raise DesinightError(f"--exptime {c.exptime}: expected 0 < seconds <= 10000")
    if c.efftime is not None and not (0 < c.efftime <= 20000):
        raise DesinightError(f"--efftime {c.efftime}: expected 0 < seconds <= 20000")
    if c.efftime is not None and c.exptime is not None:
        raise DesinightError("--efftime sets each exposure's time: give it or --exptime, "
                             "not both")
    if c.seeing is not None and not (0.3 <= c.seeing <= 5.0):
        raise DesinightError(f"--seeing {c.seeing}: expected 0.3-5 arcsec FWHM")
    if c.moon is not None and not (0.0 <= c.moon <= 1.0):
        raise DesinightError(f"--moon {c.moon}: expected an illuminated fraction 0-1")
    if c.airmass is not None and not (1.0 <= c.airmass <= 3.0):
        raise DesinightError(f"--airmass {c.airmass}: expected 1-3")


def _pool(p):
    """Two worker processes for the big presets (rendering is per camera, independent)."""
    import os
    if p.name == "small" or (os.cpu_count() or 1) < 2:
        return None
    import multiprocessing as mp
    return mp.get_context("fork").Pool(min(2, os.cpu_count() or 1))


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import Progress
    prog = Progress(transient=True)
    prog.start()
    return prog, prog.add_task("simulating", total=total)
