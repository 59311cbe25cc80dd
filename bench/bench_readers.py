"""Cost of reading untrusted input in reader processes instead of in the daemon.

    python bench/bench_readers.py [-n 40] [--records 1000]

Prints: a reader's start-up (Python + numpy + fitsio, paid once per worker); per exposure,
inspecting in-process vs through the pool (2 warm workers); one poll's exit records (one
request carrying every attempt directory) vs parsing them in-process. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desinight import rawdata, readers  # noqa: E402
from desinight.batch.exitfile import parse_exit_file  # noqa: E402
from tests.rawfixture import write_exposure  # noqa: E402

NIGHT = 20261124


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=40, help="exposures")
    ap.add_argument("--records", type=int, default=1000, help="exit records in one poll")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dn-bench-readers-"))
    dirs = [write_exposure(root, NIGHT, i, "ZERO", expid=26112400 + i) for i in range(a.n)]
    starts = []
    for _ in range(3):
        p = readers.ReaderPool(workers=1)
        t = time.perf_counter()
        p.run([{"op": "exits", "dirs": []}])
        starts.append(time.perf_counter() - t)
        p.close()
    start = statistics.median(starts)
    print(f"reader start-up (python + numpy + fitsio): {start * 1000:.0f} ms (median of 3)")

    rawdata.inspect_exposure(dirs[0], raw_root=root)     # fitsio imported here too
    t = time.perf_counter()
    for d in dirs:
        rawdata.inspect_exposure(d, raw_root=root)
    inproc = (time.perf_counter() - t) / a.n
    pool = readers.ReaderPool(workers=2)
    pool.run([{"op": "exits", "dirs": []}] * 2)         # warm both workers
    t = time.perf_counter()
    pool.run([{"op": "inspect", "expdir": str(d), "raw_root": str(root)} for d in dirs])
    pooled = (time.perf_counter() - t) / a.n
    print(f"inspect one exposure (3 cameras): in-process {inproc * 1000:.1f} ms, "
          f"reader pool {pooled * 1000:.1f} ms")

    adirs = []
    for i in range(a.records):
        d = root / "run" / f"a{i}"
        d.mkdir(parents=True)
        (d / "exit.json").write_text(json.dumps({"status": "completed", "exit_code": 0, "tag": f"t:{i}",
                                                 "backend_id": str(i), "start": "", "end": "", "host": "h"}))
        adirs.append(str(d))
    t = time.perf_counter()
    for d in adirs:
        parse_exit_file(Path(d))
    rec_in = time.perf_counter() - t
    t = time.perf_counter()
    pool.run([{"op": "exits", "dirs": adirs}])
    rec_pool = time.perf_counter() - t
    pool.close()
    print(f"{a.records} exit records in one poll: in-process {rec_in * 1000:.1f} ms, "
          f"one reader request {rec_pool * 1000:.1f} ms")
    print(json.dumps({"reader_start_ms": round(start * 1000), "inspect_inprocess_ms": round(inproc * 1000, 1),
                      "inspect_pool_ms": round(pooled * 1000, 1), "records": a.records,
                      "records_inprocess_ms": round(rec_in * 1000, 1),
                      "records_pool_ms": round(rec_pool * 1000, 1)}))


if __name__ == "__main__":
    main()
