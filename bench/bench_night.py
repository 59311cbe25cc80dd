"""A whole night through the daemon on SLURM, MPI jobs through srun, at a chosen scale.

The simulator writes a night (calibrations + TILES x PER_TILE science exposures, every kind of
job) into a staging directory; then all its exposure directories are renamed into the raw
root at t0 and the daemon (production poll cadence) takes it from there: ingest, plan, sbatch
with afterok chains, `srun --mpi=pmi2` for the MPI kinds (arc, flat, science: ranks over
cameras, then over bundles with a gather to each camera's rank 0). The bench runs whatever the
steps are: a slower redshift step shows up in its own line.

Reported: wall time from t0 to the last redshift job's end (sacct), and to the daemon knowing
the night is done; seconds per kind (sacct Elapsed: mean, max, jobs); the daemon's CPU (wait4
rusage, its reader processes and SLURM commands included); the database size; peak memory per
job (sacct MaxRSS, largest step) per kind. Then the MPI speed-up through the job runner: one
science job's own rendered script sbatched again with 1 rank and with RANKS ranks (outputs
written again, identical), wall time of each `sbatch --wait`, gather included.

Scale knob: --preset (small, medium, full: fibres, bundles, CCD rows), --spectrographs (1-10,
cameras = 3 per spectrograph), --tiles and --per-tile (science exposures). This 2-core machine
holds the small preset at 1-2 spectrographs in minutes; full x 10 is DESI's size.

    python bench/bench_night.py [--preset small] [--spectrographs 1] [--tiles 4] [--per-tile 3]
                                [--ranks 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_overhead import slurm_env  # noqa: E402
from tests.daemonkit import cli, status_json, wait_for  # noqa: E402

NIGHT = 20261201
#: kinds whose work spreads over MPI ranks (cameras, then bundles)
MPI_KINDS = ("arc", "flat", "science")
FINAL = {"completed", "failed", "dep_failed", "timeout", "out_of_memory", "cancelled", "node_fail", "unknown"}


def simulate(stage: Path, preset: str, nspec: int, tiles: int, per_tile: int) -> tuple[list[Path], float]:
    """The night written into ``stage``, with the preset scaled (in this process only)."""
    from desinight import desimodel
    from desinight.sim import instrument as I
    from desinight.sim import simulate_night
    base = desimodel.PRESETS[preset]
    scaled = dataclasses.replace(base, nspec=nspec, ntiles=tiles, nscience=per_tile)
    for table in {id(desimodel.PRESETS): desimodel.PRESETS, id(I.PRESETS): I.PRESETS}.values():
        table[preset] = scaled          # same name: the steps know the preset by its CCD shape
    t0 = time.perf_counter()
    dirs = simulate_night(NIGHT, stage, preset=preset, seed=11)
    return dirs, time.perf_counter() - t0


def write_config(root: Path, ranks: int) -> Path:
    conf = root / "desinight.toml"
    kinds = "".join(f"[kinds.{k}]\nntasks = {ranks}\ntime_minutes = 60\n" for k in MPI_KINDS)
    conf.write_text('[desinight]\nproduction = "night"\nraw_root = "raw"\nredux_root = "redux"\n'
                    'state_dir = "state"\nbackend = "slurm"\n'
                    '[slurm]\nmpi_launcher = "srun --mpi=pmi2"\n' + kinds)
    return conf


def sacct_rows(ids: list[str]) -> dict[str, dict]:
    """{job id: {elapsed_s, end, maxrss_mb}} with MaxRSS the largest of the job's steps."""
    from datetime import datetime
    out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(ids), "-o", "JobID,ElapsedRaw,End,MaxRSS"],
                         capture_output=True, text=True, check=True).stdout
    rows: dict[str, dict] = {}
    for line in out.splitlines():
        jid, elapsed, end, rss = line.split("|")
        main = jid.split(".")[0]
        r = rows.setdefault(main, {"elapsed_s": 0, "end": None, "maxrss_mb": 0.0})
        if "." not in jid:
            r["elapsed_s"] = int(elapsed or 0)
            r["end"] = datetime.fromisoformat(end).timestamp() if end[:1].isdigit() else None
        r["maxrss_mb"] = max(r["maxrss_mb"], _mb(rss))
    return rows


def _mb(rss: str) -> float:
    if not rss:
        return 0.0
    unit = rss[-1].upper()
    scale = {"K": 1 / 1024, "M": 1, "G": 1024}.get(unit)
    return round(float(rss[:-1]) * scale if scale else float(rss) / 2**20, 1)


