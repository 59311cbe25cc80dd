"""The SLURM backend: sbatch / sacct / squeue / scancel through one subprocess runner.

Text in and out is built and parsed by ``desinight.core.slurm`` (pure, tested on captured
output); this module only decides which commands to run and how to combine their answers:

* poll: one ``sacct -j`` per chunk of ids (sacct is the record of ended jobs), then ``squeue``
  only for ids sacct shows PENDING or does not know yet (sacct lags slurmctld by ~1 s and does
  not show pending reasons). A job PENDING with reason DependencyNeverSatisfied (a site without
  ``kill_invalid_depend``) would wait forever: it is reported DEP_FAILED and scancelled.
  If sacct fails (slurmdbd down) squeue alone answers; only both failing raises.
* ids neither command knows (purged from slurmctld, accounting lost or down) are left out: the
  orchestrator reads exit records in one place (``batch.exitfile.read_exits``, in a reader
  process, checked against the attempt's tag) and decides (the record, else wait, then unknown).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core import slurm as S
from ..core.errors import BackendError
from ..core.states import JobState
from .base import BackendJob, Capabilities, SubmitRequest

log = logging.getLogger("desinight")

#: seconds one SLURM command may take; slurmctld under load can be slow, a hung one must not
#: stall the daemon's tick forever
DEFAULT_TIMEOUT = 60.0

Runner = Callable[[list[str], float], str]


def run_command(argv: list[str], timeout: float = DEFAULT_TIMEOUT) -> str:
    """THE subprocess call of this backend: argv list (never a shell), bounded by ``timeout``.

    Returns stdout; raises BackendError carrying stderr's first line on failure or timeout."""
    name = Path(argv[0]).name
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{name}: no answer after {timeout:g} s") from None
    except OSError as e:   # not installed, not executable
        raise BackendError(f"{name}: {e.strerror or e}") from None
    if p.returncode != 0:
        first = next((ln.strip() for ln in p.stderr.splitlines() if ln.strip()), "")
        first = first or f"exit status {p.returncode}"
        raise BackendError(first if first.startswith(name) else f"{name}: {first}")
    return p.stdout


def _is_invalid_id(err: BackendError) -> bool:
    # squeue/scancel answer "Invalid job id specified" when no given id is in slurmctld's
    # memory any more: that is an answer ("none of these"), not a failure.
    return "Invalid job id" in str(err)


