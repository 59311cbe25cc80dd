"""Poll cost on the local SLURM cluster: submit N trivial jobs, poll until all end.

    bash scripts/local-slurm up && eval "$(bash scripts/local-slurm env)"
    python bench/bench_poll.py [-n 200] [--interval 1.0]

Prints sbatch time, then per poll: wall time, sacct/squeue calls it cost and the state counts;
finally the cost of polling N ended jobs (median of 5). Figures are recorded in docs/slurm.md.
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
from desinight.core.states import ACTIVE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="jobs to submit (default 200)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    args = ap.parse_args()

    backend = SlurmBackend()
    root = Path(tempfile.mkdtemp(prefix="dn-bench-"))
    tag = f"dnbench:{int(time.time())}"
    ids = []
    t0 = time.perf_counter()
    for i in range(args.n):
        adir = root / f"j{i}"
        adir.mkdir()
        (adir / "job.sh").write_text("#!/bin/bash\ntrue\n")
        ids.append(backend.submit(SubmitRequest(
            name=f"dn-bench-{i}", tag=tag, comment=f"{tag}:{i}:1", script=adir / "job.sh",
            attempt_dir=adir, log=adir / "job.log", resources=Resources(time_minutes=2))))
    t_submit = time.perf_counter() - t0
    print(f"submitted {args.n} jobs in {t_submit:.2f} s ({1000 * t_submit / args.n:.1f} ms each)")

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
        time.sleep(args.interval)
    print(f"all {args.n} ended {time.perf_counter() - start:.1f} s after the last sbatch, {n} polls")

    walls = []
    for _ in range(5):
        before = backend.calls["sacct"]
        t = time.perf_counter()
        backend.poll(ids)
        walls.append(time.perf_counter() - t)
        assert backend.calls["sacct"] - before == 1
    print(f"poll of {args.n} ended jobs: median {statistics.median(walls) * 1000:.1f} ms, "
          f"1 sacct call, {backend.calls['squeue']} squeue calls in total")


if __name__ == "__main__":
    main()
