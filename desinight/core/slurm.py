"""SLURM text: build sbatch/sacct/squeue/scancel argv, parse their output, map states.

Pure functions only (no subprocess): ``desinight.batch.slurm`` runs the commands through one
runner; everything here is tested on text captured from a real cluster (tests/data/slurm/).
Facts relied on are measured in SLURM-NOTES.md (SLURM 22.05).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from .errors import BackendError
from .states import JobState

log = logging.getLogger("desinight")

#: ids per sacct/squeue/scancel call: keeps argv and slurmdbd queries bounded on a big night
CHUNK = 500

#: Every SLURM job state (sacct and squeue spellings) -> JobState. ONE table: add a state here.
#: Non-final SLURM states map to an ACTIVE JobState so the orchestrator keeps polling them.
STATE_MAP: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,          # back in the queue after a requeue
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "CONFIGURING": JobState.RUNNING,       # allocated, nodes booting
    "COMPLETING": JobState.RUNNING,        # ending; exit code not final until COMPLETED/FAILED
    "SUSPENDED": JobState.RUNNING,         # allocated and paused; will resume
    "STOPPED": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,       # a job-chosen special exit code: it did not succeed
    "LAUNCH_FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,          # hit its --deadline: a time limit by another name
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "CANCELLED": JobState.CANCELLED,       # sacct also writes "CANCELLED by <uid>"
    "PREEMPTED": JobState.CANCELLED,       # killed for a higher-priority job: not its fault, retry
    "REVOKED": JobState.CANCELLED,         # federation: a sibling cluster took the job
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,       # its node failed to boot: a node problem, retry
}

#: pending reason SLURM gives a job whose afterok parent failed (it never runs by itself)
NEVER_SATISFIED = "DependencyNeverSatisfied"

SACCT_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "NodeList", "Comment", "Reason")
SQUEUE_FORMAT = "%i|%T|%r|%E"           # id | state | pending reason | dependency
FIND_SQUEUE_FORMAT = "%i|%k"            # id | comment


def map_state(raw: str) -> JobState | None:
    """JobState of a SLURM state string ("CANCELLED by 0" -> CANCELLED); None if unheard of.

    An unknown word is not guessed: the caller leaves the job out, so the orchestrator
    falls back to the job's exit record instead of recording a wrong state."""
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()   # sacct may truncate with "+"
    return STATE_MAP.get(word)


class _SubmitLike(Protocol):   # batch.base.SubmitRequest (core does not import batch)
    name: str
    comment: str
    script: Path
    attempt_dir: Path
    log: Path
    depends_on: tuple[str, ...]
    resources: object