class SlurmBackend:
    name = "slurm"
    capabilities = Capabilities(can_lag=True)   # sacct trails sbatch; purged ids vanish

    def __init__(self, runner: Runner | None = None, timeout: float = DEFAULT_TIMEOUT,
                 kill_on_invalid_dep: bool = False):
        self._runner = runner or run_command
        self.timeout = timeout
        #: add --kill-on-invalid-dep=yes to every sbatch ([slurm] kill_on_invalid_dep; off by default)
        self.kill_on_invalid_dep = kill_on_invalid_dep
        #: why the last poll answered from one command only (None: both answered)
        self.poll_warning: str | None = None
        #: calls per command since creation, e.g. calls["sacct"]; benchmarks read it
        self.calls: dict[str, int] = {"sbatch": 0, "sacct": 0, "squeue": 0, "scancel": 0}
        #: ids this backend scancelled as DependencyNeverSatisfied -> reason. Right after our
        #: scancel sacct reads "CANCELLED by 0" with no reason for a few seconds, which would
        #: look like an operator's cancel; a later poll must still say DEP_FAILED.
        self._never: dict[str, str] = {}

    def _run(self, argv: list[str]) -> str:
        name = Path(argv[0]).name
        self.calls[name] = self.calls.get(name, 0) + 1
        return self._runner(argv, self.timeout)

    # --- Backend protocol ---------------------------------------------------------------
    def submit(self, req: SubmitRequest) -> str:
        return S.parse_sbatch(self._run(S.sbatch_argv(req, kill_on_invalid_dep=self.kill_on_invalid_dep)))

    def poll(self, ids: Sequence[str]) -> dict[str, BackendJob]:
        """State of ``ids`` that sacct or squeue know (see the module docstring)."""
        ids = list(dict.fromkeys(str(i) for i in ids))   # unique, order kept
        self.poll_warning = None
        if not ids:
            return {}
        acct: dict[str, S.SacctRow] = {}
        sacct_error: BackendError | None = None
        try:
            for chunk in S.chunked(ids):
                acct.update(S.parse_sacct(self._run(S.sacct_argv(chunk))))
        except BackendError as e:
            sacct_error = e
            acct = {}
            log.warning("sacct failed (%s); polling with squeue alone", e)
            self.poll_warning = f"sacct failed, squeue alone: {e}"

        ask = [i for i in ids if i not in acct or acct[i].state is JobState.PENDING]
        queue: dict[str, S.SqueueRow] = {}
        if ask:
            try:
                queue = self._squeue(ask)
            except BackendError as e:
                if sacct_error is not None:
                    raise BackendError(f"sacct and squeue both failed: {sacct_error}; {e}") from None
                log.warning("squeue failed (%s); pending reasons unknown this poll", e)
                self.poll_warning = f"squeue failed, sacct alone: {e}"

        out: dict[str, BackendJob] = {}
        never: list[str] = []
        for i in ids:
            a, q = acct.get(i), queue.get(i)
            if q is not None and q.state is JobState.PENDING and q.reason == S.NEVER_SATISFIED:
                never.append(i)
                why = S.NEVER_SATISFIED + (f" ({q.dependency})" if q.dependency else "")
                self._never[i] = why
                if len(self._never) > 10_000:   # a long-lived daemon: forget the oldest
                    self._never.pop(next(iter(self._never)))
                out[i] = BackendJob(i, JobState.DEP_FAILED, reason=why)
            elif i in self._never and (q is None or q.state is not JobState.RUNNING):
                out[i] = BackendJob(i, JobState.DEP_FAILED, reason=self._never[i],
                                    end=a.end if a else None)
            elif a is not None and (q is None or a.state is not JobState.PENDING):
                out[i] = _from_sacct(a)
            elif q is not None:
                out[i] = self._from_squeue(q, a, sacct_ok=sacct_error is None)
            # else: neither knows it; left out, the caller reads the job's exit record
        if never:
            # Without kill_invalid_depend SLURM keeps these PENDING forever: settle them.
            try:
                self.cancel(never)
            except BackendError as e:
                log.warning("scancel of never-satisfiable jobs %s failed: %s", never, e)
        return out

    @staticmethod
    def _from_squeue(q: S.SqueueRow, a: S.SacctRow | None, sacct_ok: bool) -> BackendJob:
        state, reason = q.state, q.reason
        exit_code = end = None
        if state not in (JobState.PENDING, JobState.RUNNING):
            if sacct_ok:
                # squeue saw the end before accounting did (sacct lags ~1 s and may not know a
                # new job at all): stay active, so the next poll brings sacct's exit code and
                # reason instead of settling on squeue's thinner answer for good.
                state = JobState.PENDING if state is JobState.CANCELLED else JobState.RUNNING
                reason = None
            elif state is JobState.CANCELLED and reason in ("Dependency", S.NEVER_SATISFIED):
                reason = f"{S.NEVER_SATISFIED} (cancelled by kill_invalid_depend)"
        elif state is JobState.RUNNING:
            reason = None
        return BackendJob(q.job_id, state, exit_code=exit_code, reason=reason,
                          start=a.start if a else None, end=end, node=a.node if a else None)

    def _squeue(self, ids: list[str]) -> dict[str, S.SqueueRow]:
        rows: dict[str, S.SqueueRow] = {}
        for chunk in S.chunked(ids):
            try:
                rows.update(S.parse_squeue(self._run(S.squeue_argv(chunk))))
            except BackendError as e:
                if not _is_invalid_id(e):
                    raise
        return rows

    def cancel(self, ids: Sequence[str]) -> None:
        for chunk in S.chunked([str(i) for i in ids]):
            try:
                self._run(S.scancel_argv(chunk))
            except BackendError as e:
                # Ids that already ended are ignored (protocol); scancel still cancels the rest.
                if not (_is_invalid_id(e) or "already completing or completed" in str(e)):
                    raise

    def count_user_jobs(self) -> int:
        """The user's queued and running jobs: one ``squeue --me`` (the queue ceiling)."""
        return S.parse_count(self._run(S.count_argv()))

    def find(self, tag: str) -> dict[str, str]:
        """{comment: id} of this production's jobs, live (squeue) or ended this week (sacct).

        Either command failing raises: reconcile must not take "not found" for "never submitted"."""
        # squeue first: a job that leaves the queue between the two calls is then in sacct,
        # whereas sacct first can miss a job slurmdbd has not recorded yet that ends before
        # squeue runs.
        live = S.parse_id_comment(self._run(S.find_squeue_argv()), tag)
        ended = S.parse_id_comment(self._run(S.find_sacct_argv()), tag)
        found = dict(ended)
        for comment, jobid in live.items():
            if comment not in found or int(jobid) > int(found[comment]):
                found[comment] = jobid
        return found


def _from_sacct(a: S.SacctRow) -> BackendJob:
    return BackendJob(a.job_id, a.state, exit_code=a.exit_code, reason=a.reason,
                      start=a.start, end=a.end, node=a.node)
