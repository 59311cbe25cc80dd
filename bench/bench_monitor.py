"""What monitoring costs and how fast it tells: heartbeat transaction, `check` probe and
metrics scrape on a production of many jobs, and event -> POST latency to a real local HTTP
receiver through Apprise.

    python bench/bench_monitor.py [--jobs 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desinight import probe  # noqa: E402
from desinight.app import open_context  # noqa: E402
from desinight.config import Config  # noqa: E402
from desinight.core.states import JobState  # noqa: E402
from desinight.db import repo  # noqa: E402
from desinight.db.engine import transaction  # noqa: E402
from desinight.db.models import Attempt, Job  # noqa: E402


class _NoBackend:
    name = "none"
    poll_warning = None


def build(root: Path, n_jobs: int):
    cfg = Config(production="bench", raw_root=root / "raw", redux_root=root / "redux",
                 state_dir=root / "state")
    ctx = open_context(cfg, backend=_NoBackend(), create=True)
    states = [JobState.COMPLETED, JobState.RUNNING, JobState.PENDING, JobState.FAILED]
    now = datetime.now(timezone.utc)
    with transaction(ctx.sessions) as s:
        prod, _ = repo.ensure_production(s, "bench", str(cfg.raw_root), str(cfg.prod_dir))
        for night in range(20261101, 20261101 + max(1, n_jobs // 100)):
            repo.ensure_night(s, prod, night)
        for i in range(n_jobs):
            st = states[i % len(states)]
            job = Job(production_id=prod.id, key=f"j{i}", kind="science",
                      night=20261101 + i // 100, state=st.value)
            s.add(job)
            s.add(Attempt(job=job, number=1, backend="none", backend_id=str(i), comment="c",
                          attempt_dir="/x", script_path="/x", log_path="/x", command="x",
                          state=st.value, submitted_at=now - timedelta(minutes=5)))
    return cfg, ctx


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=5000)
    args = ap.parse_args()
    from desinight.metrics import Metrics
    from desinight.monitor import DaemonMonitor
    from desinight.notify import Notifier
    from prometheus_client import generate_latest
    root = Path(tempfile.mkdtemp(prefix="dn-bench-monitor-"))
    cfg, ctx = build(root, args.jobs)
    mon = DaemonMonitor(ctx, lambda: datetime.now(timezone.utc))
    beat = median_ms(mon._beat, 50)
    th = probe.Thresholds.from_config(cfg)

    def check() -> None:
        with transaction(ctx.sessions) as s:
            probe.run_checks(s, repo.get_production(s, "bench"), cfg, th, datetime.now(timezone.utc))
    chk = median_ms(check, 20)
    m = Metrics(ctx)
    scrape = median_ms(lambda: generate_latest(m.registry), 20)

    from tests.monitorkit import Receiver
    rx = Receiver()
    n = Notifier(Config(notify_urls=(rx.url,), notify_min_interval_s=0.0), "bench")
    n.start()
    lat = []
    for i in range(20):
        t0 = time.perf_counter()
        n.on_event("job_failed", {"job": f"j{i}"})
        rx.wait_for(lambda p, k=i: len(p) > k, 30)
        lat.append(time.perf_counter() - t0)
    n.stop()
    rx.close()
    out = {"jobs": args.jobs, "heartbeat_ms": round(beat, 2), "check_ms": round(chk, 1),
           "scrape_ms": round(scrape, 1), "event_to_post_ms_median": round(statistics.median(lat) * 1000, 1),
           "event_to_post_ms_max": round(max(lat) * 1000, 1)}
    print(f"heartbeat transaction (SQLite, {args.jobs} jobs): median {out['heartbeat_ms']} ms")
    print(f"`check` probe logic, latest night: median {out['check_ms']} ms")
    print(f"metrics scrape ({args.jobs} jobs): median {out['scrape_ms']} ms")
    print(f"event -> POST at a local receiver (Apprise json://): median "
          f"{out['event_to_post_ms_median']} ms, max {out['event_to_post_ms_max']} ms (n=20)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
