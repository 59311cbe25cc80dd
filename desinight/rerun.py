"""Rerun a job by hand, in the current shell, for debugging (`desinight rerun JOB --here`).

By default nothing in the production changes: the stored script runs with its exit record
and log going to a scratch directory. ``record=True`` adds the run as a new attempt (backend
"here"), so a fix made by hand shows up in `status`; when it completes, its dep_failed
descendants are planned again and the next submit pass sends them. Only a run of the whole
job can be recorded: a run of some cameras says nothing of the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .batch.base import Resources
from .batch.exitfile import read_exit
from .batch.render import job_name, render_script, step_command, write_script
from .core.cameras import camera_word, parse_cameras
from .core.errors import DesinightError
from .core.states import JobState
from .db import repo
from .db.engine import transaction
from .db.models import Attempt
from .orchestrate import Context, attempt_dir, kind_env, utc_now
from .transitions import move_job, operator_actor


@dataclass
class RerunResult:
    exit_code: int
    script: Path
    attempt_dir: Path
    recorded: bool


def rerun_here(ctx: Context, ident: str, cameras: str | None = None, record: bool = False,
               stream=None) -> RerunResult:
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        job = repo.get_job(s, prod, ident)
        last = job.last_attempt
        if cameras:
            subset = parse_cameras(cameras)
            extra = set(subset) - set(parse_cameras(job.cameras))
            if extra:
                raise DesinightError(f"job {job.key} does not cover camera(s) {', '.join(sorted(extra))}")
            if record and set(subset) != set(parse_cameras(job.cameras)):
                # A run of some cameras says nothing of the others: it cannot settle the job.
                raise DesinightError(f"--record needs the whole job ({job.cameras}): a run of "
                                     f"{camera_word(subset)} alone cannot settle {job.key}; "
                                     "drop --cameras, or `desinight resubmit` it")
        number = len(job.attempts) + 1
        adir = (attempt_dir(ctx.cfg, job, number) if record else
                Path(tempfile.mkdtemp(prefix=f"rerun-{job.id}-", dir=_scratch_root(ctx))))
        if last is not None and not cameras:
            command = last.command
            script = Path(last.script_path)
            if not script.is_file():
                raise DesinightError(f"the script of {job.key} attempt {last.number} is gone: {script}")
        else:
            # no attempt yet, or a subset of cameras: render the job's script afresh
            script = adir / "job.sh"
            cmd = step_command(sys.executable, job.kind, job.night, job.expids, job.tileid,
                               camera_word(subset) if cameras else job.cameras, job.calib_night,
                               calib_nights=job.calib_nights)
            command = " ".join(cmd)
            write_script(script, render_script(
                ctx.cfg.templates_dir, job.kind, job_key=job.key,
                job_name=job_name(ctx.production, job.id, job.kind), attempt=number,
                production=ctx.production, attempt_dir=adir, script_path=script,
                raw_root=ctx.cfg.raw_root.resolve(), redux_root=ctx.cfg.redux_root.resolve(),
                command=cmd, resources=Resources(**job.resources) if job.resources else Resources(),
                launcher=ctx.cfg.mpi_launcher, extra_env=kind_env(ctx.cfg)))
        att_id = None
        if record:
            # Honest moves: a new attempt is submitted (by hand) and at once running.
            if not move_job(s, job, JobState.SUBMITTED, "rerun by hand", operator_actor(),
                            values={"reason": None}, attempt=number):
                raise DesinightError(f"job {job.key} is {job.state}: cannot record a new attempt")
            att = Attempt(job=job, number=number, backend="here", backend_id=f"here-{os.getpid()}",
                          comment=f"{ctx.tag}:{job.id}:{number}", attempt_dir=str(adir),
                          script_path=str(script), log_path=str(adir / "job.log"),
                          command=command, state=JobState.RUNNING.value,
                          submitted_at=utc_now(), started_at=utc_now())
            s.add(att)
            s.flush()
            move_job(s, job, JobState.RUNNING, "rerun by hand", operator_actor(), attempt=number)
            att_id = att.id
    adir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DESINIGHT_ATTEMPT_DIR": str(adir)}
    rc = subprocess.run(["bash", str(script)], env=env, stdout=stream, stderr=stream).returncode
    if att_id is not None:
        rec = read_exit(adir)
        with transaction(ctx.sessions) as s:
            att = s.get(Attempt, att_id)
            state = JobState.COMPLETED if rc == 0 else JobState.FAILED
            att.state, att.exit_code, att.ended_at = state.value, rc, utc_now()
            att.node = rec.get("host") if rec else None
            if att.job.last_attempt is att:
                move_job(s, att.job, state, None if rc == 0 else f"exit code {rc} (rerun by hand)",
                         operator_actor(), set_reason=True, attempt=att.number)
                if state is JobState.COMPLETED:
                    _release_dependents(s, att.job)
    return RerunResult(rc, script, adir, record)


def _release_dependents(s, job) -> None:  # noqa: ANN001 - Session, Job
    """The fixed job's dep_failed descendants are planned again: the next submit pass sends
    those whose parents are now all fine, and settles again any that still have another
    broken parent."""
    from sqlalchemy import select

    from .db.models import Job
    from .transitions import transition
    down = repo.descendants(s, [job.id])
    if not down:
        return
    waiting = s.scalars(select(Job.id).where(Job.id.in_(down),
                                             Job.state == JobState.DEP_FAILED.value)).all()
    transition(s, waiting, JobState.PLANNED, f"released: {job.key} completed by hand",
               operator_actor(), expect=[JobState.DEP_FAILED], values={"reason": None})


def _scratch_root(ctx: Context) -> Path:
    root = ctx.cfg.state_dir.resolve() / "rerun"
    root.mkdir(parents=True, exist_ok=True)
    return root
