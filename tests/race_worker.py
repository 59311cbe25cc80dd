"""One side of the PostgreSQL race test (tests/test_race_pg.py), run as its own process:

    python -m tests.race_worker daemon|operator DB_URL ROOT ROUNDS SEED

``daemon``: each round moves some backend jobs on (pending -> running -> completed/failed),
then polls, reconciles and submits, as the daemon's ticks do. ``operator``: each round cancels
or resubmits a random job of the night, as `desinight cancel`/`resubmit` do. Both go through
the real orchestrate/retry code; the backend is a directory of one file per job, shared by
the two processes (what a batch system is to them). Prints a JSON line of counts at the end.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from desinight.batch.base import BackendJob, Capabilities, SubmitRequest
from desinight.core.errors import DesinightError
from desinight.core.states import JobState


class DirBackend:
    """A batch system whose state is one file per job under ``root`` (atomic replace)."""

    name = "dir"
    poll_warning = None
    capabilities = Capabilities(can_lag=True)

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _write(self, bid: str, state: str, comment: str = "") -> None:
        tmp = self.root / f".{bid}.{os.getpid()}"
        tmp.write_text(json.dumps({"state": state, "comment": comment}))
        tmp.replace(self.root / bid)

    def _read(self, bid: str) -> dict | None:
        try:
            return json.loads((self.root / bid).read_text())
        except (OSError, ValueError):
            return None

    def submit(self, req: SubmitRequest) -> str:
        bid = f"{os.getpid()}-{len(list(self.root.iterdir()))}-{random.randrange(10**9)}"
        self._write(bid, JobState.PENDING.value, req.comment)
        return bid

    def poll(self, ids):
        out = {}
        for i in ids:
            rec = self._read(i)
            if rec is not None:
                out[i] = BackendJob(i, JobState(rec["state"]), exit_code=0 if rec["state"] == "completed"
                                    else (1 if rec["state"] == "failed" else None))
        return out

    def cancel(self, ids) -> None:
        for i in ids:
            rec = self._read(i)
            if rec and rec["state"] in ("pending", "running"):
                self._write(i, JobState.CANCELLED.value, rec["comment"])

    def find(self, tag):
        out = {}
        for p in self.root.iterdir():
            rec = self._read(p.name) if not p.name.startswith(".") else None
            if rec and rec["comment"].startswith(tag):
                out[rec["comment"]] = p.name
        return out

    def advance(self, rng: random.Random) -> None:
        """Move some live jobs on, as a cluster running them would."""
        for p in list(self.root.iterdir()):
            if p.name.startswith(".") or rng.random() < 0.5:
                continue
            rec = self._read(p.name)
            if rec is None:
                continue
            nxt = {"pending": "running",
                   "running": "completed" if rng.random() < 0.8 else "failed"}.get(rec["state"])
            if nxt:
                self._write(p.name, nxt, rec["comment"])


def _barrier(base: Path, role: str, timeout_s: float = 120.0) -> None:
    """Start the rounds together: without this, on a loaded machine one side can finish its
    rounds while the other is still importing, and nothing races."""
    (base / f"ready-{role}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(base.glob("ready-*"))) < 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"race_worker {role}: the other side never started")
        time.sleep(0.01)


def main(role: str, url: str, root: str, rounds: int, seed: int) -> None:
    from desinight import orchestrate as O
    from desinight.app import open_context
    from desinight.config import Config
    from desinight.db.engine import transaction
    from desinight.db.models import Job
    from desinight.retry import cancel, resubmit
    base = Path(root)
    cfg = Config(production="test", raw_root=base / "raw", redux_root=base / "redux",
                 state_dir=base / "state", db_url=url)
    backend = DirBackend(base / "backend")
    ctx = open_context(cfg, backend=backend)
    rng = random.Random(seed)
    with transaction(ctx.sessions) as s:
        keys = list(s.scalars(select(Job.key).order_by(Job.id)))
    _barrier(base, role)
    counts = {"rounds": 0, "db_conflicts": 0, "refused": 0, "cancelled": 0, "resubmitted": 0}
    for _ in range(rounds):
        counts["rounds"] += 1
        try:
            if role == "daemon":
                backend.advance(rng)
                now = O.utc_now()
                O.poll(ctx, now)
                O.reconcile(ctx, now)
                O.submit_ready(ctx, now)
            elif rng.random() < 0.5:
                counts["cancelled"] += len(cancel(ctx, job=rng.choice(keys)))
            else:
                res = resubmit(ctx, job=rng.choice(keys), max_attempts=10_000)
                counts["resubmitted"] += len(res.replanned)
                counts["refused"] += len(res.refused)
                O.submit_ready(ctx, O.utc_now())
        except DesinightError:
            counts["refused"] += 1     # nothing to resubmit in that selection: the CLI says so
        except DBAPIError:
            counts["db_conflicts"] += 1   # a deadlock victim rolls back whole: nothing half-done
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
