"""Standby takeover time: the active daemon SIGKILLed -> the standby holds the lock.

Two real daemons on one PostgreSQL database with separate state dirs (as on two nodes, local
backend); the active one is killed, and the time until the standby logs `standby_took_over`
is measured (the standby tries the lock every STANDBY_RETRY_S). Needs PostgreSQL:
$DESINIGHT_TEST_PG_URL, else `scripts/local-postgres url`.

    python bench/bench_takeover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.daemonkit import stop_daemon, wait_for  # noqa: E402
from tests.test_standby import daemon, logged, two_hosts  # noqa: E402


def pg_base() -> str:
    url = os.environ.get("DESINIGHT_TEST_PG_URL")
    if url:
        return url
    return subprocess.run(["bash", str(ROOT / "scripts" / "local-postgres"), "url"],
                          capture_output=True, text=True, check=True).stdout.strip()


def one_round(base: str) -> float:
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    name = f"dn_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = make_url(base).set(database=name).render_as_string(hide_password=False)
            a, b, prod = two_hosts(Path(tmp), url, "local", "true")
            pa = daemon(a)
            wait_for(lambda: logged(a, prod, "daemon_started"), 30, interval=0.05, what="a")
            pb = daemon(b, "--standby")
            try:
                wait_for(lambda: logged(b, prod, "standby_waiting"), 30, interval=0.05, what="b")
                t0 = time.monotonic()
                pa.send_signal(signal.SIGKILL)
                wait_for(lambda: logged(b, prod, "standby_took_over"), 30, interval=0.01, what="takeover")
                took = time.monotonic() - t0
            finally:
                pa.kill()
                pa.wait()
                stop_daemon(pb)
            return took
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    base = pg_base()
    times = [one_round(base) for _ in range(args.rounds)]
    out = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
           "n": len(times)}
    print(f"standby takeover after SIGKILL of the active daemon: median {out['median_s']:.2f} s, "
          f"max {out['max_s']:.2f} s (n={out['n']}, PostgreSQL advisory lock, retry every 1 s)")
    print(json.dumps({"takeover": out}))
    return out


if __name__ == "__main__":
    main()
