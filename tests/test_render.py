"""Rendered batch scripts: golden files (awkward paths included) and a real run of one."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from desinight.batch.base import Resources
from desinight.batch.render import job_name, render_script, step_command, write_script
from desinight.config import Config

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc)
TEMPLATES = Config().templates_dir


def render(root: Path, kind="science", command=None, launcher="", **kw):
    adir = root / "run" / "20261124" / kind / "attempt-1"
    return render_script(
        TEMPLATES, kind, job_key=f"20261124/{kind}/26112403", job_name=job_name("daily", 7, kind),
        attempt=1, production="daily", attempt_dir=adir, script_path=adir / "job.sh",
        raw_root=root / "raw data", redux_root=root / "redux", launcher=launcher,
        command=command or step_command("/opt/py/bin/python", kind, 20261124, [26112403], 1000,
                                        "a0", None),
        resources=Resources(ntasks=4, time_minutes=30, mem_mb=8000), now=NOW,
        tag="desinight:daily:7:1", **kw), adir


def hand_record(adir: Path) -> dict:
    """The one exit record a run by hand wrote (in its own hand-<time> directory)."""
    found = list(adir.glob("hand-*/exit.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.mark.parametrize("case,root,launcher", [
    ("plain", "/global/cfs/desi", ""),
    ("awkward", "/tmp/it's a \"dir\"; rm -rf ~ $(id)", "srun --mpi=pmi2"),
])
def test_golden(case, root, launcher):
    text, _ = render(Path(root), launcher=launcher)
    golden = GOLDEN / f"science-{case}.sh"
    if os.environ.get("DESINIGHT_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_every_kind_has_a_template():
    from desinight.core.planner import JOB_KINDS
    for kind in JOB_KINDS:
        text, _ = render(Path("/x"), kind=kind)
        assert f"step run {kind} " in text


def test_awkward_paths_cannot_inject_and_exit_record_is_written(tmp_path):
    root = tmp_path / "it's a \"dir\"; touch INJECTED $(touch INJECTED2)"
    canary = tmp_path / "argv.json"
    cmd = ["python3", "-c", "import json,sys; json.dump(sys.argv[1:], open(sys.argv[1],'w'))",
           str(canary), "a b", "$(touch INJECTED3)", "x;y"]
    text, adir = render(root, command=cmd)
    write_script(adir / "job.sh", text)
    r = subprocess.run(["bash", str(adir / "job.sh")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(canary.read_text()) == [str(canary), "a b", "$(touch INJECTED3)", "x;y"]
    assert not list(tmp_path.glob("INJECTED*")) and not list(Path.cwd().glob("INJECTED*"))
    rec = hand_record(adir)
    assert rec["status"] == "completed" and rec["exit_code"] == 0


def test_failing_command_records_its_exit_code(tmp_path):
    text, adir = render(tmp_path, command=["bash", "-c", "exit 3"])
    write_script(adir / "job.sh", text)
    r = subprocess.run(["bash", str(adir / "job.sh")], capture_output=True, text=True)
    assert r.returncode == 3
    rec = hand_record(adir)
    assert rec == {**rec, "status": "failed", "exit_code": 3}


def test_run_by_hand_never_writes_the_attempts_record(tmp_path):
    """`bash job.sh` (the script's own hint) writes to hand-<time>/, tagged 'hand', with no
    job id; so does a run inside an interactive allocation (another SLURM job name)."""
    text, adir = render(tmp_path, command=["bash", "-c", "exit 3"])
    write_script(adir / "job.sh", text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DESINIGHT_"))}
    subprocess.run(["bash", str(adir / "job.sh")], env=env, capture_output=True)
    rec = hand_record(adir)
    assert rec["tag"] == "hand" and rec["backend_id"] == "" and rec["exit_code"] == 3
    assert not (adir / "exit.json").exists()
    subprocess.run(["bash", str(adir / "job.sh")], capture_output=True,
                   env={**env, "SLURM_JOB_ID": "99", "SLURM_JOB_NAME": "interactive"})
    assert not (adir / "exit.json").exists() and len(list(adir.glob("hand-*"))) == 2


def test_batch_run_records_tag_and_job_id(tmp_path):
    """Started by SLURM (its job id and this job's name in the environment): the record
    goes to the attempt directory, with the attempt's tag and the SLURM id."""
    text, adir = render(tmp_path, command=["true"])
    write_script(adir / "job.sh", text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DESINIGHT_"))}
    subprocess.run(["bash", str(adir / "job.sh")], check=True, capture_output=True,
                   env={**env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": job_name("daily", 7, "science")})
    rec = json.loads((adir / "exit.json").read_text())
    assert (rec["tag"], rec["backend_id"], rec["exit_code"]) == ("desinight:daily:7:1", "4242", 0)
    assert not list(adir.glob("hand-*"))


def test_a_record_counts_only_for_its_own_attempt():
    from desinight.batch.exitfile import belongs
    rec = {"exit_code": 1, "tag": "desinight:daily:7:1", "backend_id": "4242"}
    assert belongs(rec, "desinight:daily:7:1", "4242")
    assert not belongs(rec, "desinight:daily:7:2", "4242")          # another attempt
    assert not belongs(rec, "desinight:daily:7:1", "4243")          # another SLURM job
    assert not belongs({**rec, "backend_id": ""}, "desinight:daily:7:1", "4242")   # by hand
    assert not belongs({**rec, "tag": "hand"}, "desinight:daily:7:1", "4242")
    assert belongs({**rec, "backend_id": ""}, "desinight:daily:7:1", None)     # intent, no id yet
    legacy = {"exit_code": 0, "backend_id": "4242"}                  # rendered before tags
    assert belongs(legacy, "desinight:daily:7:1", "4242") and not belongs(legacy, "x", None)


def test_rerun_by_hand_in_scratch_dir_keeps_attempt_records(tmp_path):
    text, adir = render(tmp_path, command=["true"])
    write_script(adir / "job.sh", text)
    scratch = tmp_path / "scratch"
    subprocess.run(["bash", str(adir / "job.sh")], env={**os.environ, "DESINIGHT_ATTEMPT_DIR": str(scratch)},
                   check=True, capture_output=True)
    assert (scratch / "exit.json").exists() and not (adir / "exit.json").exists()


def test_newline_in_a_path_cannot_escape_a_comment(tmp_path):
    root = tmp_path / "x\ntouch NEWLINE_INJECTED\n"
    text, adir = render(root, command=["true"])
    write_script(adir / "job.sh", text)
    subprocess.run(["bash", str(adir / "job.sh")], cwd=tmp_path, check=True, capture_output=True)
    assert not (tmp_path / "NEWLINE_INJECTED").exists()
