"""One contract, every backend: local always, real SLURM when the cluster is up (CI)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from desinight.batch.base import Resources, SubmitRequest
from desinight.batch.exitfile import read_exit
from desinight.core.states import JobState

FINAL = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
         JobState.DEP_FAILED, JobState.OUT_OF_MEMORY, JobState.NODE_FAIL}


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def backend(request, tmp_path, monkeypatch):
    if request.param == "local":
        from desinight.batch.local import LocalBackend
        monkeypatch.setenv("DESINIGHT_LOCAL_TIME_SCALE", "0.05")   # 1 minute -> 3 s
        return LocalBackend(tmp_path / "spool", cpus=2)
    try:
        request.getfixturevalue("slurm_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("SLURM fixtures not available")
    from desinight.batch.slurm import SlurmBackend
    return SlurmBackend()


def job(tmp_path: Path, name: str, body: str, deps=(), minutes: int = 5, tag="contract") -> SubmitRequest:
    """A job script that writes the exit record like the rendered ones do."""
    adir = tmp_path / "runs" / name
    adir.mkdir(parents=True, exist_ok=True)
    script = adir / "job.sh"
    script.write_text(f"""#!/bin/bash
export DESINIGHT_ATTEMPT_DIR={shlex.quote(str(adir))}
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
finish() {{ rc=$?; printf '{{"status": "%s", "exit_code": %d, "start": "%s", "end": "%s", "host": "%s", "backend_id": "%s"}}\\n' \\
  "$([ $rc -eq 0 ] && echo completed || echo failed)" $rc "$start" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "${{SLURM_JOB_ID:-${{DESINIGHT_BACKEND_ID:-}}}}" > "$DESINIGHT_ATTEMPT_DIR/.exit.tmp" && mv "$DESINIGHT_ATTEMPT_DIR/.exit.tmp" "$DESINIGHT_ATTEMPT_DIR/exit.json"; }}
trap finish EXIT
trap 'exit 143' TERM
{body}
""")
    script.chmod(0o755)
    return SubmitRequest(name=f"dn-contract-{name}", tag=tag, comment=f"{tag}:{name}:1",
                         script=script, attempt_dir=adir, log=adir / "job.log",
                         depends_on=tuple(deps), resources=Resources(time_minutes=minutes))


def wait(backend, ids, states=FINAL, timeout=150.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = backend.poll(list(ids))
        if all(i in got and got[i].state in states for i in ids):
            return got
        time.sleep(0.5)
    raise AssertionError(f"timeout waiting for {ids}: {backend.poll(list(ids))}")


def test_single_job_completes_with_log_and_exit_record(backend, tmp_path):
    req = job(tmp_path, "one", "echo hello from the job")
    bid = backend.submit(req)
    got = wait(backend, [bid])[bid]
    assert got.state is JobState.COMPLETED and got.exit_code in (0, None)
    assert "hello from the job" in req.log.read_text()
    assert read_exit(req.attempt_dir)["exit_code"] == 0


def test_failing_job(backend, tmp_path):
    bid = backend.submit(job(tmp_path, "bad", "exit 7"))
    got = wait(backend, [bid])[bid]
    assert got.state is JobState.FAILED
    assert read_exit(tmp_path / "runs" / "bad")["exit_code"] == 7


def test_diamond_with_failed_branch_then_resubmit(backend, tmp_path):
    a = backend.submit(job(tmp_path, "A", "sleep 1"))
    b = backend.submit(job(tmp_path, "B", "exit 1", deps=[a]))
    c = backend.submit(job(tmp_path, "C", "true", deps=[a]))
    d = backend.submit(job(tmp_path, "D", "true", deps=[b, c]))
    got = wait(backend, [a, b, c, d])
    assert got[a].state is JobState.COMPLETED and got[c].state is JobState.COMPLETED
    assert got[b].state is JobState.FAILED
    assert got[d].state in (JobState.CANCELLED, JobState.DEP_FAILED)
    assert not (tmp_path / "runs" / "D" / "exit.json").exists()      # D never ran
    # fixed B, new D on the new B id (C and A completed: no dependency needed)
    b2 = backend.submit(job(tmp_path, "B2", "true"))
    d2 = backend.submit(job(tmp_path, "D2", "true", deps=[b2]))
    got = wait(backend, [b2, d2])
    assert got[d2].state is JobState.COMPLETED


def test_cancel_running_and_pending(backend, tmp_path):
    run = backend.submit(job(tmp_path, "long", "sleep 120"))
    wait(backend, [run], states={JobState.RUNNING}, timeout=60)
    queued = backend.submit(job(tmp_path, "after", "true", deps=[run]))
    backend.cancel([run])
    got = wait(backend, [run, queued], timeout=60)
    assert got[run].state is JobState.CANCELLED
    assert got[queued].state in (JobState.CANCELLED, JobState.DEP_FAILED)


def test_find_recovers_ids_by_tag(backend, tmp_path):
    reqs = [job(tmp_path, f"f{i}", "true", tag="contract-find") for i in range(3)]
    ids = [backend.submit(r) for r in reqs]
    found = backend.find("contract-find")
    assert {found[r.comment] for r in reqs} == set(ids)
    wait(backend, ids)


def test_timeout_local(backend, tmp_path):
    if backend.name != "local":
        pytest.skip("SLURM's timeout (>= 60 s) is tested in test_slurm_backend.py")
    bid = backend.submit(job(tmp_path, "slow", "sleep 60", minutes=1))   # 3 s at scale 0.05
    got = wait(backend, [bid], timeout=30)[bid]
    assert got.state is JobState.TIMEOUT
    assert json.loads((tmp_path / "runs" / "slow" / "exit.json").read_text())["exit_code"] == 143
