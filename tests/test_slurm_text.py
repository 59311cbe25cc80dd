"""SLURM text (desinight.core.slurm) on output captured from a real cluster (tests/data/slurm/,
produced by tests/data/slurm/capture.sh), plus the backend's combining logic on a scripted runner."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from desinight.batch.base import Resources, SubmitRequest
from desinight.batch.slurm import SlurmBackend, run_command
from desinight.core import slurm as S
from desinight.core.errors import BackendError
from desinight.core.states import ACTIVE, JobState

DATA = Path(__file__).parent / "data" / "slurm"


def text(name: str) -> str:
    return (DATA / name).read_text()


def req(**kw) -> SubmitRequest:
    base = dict(name="dn-test-7-psf", tag="desinight:test", comment="desinight:test:7:1",
                script=Path("/p/run/psf/attempt-1/job.sh"), attempt_dir=Path("/p/run/psf/attempt-1"),
                log=Path("/p/run/psf/attempt-1/job.log"))
    return SubmitRequest(**{**base, **kw})


# --- sbatch ---------------------------------------------------------------------------------
def test_sbatch_argv_minimal():
    argv = S.sbatch_argv(req())
    # no --kill-on-invalid-dep by default (NERSC asked DESI to drop it: desispec #2658)
    assert argv == ["sbatch", "--parsable", "--job-name=dn-test-7-psf",
                    "--comment=desinight:test:7:1", "--output=/p/run/psf/attempt-1/job.log",
                    "--error=/p/run/psf/attempt-1/job.log", "--chdir=/p/run/psf/attempt-1",
                    "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
                    "--time=30", "/p/run/psf/attempt-1/job.sh"]


def test_sbatch_argv_kill_on_invalid_dep_is_opt_in():
    assert not any("kill-on-invalid" in a for a in S.sbatch_argv(req(depends_on=("12",))))
    argv = S.sbatch_argv(req(depends_on=("12",)), kill_on_invalid_dep=True)
    assert argv.index("--kill-on-invalid-dep=yes") == argv.index("--dependency=afterok:12") + 1


def test_backend_passes_kill_on_invalid_dep_from_config(tmp_path):
    from desinight.app import make_backend
    from desinight.config import load_config
    conf = tmp_path / "desinight.toml"
    conf.write_text("[slurm]\nkill_on_invalid_dep = true\n")
    assert make_backend(load_config(conf, env={}), "slurm").kill_on_invalid_dep is True
    assert make_backend(load_config(None, env={}), "slurm").kill_on_invalid_dep is False


def test_sbatch_argv_dependencies_and_resources():
    r = Resources(nodes=2, ntasks=64, cpus_per_task=2, time_minutes=45, mem_mb=4000,
                  account="desi", qos="realtime", partition="gpu", constraint="cpu")
    argv = S.sbatch_argv(req(depends_on=("12", "13"), resources=r))
    assert "--dependency=afterok:12:13" in argv
    for opt in ("--nodes=2", "--ntasks=64", "--cpus-per-task=2", "--time=45", "--mem=4000M",
                "--account=desi", "--qos=realtime", "--partition=gpu", "--constraint=cpu"):
        assert opt in argv
    assert argv[-1] == "/p/run/psf/attempt-1/job.sh"   # the script comes last


def test_sbatch_argv_awkward_path_is_one_argument():
    p = Path("/data/my prod;rm -rf x/'q'/job.sh")
    argv = S.sbatch_argv(req(script=p))
    assert argv[-1] == str(p)   # argv, never a shell: no quoting needed or done


def test_parse_sbatch_captured_and_cluster_suffix():
    assert S.parse_sbatch(text("sbatch_parsable.txt")) == "7"
    assert S.parse_sbatch("4242;perlmutter\n") == "4242"
    with pytest.raises(BackendError):
        S.parse_sbatch("")
    with pytest.raises(BackendError):
        S.parse_sbatch("Submitted batch job 12\n")   # not --parsable output


# --- states ---------------------------------------------------------------------------------
ALL_SLURM_STATES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY",
                    "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REQUEUED",
                    "SUSPENDED", "COMPLETING", "CONFIGURING", "RESIZING", "REVOKED", "SPECIAL_EXIT"]


#: what each SLURM word must mean for the night (written out here, not read from STATE_MAP,
#: so a changed mapping fails this test)
EXPECTED_STATE = {
    "PENDING": JobState.PENDING, "RUNNING": JobState.RUNNING, "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "TIMEOUT": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY, "CANCELLED": JobState.CANCELLED,
    "NODE_FAIL": JobState.NODE_FAIL, "PREEMPTED": JobState.CANCELLED,
    "BOOT_FAIL": JobState.NODE_FAIL, "DEADLINE": JobState.TIMEOUT, "REQUEUED": JobState.PENDING,
    "SUSPENDED": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
    "CONFIGURING": JobState.RUNNING, "RESIZING": JobState.RUNNING,
    "REVOKED": JobState.CANCELLED, "SPECIAL_EXIT": JobState.FAILED,
}


@pytest.mark.parametrize("raw", ALL_SLURM_STATES)
def test_every_slurm_state_is_mapped(raw):
    assert S.map_state(raw) is EXPECTED_STATE[raw]
    assert S.map_state(raw + "+") is EXPECTED_STATE[raw]      # sacct's truncation mark
    assert S.map_state(raw.lower()) is EXPECTED_STATE[raw]


def test_an_unheard_of_state_is_not_guessed():
    assert S.map_state("STARGAZING") is None


@pytest.mark.parametrize("raw,expected", [
    ("CANCELLED by 0", JobState.CANCELLED), ("CANCELLED by 12345", JobState.CANCELLED),
    ("COMPLETING", JobState.RUNNING), ("REQUEUED", JobState.PENDING), ("SUSPENDED", JobState.RUNNING),
    ("BOOT_FAIL", JobState.NODE_FAIL), ("DEADLINE", JobState.TIMEOUT),
    ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY), ("CANCELLED+", JobState.CANCELLED),
])
def test_state_details(raw, expected):
    assert S.map_state(raw) is expected


def test_not_yet_final_states_stay_active():
    for raw in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING"):
        assert S.map_state(raw) in ACTIVE, raw


def test_unknown_state_is_not_guessed():
    assert S.map_state("SOMETHING_NEW") is None
    assert S.parse_sacct("5|SOMETHING_NEW|0:0|Unknown|Unknown|vm||None\n") == {}


# --- sacct ----------------------------------------------------------------------------------
def test_sacct_argv_and_chunks():
    argv = S.sacct_argv(["1", "2"])
    assert argv == ["sacct", "-X", "--parsable2", "--noheader", "-j", "1,2",
                    "--format=JobID,State,ExitCode,Start,End,NodeList,Comment,Reason"]
    chunks = list(S.chunked([str(i) for i in range(1201)], 500))
    assert [len(c) for c in chunks] == [500, 500, 201]


def test_parse_sacct_final_captured():
    rows = S.parse_sacct(text("sacct_final.txt"))   # ids: see ids.txt
    assert rows["7"].state is JobState.COMPLETED and rows["7"].exit_code == 0
    assert rows["7"].comment == "cap:ok:1" and rows["7"].node == "vm"
    # sacct prints the cluster's local time without a zone: read as local, returned in UTC
    assert rows["7"].start == datetime(2026, 11, 25, 7, 27, 21).astimezone().astimezone(timezone.utc)
    assert rows["7"].start.tzinfo is timezone.utc
    assert rows["8"].state is JobState.FAILED and rows["8"].exit_code == 3
    assert rows["6"].state is JobState.TIMEOUT
    # scancel of a running job
    assert rows["10"].state is JobState.CANCELLED and rows["10"].reason == "CANCELLED by 0"
    # dependents cancelled by kill_invalid_depend: a reason the orchestrator turns into dep_failed
    for dep in ("9", "11"):
        assert rows[dep].state is JobState.CANCELLED
        assert "DependencyNeverSatisfied" in rows[dep].reason and rows[dep].node is None
    assert rows["11"].start is None          # "None": it never started
    # cancelled while waiting on a failed parent (no kill_invalid_depend): also dep_failed-bound
    assert rows["17"].reason.startswith("DependencyNeverSatisfied")


def test_parse_sacct_live_captured():
    rows = S.parse_sacct(text("sacct_live.txt"))
    assert rows["6"].state is JobState.RUNNING and rows["6"].end is None
    assert rows["11"].state is JobState.PENDING and rows["11"].reason == "Dependency"
    assert rows["6"].comment is None   # sacct stores the comment only once the job ended


def test_parse_sacct_exit_codes_signals_and_pipes_in_comment():
    rows = S.parse_sacct("41|FAILED|0:9|2026-11-25T07:00:00|2026-11-25T07:00:05|vm|a|b:1|None\n"
                         "41|COMPLETED|0:0|2026-11-25T07:01:00|2026-11-25T07:01:05|vm|a|b:2|None\n"
                         "42|OUT_OF_MEMORY|0:125|Unknown|Unknown|vm||None\n")
    assert rows["41"].state is JobState.COMPLETED and rows["41"].comment == "a|b:2"   # last row wins
    assert rows["42"].exit_code == 128 + 125
    assert S.parse_sacct("43|FAILED|0:9|X|Y|vm||None\n")["43"].exit_code == 137


# --- squeue ---------------------------------------------------------------------------------
def test_parse_squeue_captured():
    rows = S.parse_squeue(text("squeue_running_pending.txt"))
    assert rows["11"].state is JobState.PENDING and rows["11"].reason == "Dependency"
    assert rows["11"].dependency == "afterok:10(unfulfilled)"
    assert rows["6"].state is JobState.RUNNING and rows["6"].reason is None
    never = S.parse_squeue(text("squeue_never_satisfied.txt"))["17"]
    assert never.reason == S.NEVER_SATISFIED and never.dependency == "afterok:16(failed)"


def test_find_parsers_captured():
    live = S.parse_id_comment(text("squeue_find.txt"), "cap:")
    assert live == {"cap:pend:1": "11", "cap:timeout:1": "6", "cap:run:1": "10", "cap:mem:1": "12"}
    ended = S.parse_id_comment(text("sacct_find.txt"), "cap:")
    assert ended["cap:ok:1"] == "7" and ended["cap:fail:1"] == "8"
    assert S.parse_id_comment("5|tag:1:1\n9|tag:1:1\n7|other:1\n", "tag:") == {"tag:1:1": "9"}


# --- the backend's combining logic, on a scripted runner -----------------------------------
class Script:
    """A runner answering by command name; records every argv."""

    def __init__(self, answers):
        self.answers, self.argvs = answers, []

    def __call__(self, argv, timeout):
        self.argvs.append(argv)
        ans = self.answers.get(argv[0], "")
        if isinstance(ans, Exception):
            raise ans
        return ans(argv) if callable(ans) else ans


def test_poll_one_sacct_then_squeue_only_for_pending_or_unknown():
    run = Script({"sacct": text("sacct_live.txt"), "squeue": text("squeue_running_pending.txt")})
    b = SlurmBackend(runner=run)
    got = b.poll(["6", "7", "8", "11", "555"])
    assert b.calls["sacct"] == 1 and b.calls["squeue"] == 1
    squeue_argv = [a for a in run.argvs if a[0] == "squeue"][0]
    assert squeue_argv[squeue_argv.index("-j") + 1] == "11,555"
    assert got["7"].state is JobState.COMPLETED and got["8"].exit_code == 3
    assert got["11"].state is JobState.PENDING and got["11"].reason == "Dependency"
    assert "555" not in got   # nobody knows it: the orchestrator reads the exit record


def test_poll_never_satisfied_is_dep_failed_and_cancelled():
    run = Script({"sacct": text("sacct_never_satisfied.txt"),
                  "squeue": text("squeue_never_satisfied.txt")})
    b = SlurmBackend(runner=run)
    got = b.poll(["17"])
    assert got["17"].state is JobState.DEP_FAILED
    assert got["17"].reason == "DependencyNeverSatisfied (afterok:16(failed))"
    assert ["scancel", "17"] in run.argvs
    # after our scancel sacct reads "CANCELLED by 0" (reason lagging): still dep_failed
    run.answers = {"sacct": "17|CANCELLED by 0|0:0|None|2026-11-25T07:27:35|None assigned||None\n",
                   "squeue": "17|CANCELLED|None|afterok:16(failed)\n"}
    assert b.poll(["17"])["17"].state is JobState.DEP_FAILED


def test_poll_survives_sacct_down_and_fails_only_when_both_are_down():
    down = BackendError("sacct: error: Problem talking to the database: Connection refused")
    b = SlurmBackend(runner=Script({"sacct": down, "squeue": text("squeue_running_pending.txt")}))
    got = b.poll(["6", "11"])
    assert got["6"].state is JobState.RUNNING and got["11"].state is JobState.PENDING
    both = SlurmBackend(runner=Script({"sacct": down, "squeue": BackendError("squeue: timeout")}))
    with pytest.raises(BackendError, match="both failed"):
        both.poll(["6"])


def test_poll_invalid_job_id_from_squeue_means_none_known():
    b = SlurmBackend(runner=Script({"sacct": "", "squeue": BackendError(
        "squeue: slurm_load_jobs error: Invalid job id specified")}))
    assert b.poll(["999999"]) == {}


def test_poll_chunks_sacct():
    b = SlurmBackend(runner=Script({"sacct": "", "squeue": ""}))
    b.poll([str(i) for i in range(1, 1102)])
    assert b.calls["sacct"] == 3


def test_squeue_final_while_sacct_lags_stays_active():
    run = Script({"sacct": "5|PENDING|0:0|Unknown|Unknown|None assigned||None\n",
                  "squeue": "5|COMPLETED|None|(null)\n6|CANCELLED|Dependency|(null)\n"})
    got = SlurmBackend(runner=run).poll(["5", "6"])   # sacct does not know 6 yet
    assert got["5"].state is JobState.RUNNING   # next poll brings the real exit code
    assert got["6"].state is JobState.PENDING and got["6"].reason is None


def test_squeue_final_used_when_sacct_is_down():
    run = Script({"sacct": BackendError("sacct: error: slurmdbd: Connection refused"),
                  "squeue": "5|COMPLETED|None|(null)\n6|CANCELLED|Dependency|(null)\n"})
    got = SlurmBackend(runner=run).poll(["5", "6"])
    assert got["5"].state is JobState.COMPLETED
    assert got["6"].state is JobState.CANCELLED and got["6"].reason.startswith("DependencyNever")


def test_find_merges_ended_and_live():
    run = Script({"sacct": text("sacct_find.txt"), "squeue": text("squeue_find.txt")})
    found = SlurmBackend(runner=run).find("cap:")
    assert found["cap:ok:1"] == "7" and found["cap:pend:1"] == "11"


def test_runner_reports_first_stderr_line_and_timeouts(tmp_path):
    assert run_command(["echo", "hi"]) == "hi\n"
    with pytest.raises(BackendError, match=r"^sh: boom$"):
        run_command(["sh", "-c", "echo boom >&2; echo more >&2; exit 1"])
    with pytest.raises(BackendError, match="no answer after"):
        run_command(["sleep", "5"], timeout=0.2)
    with pytest.raises(BackendError, match="no-such-sbatch"):
        run_command([str(tmp_path / "no-such-sbatch")])


# --- what neither command knows is left out (the orchestrator reads exit records) ------------
def test_poll_unknown_to_both_is_left_out():
    run = Script({"sacct": "", "squeue": BackendError(
        "squeue: slurm_load_jobs error: Invalid job id specified")})
    assert SlurmBackend(runner=run).poll(["700", "701"]) == {}


def test_poll_sacct_down_squeue_final_word_without_exit_code():
    run = Script({"sacct": BackendError("sacct: error: slurmdbd: Connection refused"),
                  "squeue": "5|FAILED|NonZeroExitCode|(null)\n6|RUNNING|None|(null)\n"})
    got = SlurmBackend(runner=run).poll(["5", "6", "7"])
    assert got["5"].state is JobState.FAILED and got["5"].exit_code is None   # squeue's word
    assert got["6"].state is JobState.RUNNING and got["6"].exit_code is None
    assert "7" not in got                                                     # squeue forgot it
