"""Step speed on a full-size camera (500 fibres, 4096 rows): preproc, extraction, sky; and the
extraction speed-up from 1 to 2 MPI ranks (bundles dealt over ranks).

    python bench/bench_steps.py [--no-mpi] [--redshift SEED ...]

`--redshift 1 2 5` instead runs the whole small-night chain for those seeds and prints the
accuracy figures and redrock's seconds per spectrograph (`--preset medium` first for the medium
night: 2 spectrographs of 200 fibres). `--redrock-only PRESET [N]` times redrock alone on one
spectrograph's worth of synthetic spectra on that preset's camera grids. `--full-chain [CAMERAS]` (default a0)
runs every job kind on full-size cameras (one science exposure) and prints seconds per job and per
camera, then the redshift score.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

CAM = "r0"
#: one BLAS thread per rank, as in production: otherwise a single rank already uses every core
#: through OpenBLAS and the 1 -> 2 rank comparison measures nothing
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def prepare(tmp: Path) -> tuple[Path, Path]:
    """A rendered full-size science camera, its preproc, and a PSF from the instrument truth."""
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    from desinight.sim import targets as TG
    from desinight.steps import preproc, psf

    p = I.PRESETS["full"]
    e = [x for x in N.schedule(p, 20261124, 0) if x.obstype == "SCIENCE"][0]
    e.cameras = [CAM]
    N.TILES[e.tileid] = TG.make_tile(p, e.tileid, np.random.default_rng([0, e.tileid, 5]))
    t0 = time.perf_counter()
    _, img = N.render_camera((p, CAM, e, 0))
    raw = tmp / "desi.fits.fz"
    N.write_raw(raw, p, e, {CAM: img})
    print(f"render+write one full camera: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    pre = preproc.preproc_camera(raw, CAM, None, tmp / "preproc.fits")
    print(f"preproc: {time.perf_counter() - t0:.1f} s/camera")
    y = np.arange(p.ny)
    x = I.true_trace(p, CAM, y)
    sig = I.psf_sigma_x(p, x[:, p.ny // 2])
    psf_file = psf.write_psf(tmp / "psf.fits", x, I.true_wave(p, CAM, y), sig, [])
    return pre, psf_file


def mpi_worker(pre: str, psf_file: str) -> None:
    from mpi4py import MPI

    from desinight.steps import extract
    comm = MPI.COMM_WORLD
    nb = 20
    comm.Barrier()
    t0 = time.perf_counter()
    extract.extract_camera(Path(pre), Path(psf_file), CAM,
                           Path(pre).with_name(f"frame-rank{comm.rank}.fits"),
                           bundles=list(range(comm.rank, nb, comm.size)))
    comm.Barrier()
    if comm.rank == 0:
        print(f"{time.perf_counter() - t0:.2f}")


def _count_fits(redshift) -> dict:
    """Wrap the redshift step's redrock call (rrfit.fit: template loading and rebinning, the
    chi^2 scan over every template and redshift, the refinement) to sum its seconds, calls (one
    per spectrograph) and spectra."""
    tally = {"s": 0.0, "n": 0, "calls": 0}
    inner = redshift.rrfit.fit

    def fit(tids, cams, *a, **k):
        t0 = time.perf_counter()
        out = inner(tids, cams, *a, **k)
        tally["s"] += time.perf_counter() - t0
        tally["n"] += len(tids)
        tally["calls"] += 1
        return out
    # only the redshift step's module sees the timed fit (the stdstars' stellar fit is not it)
    redshift.rrfit = types.SimpleNamespace(fit=fit)
    return tally


def redshift_seeds(seeds: list[int], preset: str = "small") -> None:
    from desinight.desimodel import PRESETS
    from desinight.sim import simulate_night
    from desinight.sim.score import format_score, score_production
    from desinight.steps import redshift
    from desinight.steps.chain import run_night
    tally = _count_fits(redshift)
    cams = PRESETS[preset].cameras()
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmpd:
            tmp = Path(tmpd)
            os.environ.update(DESI_SPECTRO_DATA=str(tmp / "raw"),
                              DESI_SPECTRO_REDUX=str(tmp / "redux"), SPECPROD="bench")
            simulate_night(20261124, tmp / "raw", preset=preset, seed=seed)
            t0 = time.perf_counter()
            fails = run_night(20261124, cams)
            dt = time.perf_counter() - t0
            res = score_production(tmp / "raw" / "truth" / "truth-20261124.fits",
                                   tmp / "redux" / "bench")
            print(f"seed {seed}: chain {dt:.1f} s, failed jobs {sum(fails.values())}; "
                  + format_score(res)[-1], flush=True)
    if tally["n"]:
        print(f"redrock ({preset}): {tally['calls']} spectrograph fits, {tally['n']} spectra in "
              f"{tally['s']:.1f} s = {tally['s'] / tally['calls']:.1f} s per spectrograph, "
              f"{tally['s'] / tally['n']:.2f} s per spectrum (one core; DESI's 10 templates)")


def redrock_only(preset: str, ntarg: int | None) -> None:
    """redrock alone on one spectrograph's worth of targets on the preset's camera grids
    (analytic emission-line galaxies, LSF 1 row): wall and CPU seconds of one rrfit.fit call.
    ntarg defaults to the spectrograph's non-sky fibres (80% of them)."""
    from desinight import desimodel as I
    from desinight.steps import rrfit

    p = I.PRESETS[preset]
    n = ntarg or int(round(0.8 * p.nfiber))
    rng = np.random.default_rng(0)
    zs = rng.uniform(0.6, 1.5, n)
    cams = {}
    for arm in "brz":
        w = I.camera_wave_grid(p, arm)
        f = np.full((n, w.size), 0.5) + rng.normal(0, 0.2, (n, w.size))
        for k, z in enumerate(zs):
            for lam, amp in ((3726.03, 8.0), (3728.82, 10.0), (4861.3, 4.0), (5006.8, 10.0)):
                f[k] += amp * np.exp(-0.5 * ((w - lam * (1 + z)) / 2.0) ** 2)
        step = np.gradient(w)
        cams[arm] = (w, f, np.full(f.shape, 25.0), np.broadcast_to(step, f.shape))
    rrfit.fit([1], {a: (w, f[:1], i[:1], s[:1]) for a, (w, f, i, s) in cams.items()})  # numba cache
    t0, c0 = time.perf_counter(), time.process_time()
    out = rrfit.fit(list(range(n)), cams)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    good = np.mean(np.abs(out["Z"] - zs) / (1 + zs) < 0.0033)
    print(f"redrock only ({preset}, {n} spectra, {sum(c[0].size for c in cams.values())} pixels "
          f"each): {wall:.1f} s wall, {cpu:.1f} s CPU = {cpu / n:.2f} s CPU per spectrum; "
          f"{100 * good:.0f}% right", flush=True)


