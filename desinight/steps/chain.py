"""Run a whole night in-process, in the planner's dependency order (tests, benchmarks, demos).

Production goes through the planner and one job per kind; this is the same sequence of
`run_job` calls in one interpreter.
"""

from __future__ import annotations

import contextlib
import io as _io

from desinight.core import kinds as K

from . import io
from .jobs import run_job


def night_exposures(night: int) -> list[dict]:
    import fitsio

    out = []
    for d in sorted((io.raw_root() / str(night)).glob("[0-9]" * 8)):
        raw = d / f"desi-{d.name}.fits.fz"
        try:
            h = fitsio.read_header(str(raw), 0)
            out.append({"EXPID": int(h["EXPID"]), "OBSTYPE": str(h["OBSTYPE"]).strip(),
                        "TILEID": int(h["TILEID"]), "dir": d.name})
        except Exception:  # bad-data exposures are the ingest's business, not the chain's
            continue
    return [e for e in out if int(e["dir"]) == e["EXPID"]]


def run_night(night: int, cameras: list[str], quiet: bool = True) -> dict[str, int]:
    """Every job kind of the night in order; returns the failure count per kind."""
    exps = night_exposures(night)
    of = lambda t: [e["EXPID"] for e in exps if e["OBSTYPE"] == t]  # noqa: E731
    tiles = sorted({e["TILEID"] for e in exps if e["OBSTYPE"] == "SCIENCE"})
    jobs = [("biasnight", of("ZERO") or of("DARK"), None), ]
    jobs += [("darknight", of("DARK"), None)] if of("DARK") and of("ZERO") else []
    jobs += [("arc", [e], None) for e in of("ARC")] + [("psfnight", of("ARC"), None)]
    jobs += [("flat", [e], None) for e in of("FLAT")] + [("fiberflatnight", of("FLAT"), None)]
    for t in tiles:
        sci = [e["EXPID"] for e in exps if e["OBSTYPE"] == "SCIENCE" and e["TILEID"] == t]
        jobs += [("science", [e], t) for e in sci] + [("stdstars", sci, t)]
        jobs += [("fluxcalib", [e], t) for e in sci] + [("redshift", sci, t)]
    for kind in K.declared():      # registry kinds after the built-in ones: their parents ran
        mine = [e for e in exps if e["OBSTYPE"] in kind.obstypes]
        if kind.granularity == "exposure":
            jobs += [(kind.name, [e["EXPID"]], e["TILEID"]) for e in mine]
        elif kind.granularity == "tile":
            for t in sorted({e["TILEID"] for e in mine}):
                jobs.append((kind.name, [e["EXPID"] for e in mine if e["TILEID"] == t], t))
        elif mine:
            jobs.append((kind.name, [e["EXPID"] for e in mine], None))
    fails: dict[str, int] = {}
    for kind, expids, tile in jobs:
        ctx = contextlib.redirect_stdout(_io.StringIO()) if quiet else contextlib.nullcontext()
        with ctx:
            rc = run_job(kind, night, expids, tile, cameras)
        fails[kind] = fails.get(kind, 0) + rc
    return fails
