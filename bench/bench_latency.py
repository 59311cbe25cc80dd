"""Arrival-to-submission latency of the daemon: file complete -> its first job submitted.

Runs the real daemon (local backend, trivial job scripts) twice, with native (inotify) and
polling discovery, writes ARC exposures one by one, and reads the submission time of each
arc job from the database. Prints median, p95 and max per mode, and the targets (issue 18):
native median under 0.5 s; polling at most the poll interval (``daemon.watch_poll_s``,
default 1 s) + 0.5 s.

    python bench/bench_latency.py [--exposures 12] [--gap 1.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from desinight.core import defaults as D  # noqa: E402
from tests.daemonkit import cli, fast_templates, start_daemon, stop_daemon, wait_for, write_config  # noqa: E402
from tests.rawfixture import N, write_exposure  # noqa: E402


def run_mode(mode: str, n: int, gap: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        conf = write_config(root, templates=fast_templates(root / "tpl", run="true"),
                            extra=f'watch = "{mode}"')
        cli(conf, "init")
        proc = start_daemon(conf, root / "daemon.out")
        log = root / "state" / "daemon-test.log"
        # measured from a running daemon: its start-up (imports, first scan) is not reaction
        wait_for(lambda: log.exists() and "event=daemon_started" in log.read_text(), 60,
                 interval=0.1, what="the daemon started")
        arrived: dict[int, float] = {}
        try:
            write_exposure(root / "raw", N, 0, "ZERO")
            for i in range(1, n + 1):
                d = write_exposure(root / "raw", N, i, "ARC", seqnum=i, seqtot=n + 1)
                arrived[int(d.name)] = time.time()     # request file written: complete
                time.sleep(gap)
            engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")

            def submitted():
                with engine.connect() as c:
                    rows = c.execute(text(
                        "select j.key, a.submitted_at from attempt a join job j on j.id = a.job_id "
                        "where j.kind = 'arc' and a.submitted_at is not null")).all()
                return rows if len(rows) == n else None
            rows = wait_for(submitted, 60, what="all arc jobs submitted")
        finally:
            stop_daemon(proc)
    lat = []
    for key, ts in rows:
        t = datetime.fromisoformat(str(ts))
        t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        lat.append(t.timestamp() - arrived[int(key.rsplit("/", 1)[1])])
    return sorted(lat)


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--exposures", type=int, default=12)
    ap.add_argument("--gap", type=float, default=1.5)
    args = ap.parse_args(argv)
    out = {}
    for mode in ("native", "polling"):
        lat = run_mode(mode, args.exposures, args.gap)
        out[mode] = {"median_s": round(statistics.median(lat), 3), "p95_s": round(p95(lat), 3),
                     "max_s": round(max(lat), 3), "n": len(lat)}
        if mode == "native":
            target, met = "median < 0.5 s", out[mode]["median_s"] < 0.5
        else:
            bound = D.POLL_OBSERVER_S + 0.5
            target, met = f"max <= poll interval + 0.5 s = {bound:.1f} s", out[mode]["max_s"] <= bound
        out[mode]["target_met"] = met
        print(f"arrival->submission latency, {mode:7s}: median {out[mode]['median_s']:.2f} s, "
              f"p95 {out[mode]['p95_s']:.2f} s, max {out[mode]['max_s']:.2f} s (n={len(lat)}); "
              f"target {target}: {'met' if met else 'NOT met'}")
    print(json.dumps({"latency": out}))
    return out


if __name__ == "__main__":
    main()