def full_chain(cams: str) -> None:
    """Every job kind on full-size cameras (4096 rows, 500 fibres): zero, arc, flat and one
    science exposure of spectrograph 0, seconds per job, then the redshift score."""
    import subprocess as sp

    from desinight.core.cameras import parse_cameras
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    from desinight.sim import targets as TG
    from desinight.steps.jobs import run_job

    night = 20261124
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        os.environ.update(DESI_SPECTRO_DATA=str(tmp / "raw"),
                          DESI_SPECTRO_REDUX=str(tmp / "redux"), SPECPROD="bench")
        p = I.PRESETS["full"]
        exps = N.schedule(p, night, 0)
        keep = [next(e for e in exps if e.obstype == t) for t in ("ZERO", "ARC", "FLAT")]
        sci = next(e for e in exps if e.obstype == "SCIENCE")
        sci.seqnum = sci.seqtot = 1
        keep.append(sci)
        N.TILES[sci.tileid] = TG.make_tile(p, sci.tileid, np.random.default_rng([0, sci.tileid, 5]))
        cl = parse_cameras(cams)
        t0 = time.perf_counter()
        for e in keep:
            e.cameras = cl
            imgs = dict(N.render_camera((p, c, e, 0)) for c in cl)
            N.write_exposure(tmp / "raw", p, e, imgs, N.TILES.get(e.tileid), keep[0].expid)
        print(f"simulate {len(keep)} exposures x {len(cl)} camera(s): "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        z, a, f, s = (e.expid for e in keep)
        for kind, ex, tile in [("biasnight", [z], None), ("arc", [a], None),
                               ("psfnight", [a], None), ("flat", [f], None),
                               ("fiberflatnight", [f], None), ("science", [s], sci.tileid),
                               ("stdstars", [s], sci.tileid), ("fluxcalib", [s], sci.tileid),
                               ("redshift", [s], sci.tileid)]:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(_io.StringIO()):
                rc = run_job(kind, night, ex, tile, cams)
            dt = time.perf_counter() - t0
            print(f"{kind:15s} rc={rc} {dt:6.1f} s ({dt / len(cl):.1f} s per camera)", flush=True)
        N.write_truth(tmp / "truth.fits", N.TILES, night)
        out = sp.run([sys.executable, "-m", "desinight", "sim", "score", "--truth",
                      str(tmp / "truth.fits"), "--redux", str(tmp / "redux" / "bench")],
                     capture_output=True, text=True)
        print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr)


def main() -> None:
    if sys.argv[1:2] == ["--full-chain"]:
        return full_chain(sys.argv[2] if len(sys.argv) > 2 else "a0")
    if sys.argv[1:2] == ["--redrock-only"]:
        return redrock_only(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
    if sys.argv[1:2] == ["--redshift"]:
        args = sys.argv[2:]
        preset = "small"
        if args[:1] == ["--preset"]:
            preset, args = args[1], args[2:]
        return redshift_seeds([int(s) for s in args] or [1, 2, 5], preset)
    if sys.argv[1:2] == ["--mpi-worker"]:
        return mpi_worker(sys.argv[2], sys.argv[3])
    from desinight.steps import extract
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        pre, psf_file = prepare(tmp)
        t0 = time.perf_counter()
        extract.extract_camera(pre, psf_file, CAM, tmp / "frame.fits")
        print(f"extract (500 fibres, 4096 rows, one core): {time.perf_counter() - t0:.1f} s/camera")
        if "--no-mpi" in sys.argv:
            return
        times = {}
        for n in (1, 2):
            out = subprocess.run(["mpiexec", "-n", str(n), sys.executable, __file__,
                                  "--mpi-worker", str(pre), str(psf_file)],
                                 capture_output=True, text=True, env=ONE_THREAD)
            times[n] = float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
            print(f"extract with {n} MPI rank(s): {times[n]} s")
        if times[1] and times[2]:
            print(f"speed-up 1 -> 2 ranks: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
