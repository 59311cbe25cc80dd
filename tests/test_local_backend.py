"""Local-backend specifics: CPU budget, jobs outliving the submitter, concurrent submitters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime

from desinight.batch.local import LocalBackend
from desinight.core.states import JobState
from tests.test_backend_contract import job, wait


def test_cpu_budget_is_never_exceeded(tmp_path):
    be = LocalBackend(tmp_path / "spool", cpus=2)
    ids = [be.submit(job(tmp_path, f"j{i}", "sleep 1")) for i in range(4)]
    t0 = time.monotonic()
    got = wait(be, ids, timeout=60)
    assert time.monotonic() - t0 >= 2.0
    spans = sorted((got[i].start, got[i].end) for i in ids)
    for t in (s for s, _ in spans):
        running = sum(1 for s, e in spans if s <= t < e)
        assert running <= 2


def test_jobs_outlive_the_submitting_process(tmp_path):
    req = job(tmp_path, "orphan", "sleep 1; echo done")
    code = f"""
import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent.parent)!r})
from pathlib import Path
from desinight.batch.local import LocalBackend
from desinight.batch.base import SubmitRequest, Resources
be = LocalBackend(Path({str(tmp_path / 'spool')!r}))
print(be.submit(SubmitRequest(name='x', tag='t', comment='t:1:1', script=Path({str(req.script)!r}),
      attempt_dir=Path({str(req.attempt_dir)!r}), log=Path({str(req.log)!r}))))
"""
    bid = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    be = LocalBackend(tmp_path / "spool")
    assert wait(be, [bid])[bid].state is JobState.COMPLETED
    assert "done" in req.log.read_text()


def test_concurrent_submitters_get_distinct_ids(tmp_path):
    script = tmp_path / "noop.sh"
    script.write_text("true\n")
    code = f"""
from pathlib import Path
from desinight.batch.local import LocalBackend
from desinight.batch.base import SubmitRequest
be = LocalBackend(Path({str(tmp_path / 'spool')!r}), cpus=2)
ids = [be.submit(SubmitRequest(name='x', tag='t', comment='t', script=Path({str(script)!r}),
       attempt_dir=Path({str(tmp_path)!r}), log=Path({str(tmp_path / 'log')!r}))) for _ in range(5)]
print(' '.join(ids))
"""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    ids = [i for p in procs for i in p.communicate(timeout=60)[0].split()]
    assert len(ids) == 15 and len(set(ids)) == 15


def test_lost_runner_is_reported_failed_not_running_forever(tmp_path):
    be = LocalBackend(tmp_path / "spool")
    bid = be.submit(job(tmp_path, "victim", "sleep 30"))
    wait(be, [bid], states={JobState.RUNNING}, timeout=30)
    st = json.loads((tmp_path / "spool" / "jobs" / bid / "state.json").read_text())
    import os
    import signal
    os.kill(st["runner_pid"], signal.SIGKILL)       # e.g. the node rebooted
    got = wait(be, [bid], timeout=30)[bid]
    assert got.state is JobState.FAILED and "runner lost" in got.reason
    assert isinstance(got.start, datetime)
