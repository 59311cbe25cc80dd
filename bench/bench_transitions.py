"""What the one door costs: ``transitions.transition`` moving N jobs at once (compare-and-set
UPDATE per chunk + one event row each), as the campaign path does when a failure settles a
whole subtree as dep_failed, and one job at a time, as a poll does.

    python bench/bench_transitions.py [--jobs 79000] [--single 2000] [--db sqlite|URL]

Prints moves per second for both; no targets asserted (figures, not tests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select  # noqa: E402

from desinight.core.states import JobState  # noqa: E402
from desinight.db.engine import make_engine, migrate, session_factory, transaction  # noqa: E402
from desinight.db.models import Job, Production, utcnow  # noqa: E402
from desinight.transitions import move_job, transition  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=79_000)
    ap.add_argument("--single", type=int, default=2_000)
    ap.add_argument("--db", default="sqlite")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-door-")
    url = f"sqlite:///{tmp}/bench.db" if a.db == "sqlite" else a.db
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    now = utcnow()
    with transaction(sessions) as s:
        prod = Production(name="bench", raw_root="/raw", redux_dir="/redux", kind="campaign")
        s.add(prod)
        s.flush()
        rows = [{"production_id": prod.id, "key": f"j/{i}", "kind": "science", "night": 20270101,
                 "cameras": "", "state": "planned", "resources": {}, "created_at": now,
                 "updated_at": now} for i in range(a.jobs + a.single)]
        for i in range(0, len(rows), 20_000):
            s.execute(insert(Job), rows[i:i + 20_000])
    with transaction(sessions) as s:
        ids = list(s.scalars(select(Job.id).order_by(Job.id)))
    bulk_ids, single_ids = ids[:a.jobs], ids[a.jobs:]
    t0 = time.perf_counter()
    with transaction(sessions) as s:
        out = transition(s, bulk_ids, JobState.DEP_FAILED, "upstream j/0 failed", "campaign:bench",
                         expect=[JobState.PLANNED], set_reason=True)
    bulk_s = time.perf_counter() - t0
    assert len(out.moved) == a.jobs
    t0 = time.perf_counter()
    for jid in single_ids:
        with transaction(sessions) as s:
            move_job(s, s.get(Job, jid), JobState.SUBMITTED, "submission intent", "daemon")
    single_s = time.perf_counter() - t0
    print(f"transitions ({'sqlite' if a.db == 'sqlite' else 'postgresql'}): "
          f"{a.jobs} jobs in one call: {bulk_s:.2f} s ({a.jobs / bulk_s:,.0f} moves/s, events included); "
          f"one job per transaction: {a.single / single_s:,.0f} moves/s ({single_s / a.single * 1000:.2f} ms each)")


if __name__ == "__main__":
    main()
