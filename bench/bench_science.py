"""Redshift success against depth: small nights at several effective exposure times, the whole
chain (steps.chain.run_night: whatever steps/redshift.py fits with), scored per class.

    python bench/bench_science.py [--depths 250 500 1000 2000] [--seeds 201 202 ...]
                                  [--preset small] [--png docs/science-depth.png]
                                  [--json-out FILE] [--jobs N]

Depth = the tile's effective time (EFFTIME), reached as DESI reaches it: the simulator's
exposure-time calculator (``--efftime``) sets each of the 3 exposures for its own transparency
(drawn 0.85-1.0) at seeing 1.1", airmass 1.0, dark sky; the truth's EFFTIME is reported beside
it. (Until 2026-11-30 depth was the exposure time, which gave 0.85 of it as EFFTIME.) The seeds
are ones the tests never use. Prints one line per depth and class, then the figures as one JSON
object (last line); draws success against depth per class, and ELG success against [OII] flux
per depth, into the PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NIGHT = 20270315
CAMS = ["b0", "r0", "z0"]
OII_BINS = np.array([1e-17, 4e-17, 7e-17, 1e-16, 1.5e-16, 3.1e-16])


def run_one(depth: float, seed: int, preset: str) -> dict:
    """Simulate, reduce and match one seed at one depth (in a temporary production)."""
    from desinight.sim import simulate_night
    from desinight.sim.score import match
    from desinight.steps.chain import run_night
    import fitsio

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        os.environ.update(DESI_SPECTRO_DATA=str(tmp / "raw"),
                          DESI_SPECTRO_REDUX=str(tmp / "redux"), SPECPROD="bench")
        simulate_night(NIGHT, tmp / "raw", preset=preset, seed=seed, efftime=depth,
                       seeing=1.1, airmass=1.0, moon=0.0)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(_io.StringIO()):
            f = run_night(NIGHT, CAMS if preset == "small" else
                          [f"{a}{s}" for s in range(2) for a in "brz"])
        secs = time.perf_counter() - t0
        truth = tmp / "raw" / "truth" / f"truth-{NIGHT}.fits"
        m = match(truth, tmp / "redux" / "bench")
        ex = fitsio.read(str(truth), "EXPOSURES")
        efft = [float(ex["EFFTIME"][ex["TILEID"] == t].sum()) for t in np.unique(ex["TILEID"])]
    return {"m": m, "efft": efft, "fails": sum(f.values()), "secs": secs}


def _one_alone(args: tuple) -> dict:
    # a worker process of --jobs: one core each, so N workers use N cores and no more
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[k] = "1"
    return run_one(*args)


def run_depths(depths: list[float], seeds: list[int], preset: str, jobs: int = 1) -> list[dict]:
    """Every (depth, seed) night, in ``jobs`` processes; the matched arrays concatenated per depth."""
    tasks = [(d, s, preset) for d in depths for s in seeds]
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            done = list(ex.map(_one_alone, tasks))
    else:
        done = [run_one(*t) for t in tasks]
    runs = []
    for d in depths:
        parts = [r for t, r in zip(tasks, done) if t[0] == d]
        m = {k: np.concatenate([p["m"][k] for p in parts]) for k in parts[0]["m"]}
        m["efftime"] = float(np.mean([e for p in parts for e in p["efft"]]))
        m["failed_jobs"] = sum(p["fails"] for p in parts)
        m["chain_s"] = sum(p["secs"] for p in parts)
        runs.append(m)
    return runs


def summarise(depths: list[float], runs: list[dict]) -> dict:
    from desinight.sim.score import SCORED, _frac, good_mask, score_arrays
    out = {"depths_s": depths, "classes": {}, "elg_oii": {}, "efftime_s": [], "failed_jobs": 0}
    for d, m in zip(depths, runs):
        sc = score_arrays(m["CLASS"], m["TRUEZ"], m["Z"], m["ZWARN"])
        for c in SCORED:
            out["classes"].setdefault(c, []).append(sc[c])
        good = good_mask(m["CLASS"], m["TRUEZ"], m["Z"])   # only ELGs are binned below
        elg = m["CLASS"] == "ELG"
        bins = []
        for lo, hi in zip(OII_BINS[:-1], OII_BINS[1:]):
            sel = elg & (m["OII_FLUX"] >= lo) & (m["OII_FLUX"] < hi)
            bins.append(_frac(int((good & sel).sum()), int(sel.sum())))
        out["elg_oii"][str(d)] = bins
        out["efftime_s"].append(round(m["efftime"], 1))
        out["failed_jobs"] += m["failed_jobs"]
    return out


def plot(res: dict, png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.array(res["depths_s"], float)
    for k, (c, rows) in enumerate(res["classes"].items()):
        if not any(r["n"] for r in rows):
            continue
        f = np.array([r["good"]["frac"] for r in rows])
        lo = np.array([r["good"]["lo"] for r in rows])
        hi = np.array([r["good"]["hi"] for r in rows])
        xs = x * (1 + 0.025 * (k - 2))
        a1.errorbar(xs, f, yerr=[f - lo, hi - f], marker="o", capsize=3, label=f"{c} good")
        cu = np.array([r["catastrophic_unflagged"]["frac"] for r in rows])
        a1.plot(xs, cu, ls=":", color=a1.lines[-1].get_color(), alpha=0.7)
    from matplotlib.ticker import NullFormatter
    a1.set_xscale("log")
    a1.set_xticks(x, [f"{int(v)}" for v in x])
    a1.xaxis.set_minor_formatter(NullFormatter())
    a1.set_xlabel("tile effective time, EFFTIME (s)")
    a1.set_ylabel("fraction (good: solid; catastrophic unflagged: dotted)")
    a1.set_ylim(-0.02, 1.02)
    a1.legend(fontsize=8, loc="center right")
    a1.set_title("redshift success vs depth (68% Wilson intervals)", fontsize=10)
    centres = np.sqrt(OII_BINS[:-1] * OII_BINS[1:])
    for d, bins in res["elg_oii"].items():
        f = np.array([b["frac"] for b in bins])
        lo = np.array([b["lo"] for b in bins])
        hi = np.array([b["hi"] for b in bins])
        ok = np.array([b["n"] > 0 for b in bins])
        a2.errorbar(centres[ok], f[ok], yerr=[(f - lo)[ok], (hi - f)[ok]], marker="o",
                    capsize=3, label=f"{int(float(d))} s")
    a2.set_xscale("log")
    a2.set_xticks([1e-17, 3e-17, 1e-16, 3e-16], ["1e-17", "3e-17", "1e-16", "3e-16"])
    a2.xaxis.set_minor_formatter(NullFormatter())
    a2.set_xlabel("[OII] 3727 flux (erg/s/cm$^2$)")
    a2.set_ylabel("ELG good fraction")
    a2.set_ylim(-0.02, 1.02)
    a2.legend(fontsize=8, title="depth")
    a2.set_title("ELG success vs [OII] flux", fontsize=10)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=float, nargs="+", default=[250, 500, 1000, 2000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[201, 202, 203, 204, 205, 206])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "science-depth.png")
    ap.add_argument("--json-out", type=Path, default=None,
                    help="also write every figure (fractions, k, n, intervals) here")
    ap.add_argument("--jobs", type=int, default=1, help="nights reduced at once (one core each)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    runs = run_depths(a.depths, a.seeds, a.preset, a.jobs)
    for d, r in zip(a.depths, runs):
        print(f"depth {d:.0f} s: {len(a.seeds)} nights (chain {r['chain_s']:.0f} s), mean tile "
              f"EFFTIME {r['efftime']:.0f} s, failed jobs {r['failed_jobs']}", flush=True)
    print(f"all nights in {time.perf_counter() - t0:.0f} s on {a.jobs} process(es)", flush=True)
    res = summarise(a.depths, runs)
    for c, rows in res["classes"].items():
        for d, r in zip(a.depths, rows):
            if r["n"]:
                print(f"{c:4s} {d:6.0f} s: n={r['n']:3d} good {100 * r['good']['frac']:5.1f}% "
                      f"[{100 * r['good']['lo']:.1f}, {100 * r['good']['hi']:.1f}]  catastrophic "
                      f"unflagged {100 * r['catastrophic_unflagged']['frac']:4.1f}%  failures "
                      f"flagged {r['failures_flagged']['k']}/{r['failures_flagged']['n']}  "
                      f"good unflagged {100 * r['good_unflagged']['frac']:5.1f}%  redrock bits "
                      f"alone: catastrophic unflagged "
                      f"{100 * r['catastrophic_unflagged_rr']['frac']:4.1f}%")
    plot(res, a.png, f"{a.preset} preset, seeds {' '.join(map(str, a.seeds))}; "
         f"redshift step: {_fitter()}")
    print(f"figure: {a.png}")
    res["seeds"] = a.seeds
    if a.json_out:
        a.json_out.write_text(json.dumps(res, allow_nan=True, indent=1))
    print(json.dumps(compact(res)))


def compact(res: dict) -> dict:
    """One short string per class and depth (what docs/benchmarks.md shows)."""
    out = {"seeds": " ".join(map(str, res["seeds"])),
           "mean tile EFFTIME (s)": dict(zip(map(str, res["depths_s"]), res["efftime_s"]))}
    for c, rows in res["classes"].items():
        out[c] = {f"{d:.0f} s": (f"good {100 * r['good']['frac']:.1f}% [{100 * r['good']['lo']:.1f}, "
                                 f"{100 * r['good']['hi']:.1f}] of {r['n']}, catastrophic unflagged "
                                 f"{100 * r['catastrophic_unflagged']['frac']:.1f}%, failures flagged "
                                 f"{r['failures_flagged']['k']}/{r['failures_flagged']['n']}; "
                                 f"good unflagged {100 * r['good_unflagged']['frac']:.1f}%; "
                                 f"redrock's bits alone: catastrophic unflagged "
                                 f"{r['catastrophic_unflagged_rr']['k']}")
                  for d, r in zip(res["depths_s"], rows) if r["n"]}
    return out


def _fitter() -> str:
    """What the redshift step fits with (named in the figure: the curve belongs to it)."""
    import desinight.steps.redshift as R
    if getattr(R, "rrfit", None) is not None:
        return "redrock with DESI templates (steps/rrfit.py)"
    return "unknown (steps/redshift.py does not use steps/rrfit.py)"


if __name__ == "__main__":
    main()