def mpi_speedup(script: Path, ranks: int, env: dict) -> dict:
    """The same science job's script, sbatched with 1 rank and with ``ranks``: wall each."""
    out = {}
    for n in (1, ranks):
        t0 = time.perf_counter()
        subprocess.run(["sbatch", "--wait", "--parsable", f"--ntasks={n}", "--job-name=dn-mpi-bench",
                        "-o", "/dev/null", str(script)], check=True, env=env, capture_output=True)
        out[f"wall_s_{n}_rank{'s' if n > 1 else ''}"] = round(time.perf_counter() - t0, 1)
    out["speedup"] = round(out["wall_s_1_rank"] / out[f"wall_s_{ranks}_ranks"], 2)
    return out


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", choices=("small", "medium", "full"))
    ap.add_argument("--spectrographs", type=int, default=1)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--per-tile", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=3, help="MPI ranks of the arc/flat/science jobs")
    ap.add_argument("--keep", help="work in this directory and keep it")
    args = ap.parse_args(argv)
    env = slurm_env()
    root = Path(args.keep or tempfile.mkdtemp(prefix="dn-bench-night-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, root, env)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run(args, root: Path, env: dict) -> dict:
    dirs, sim_s = simulate(root / "stage", args.preset, args.spectrographs, args.tiles, args.per_tile)
    print(f"simulated {len(dirs)} exposures ({args.preset}, {args.spectrographs} spectrographs, "
          f"{args.tiles} tiles x {args.per_tile}) in {sim_s:.0f} s", flush=True)
    conf = write_config(root, args.ranks)
    cli(conf, "init")
    (root / "raw" / str(NIGHT)).mkdir(parents=True, exist_ok=True)
    with open(root / "daemon.out", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: status_json(conf)["health"]["states_as_of"], 120, what="the daemon's first poll")
        t0, t0_wall = time.monotonic(), time.time()
        for d in dirs:    # the whole night at once: a rename is atomic, the request file inside
            os.rename(d, root / "raw" / str(NIGHT) / d.name)
        data = wait_for(lambda: _done(conf, len(dirs)), 6 * 3600, interval=2, what="the night to end")
        known_s = time.monotonic() - t0
    finally:
        proc.terminate()
        _, status, ru = os.wait4(proc.pid, 0)
    jobs = data["jobs"]
    ids = [j["backend_id"] for j in jobs if j.get("backend_id")]
    acct = sacct_rows(ids)
    per_kind: dict[str, list] = defaultdict(list)
    for j in jobs:
        a = acct.get(j.get("backend_id") or "", {})
        per_kind[j["kind"]].append((a.get("elapsed_s", 0), a.get("maxrss_mb", 0.0), j["state"]))
    redshift_end = max((acct[j["backend_id"]]["end"] or 0) for j in jobs
                       if j["kind"] == "redshift" and j.get("backend_id") in acct) if any(
        j["kind"] == "redshift" for j in jobs) else None
    kinds = {k: {"jobs": len(v), "mean_s": round(sum(e for e, _, _ in v) / len(v), 1),
                 "max_s": max(e for e, _, _ in v), "max_rss_mb": max(r for _, r, _ in v),
                 "not_completed": sum(st != "completed" for _, _, st in v)}
             for k, v in per_kind.items()}
    res = {"preset": args.preset, "spectrographs": args.spectrographs, "cameras": 3 * args.spectrographs,
           "exposures": len(dirs), "science_exposures": args.tiles * args.per_tile, "ranks": args.ranks,
           "jobs": len(jobs), "completed": sum(j["state"] == "completed" for j in jobs),
           "wall_to_last_redshift_s": round(redshift_end - t0_wall, 1) if redshift_end else None,
           "wall_to_daemon_done_s": round(known_s, 1),
           "daemon_cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
           "db_mib": round((root / "state" / "desinight.db").stat().st_size / 2**20, 2),
           "per_kind": kinds, "sim_s": round(sim_s)}
    for k, v in kinds.items():
        print(f"  {k:15s} {v['jobs']:3d} jobs  mean {v['mean_s']:6.1f} s  max {v['max_s']:5d} s  "
              f"MaxRSS {v['max_rss_mb']:7.1f} MB" + (f"  ({v['not_completed']} not completed)"
                                                     if v["not_completed"] else ""), flush=True)
    print(f"{res['jobs']} jobs ({res['completed']} completed): last redshift {res['wall_to_last_redshift_s']} s "
          f"after t0, daemon knew {res['wall_to_daemon_done_s']} s; daemon CPU {res['daemon_cpu_s']} s; "
          f"database {res['db_mib']} MiB", flush=True)
    sci = next((j for j in jobs if j["kind"] == "science" and j["state"] == "completed"), None)
    if sci is not None and args.ranks > 1:
        script = Path(sci["log"]).parent / "job.sh"
        res["mpi"] = mpi_speedup(script, args.ranks, env)
        print(f"MPI through the job runner (one science job, {3 * args.spectrographs} cameras, gather "
              f"included): {res['mpi']}", flush=True)
    print(json.dumps({"night": res}))
    return res


def _done(conf: Path, n_exposures: int) -> dict | None:
    """The night's status once every exposure is in and every job final, else None."""
    data = status_json(conf, NIGHT)
    states = {j["state"] for j in data["jobs"]}
    return data if (data["jobs"] and states <= FINAL
                    and len(data.get("exposures") or []) == n_exposures) else None


if __name__ == "__main__":
    main(sys.argv[1:])
