"""Poll cost on the local SLURM cluster: submit N jobs, count sacct/squeue calls and time polls.

    bash scripts/local-slurm up && eval "$(bash scripts/local-slurm env)"
    python bench/bench_poll.py [-n 200] [--interval 1.0] [--held]

Default: N trivial jobs; prints sbatch time, then per poll its wall time, the sacct/squeue calls
it cost and the state counts, until all ended; then the cost of polling N ended jobs (median of 5).
--held: N jobs submitted held (``sbatch --hold``, never run): the cost of polling a full queue of
pending jobs (sacct + squeue for pending reasons), median of 5; then they are scancelled.
Figures are recorded in docs/slurm.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from desinight.batch.base import Resources, SubmitRequest
from desinight.batch.slurm import SlurmBackend
from desinight.core import slurm as S
from desinight.core.states import ACTIVE


def submit_all(backend: SlurmBackend, n: int, held: bool) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="dn-bench-"))
    tag = f"dnbench:{int(time.time())}"
    ids = []
    t0 = time.perf_counter()
    for i in range(n):
        adir = root / f"j{i}"
        adir.mkdir()
        (adir / "job.sh").write_text("#!/bin/bash\ntrue\n")
        req = SubmitRequest(name=f"dn-bench-{i}", tag=tag, comment=f"{tag}:{i}:1",
                            script=adir / "job.sh", attempt_dir=adir, log=adir / "job.log",
                            resources=Resources(time_minutes=2))
        if held:   # SubmitRequest has no hold flag (the daemon never holds): add it to the argv
            argv = S.sbatch_argv(req)
            ids.append(S.parse_sbatch(backend._run(argv[:1] + ["--hold"] + argv[1:])))
        else:
            ids.append(backend.submit(req))
    t = time.perf_counter() - t0
    print(f"submitted {n} {'held ' if held else ''}jobs in {t:.2f} s ({1000 * t / n:.1f} ms each)")
    return ids


def timed_polls(backend: SlurmBackend, ids: list[str], times: int = 5) -> tuple[float, int, int]:
    """Median wall time of ``times`` polls and the sacct/squeue calls of one poll."""
    walls = []
    for _ in range(times):
        before = dict(backend.calls)
        t = time.perf_counter()
        backend.poll(ids)
        walls.append(time.perf_counter() - t)
    return (statistics.median(walls), backend.calls["sacct"] - before["sacct"],
            backend.calls["squeue"] - before["squeue"])


def run_trivial(backend: SlurmBackend, ids: list[str], interval: float) -> None:
    start = time.perf_counter()
    n = 0
    while True:
        before = dict(backend.calls)
        t = time.perf_counter()
        got = backend.poll(ids)
        wall = time.perf_counter() - t
        n += 1
        states = Counter(str(j.state) for j in got.values())
        print(f"poll {n:3d}: {wall * 1000:6.1f} ms  sacct {backend.calls['sacct'] - before['sacct']}"
              f"  squeue {backend.calls['squeue'] - before['squeue']}  {dict(states)}")
        if len(got) == len(ids) and all(j.state not in ACTIVE for j in got.values()):
            break
        time.sleep(interval)
    print(f"all {len(ids)} ended {time.perf_counter() - start:.1f} s after the last sbatch, {n} polls")
    wall, sacct, squeue = timed_polls(backend, ids)
    assert sacct == 1 and squeue == 0
    print(f"poll of {len(ids)} ended jobs: median {wall * 1000:.1f} ms, {sacct} sacct call, {squeue} squeue")


def run_held(backend: SlurmBackend, ids: list[str]) -> None:
    try:
        time.sleep(1.5)   # let sacct catch up with the submissions (it lags ~1 s)
        wall, sacct, squeue = timed_polls(backend, ids)
        states = Counter(str(j.state) for j in backend.poll(ids).values())
        print(f"poll of {len(ids)} held jobs: median {wall * 1000:.1f} ms, {sacct} sacct + "
              f"{squeue} squeue call(s) per poll, {dict(states)}")
    finally:
        backend.cancel(ids)
        print(f"scancelled {len(ids)} held jobs ({backend.calls['scancel']} scancel call(s))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="jobs to submit (default 200)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    ap.add_argument("--held", action="store_true", help="submit held jobs: cost of a pending queue")
    args = ap.parse_args()
    backend = SlurmBackend()
    ids = submit_all(backend, args.n, args.held)
    if args.held:
        run_held(backend, ids)
    else:
        run_trivial(backend, ids, args.interval)


if __name__ == "__main__":
    main()