# --- sbatch -------------------------------------------------------------------------------
def sbatch_argv(req: _SubmitLike, sbatch: str = "sbatch", kill_on_invalid_dep: bool = False) -> list[str]:
    """argv for one submission. Options on the command line override the script's #SBATCH.

    ``kill_on_invalid_dep`` adds ``--kill-on-invalid-dep=yes``: off by default, because NERSC
    asked DESI to drop that flag after a SLURM bug with it produced runaway jobs (desispec
    #2658). Without it the orchestrator checks parents before each sbatch and settles
    DependencyNeverSatisfied itself (SLURM-NOTES)."""
    argv = [sbatch, "--parsable", f"--job-name={req.name}", f"--comment={req.comment}",
            f"--output={req.log}", f"--error={req.log}", f"--chdir={req.attempt_dir}"]
    if req.depends_on:
        # Never pass an id of unknown state: SLURM accepts afterok on a purged or never-existing
        # id and runs the job at once (SLURM-NOTES); the orchestrator only passes parents
        # SLURM itself reported pending or running just before this sbatch (desinight.depcheck).
        argv.append("--dependency=afterok:" + ":".join(req.depends_on))
    if kill_on_invalid_dep:
        argv.append("--kill-on-invalid-dep=yes")   # opt-in: [slurm] kill_on_invalid_dep
    r = req.resources
    argv += [f"--nodes={r.nodes}", f"--ntasks={r.ntasks}", f"--cpus-per-task={r.cpus_per_task}",
             f"--time={r.time_minutes}"]
    if r.mem_mb:
        argv.append(f"--mem={r.mem_mb}M")
    for opt in ("account", "qos", "partition", "constraint", "gres", "reservation", "exclude"):
        value = getattr(r, opt, None)
        if value:
            argv.append(f"--{opt}={value}")
    argv.append(str(req.script))
    return argv


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` output: "123" or "123;cluster"."""
    line = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
    jobid = line.split(";", 1)[0].strip()
    if not jobid.isdigit():
        raise BackendError(f"sbatch: unexpected reply {stdout.strip()[:200]!r}")
    return jobid


# --- sacct --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SacctRow:
    job_id: str
    raw_state: str            # as sacct wrote it, e.g. "CANCELLED by 0"
    state: JobState
    exit_code: int | None     # 128+signal when killed by a signal (shell convention)
    start: datetime | None
    end: datetime | None
    node: str | None
    comment: str | None
    reason: str | None        # what to show: "CANCELLED by 0", the pending reason, ...


def chunked(ids: Iterable[str], size: int = CHUNK) -> Iterator[list[str]]:
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def sacct_argv(ids: Sequence[str], sacct: str = "sacct") -> list[str]:
    """One sacct call for these ids (callers chunk with :func:`chunked`).

    Always by ``-j``: without it sacct omits jobs cancelled while pending (SLURM-NOTES), and
    with ``-j`` its default start time is the epoch, so old jobs are found too."""
    return [sacct, "-X", "--parsable2", "--noheader", "-j", ",".join(ids),
            "--format=" + ",".join(SACCT_FIELDS)]


def _time(text: str) -> datetime | None:
    """sacct prints the cluster's local time without zone; return it aware, in UTC."""
    text = text.strip()
    if not text or text in ("Unknown", "None"):
        return None
    try:
        return datetime.fromisoformat(text).astimezone().astimezone(timezone.utc)
    except ValueError:
        return None


def _exit_code(text: str) -> int | None:
    """"3:0" -> 3; "0:9" (killed by signal 9) -> 137; "" -> None."""
    try:
        code, _, sig = text.strip().partition(":")
        code_i, sig_i = int(code), int(sig or 0)
    except ValueError:
        return None
    return 128 + sig_i if sig_i else code_i


def _none(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "None assigned", "(null)") else text


def parse_sacct(text: str) -> dict[str, SacctRow]:
    """Rows of ``sacct -X --parsable2 --noheader --format=SACCT_FIELDS`` by job id.

    Rows with an unknown state are skipped (see :func:`map_state`); when an id appears
    twice (requeued) the last row, the newest, wins."""
    rows: dict[str, SacctRow] = {}
    n = len(SACCT_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < n:
            log.warning("sacct: skipping malformed line %r", line[:200])
            continue
        # The comment is free text and may hold "|": everything between NodeList and Reason.
        jobid, raw, code, start, end, node = parts[:6]
        comment, reason = "|".join(parts[6:-1]), parts[-1]
        state = map_state(raw)
        if state is None:
            log.warning("sacct: job %s in unknown SLURM state %r; left to its exit record", jobid, raw)
            continue
        why = _none(reason)
        never_ran = node.strip() == "None assigned"
        if state is JobState.CANCELLED and never_ran and why == NEVER_SATISFIED:
            # Cancelled (by us or an operator) while waiting on a dependency that had already
            # failed: it could never have run. The orchestrator turns this reason into dep_failed.
            why = f"{NEVER_SATISFIED} ({raw.strip()})"
        elif raw.startswith("CANCELLED by"):
            why = raw.strip()
        elif state is JobState.CANCELLED and never_ran and why in ("Dependency", None):
            # Cancelled before it ever ran by SLURM itself (a person's scancel reads "CANCELLED
            # by <uid>"): kill_invalid_depend / --kill-on-invalid-dep settled a job whose parent
            # failed or was cancelled. sacct's Reason reads "None" for a moment before
            # "Dependency" (measured), so both count.
            why = f"{NEVER_SATISFIED} (cancelled by kill_invalid_depend)"
        elif state in (JobState.RUNNING, JobState.COMPLETED):
            why = None   # sacct's leftover "None"/"Dependency" says nothing about a started job
        rows[jobid.strip()] = SacctRow(jobid.strip(), raw.strip(), state, _exit_code(code),
                                       _time(start), _time(end), _none(node), _none(comment), why)
    return rows


# --- squeue -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SqueueRow:
    job_id: str
    raw_state: str
    state: JobState
    reason: str | None        # pending reason, e.g. "Dependency", "DependencyNeverSatisfied"
    dependency: str | None    # e.g. "afterok:2(failed)"


def squeue_argv(ids: Sequence[str], squeue: str = "squeue") -> list[str]:
    # -t all: include jobs that just ended and are still in slurmctld's memory.
    return [squeue, "-h", "-t", "all", "-j", ",".join(ids), "-o", SQUEUE_FORMAT]


def parse_squeue(text: str) -> dict[str, SqueueRow]:
    rows: dict[str, SqueueRow] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4:
            continue
        jobid, raw, reason, dep = parts[0].strip(), parts[1].strip(), parts[2], "|".join(parts[3:])
        state = map_state(raw)
        if state is None:
            log.warning("squeue: job %s in unknown SLURM state %r", jobid, raw)
            continue
        rows[jobid] = SqueueRow(jobid, raw, state, _none(reason), _none(dep))
    return rows


# --- find (outbox reconcile) and cancel ---------------------------------------------------
def count_argv(squeue: str = "squeue") -> list[str]:
    """All of the user's jobs slurmctld holds queued or running (default states: PD, R, CG,
    CF, S...), every production and submitter: one line per job."""
    return [squeue, "-h", "--me", "-o", "%i"]


def parse_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def find_squeue_argv(squeue: str = "squeue") -> list[str]:
    # -t all: a job that just ended is still in slurmctld's memory (MinJobAge) but reaches
    # `sacct -S` only seconds later; without it a daemon killed right after sbatch of a short
    # job could find that job nowhere (SLURM-NOTES).
    return [squeue, "-h", "--me", "-t", "all", "-o", FIND_SQUEUE_FORMAT]


def find_sacct_argv(sacct: str = "sacct", since: str = "now-7days") -> list[str]:
    # The comment reaches sacct only with AccountingStoreFlags=job_comment, and only once the
    # job has ended; live jobs are found through squeue.
    return [sacct, "-X", "--parsable2", "--noheader", "-S", since, "--format=JobID,Comment"]


def parse_id_comment(text: str, tag: str) -> dict[str, str]:
    """{comment: id} from "id|comment" lines, for comments starting with ``tag``.

    For one comment seen twice the larger (later) id wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        jobid, sep, comment = line.strip().partition("|")
        if not sep or not comment.startswith(tag) or not jobid.strip().isdigit():
            continue
        old = found.get(comment)
        if old is None or int(jobid) > int(old):
            found[comment] = jobid.strip()
    return found


def scancel_argv(ids: Sequence[str], scancel: str = "scancel") -> list[str]:
    return [scancel, *ids]
