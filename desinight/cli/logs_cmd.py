"""`desinight logs JOB`: a job attempt's log, optionally followed while the job runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..core.errors import DesinightError, NotFound

#: seconds between looks at a followed log (and at the attempt's state in the database)
FOLLOW_EVERY_S = 0.5


def _attempt(ctx, ident: str, number: int | None):
    from ..db import repo
    from ..db.engine import transaction
    with transaction(ctx.sessions) as s:
        job = repo.get_job(s, repo.get_production(s, ctx.production), ident)
        atts = sorted(job.attempts, key=lambda a: a.number)
        if not atts:
            raise NotFound(f"job {job.key} has no attempt yet (state {job.state})")
        if number is None:
            return job.key, atts[-1]
        for a in atts:
            if a.number == number:
                return job.key, a
        raise NotFound(f"job {job.key} has attempts {', '.join(str(a.number) for a in atts)}, "
                       f"not {number}")


def _terminal(ctx, attempt_id: int) -> bool:
    """Over when the database says so, or when the job's exit record is there (nothing may
    be polling: no daemon running)."""
    from ..batch.exitfile import EXIT_FILE
    from ..core.states import ACTIVE, JobState
    from ..db.engine import transaction
    from ..db.models import Attempt
    with transaction(ctx.sessions) as s:
        att = s.get(Attempt, attempt_id)
        return (JobState(att.state) not in ACTIVE
                or bool(att.attempt_dir) and (Path(att.attempt_dir) / EXIT_FILE).is_file())


def _tail(path: Path, lines: int | None) -> int:
    """Print the last ``lines`` lines (all when None); returns the offset reached."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.splitlines(keepends=True)
    out = text if lines is None else text[-lines:] if lines > 0 else []
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.flush()
    return len(data)


@click.command()
@click.argument("job")
@click.option("--attempt", "number", type=int, help="Attempt number (default: the latest).")
@click.option("-n", "--lines", type=int, default=None, help="Only the last N lines.")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing as the job writes, until its attempt ends (or Ctrl-C).")
@click.pass_obj
def logs(obj, job: str, number: int | None, lines: int | None, follow: bool) -> None:
    """Print a job's log (its latest attempt, or --attempt N).

    \b
    Examples:
      desinight logs 20261124/psfnight
      desinight logs 12 --attempt 1 -n 50
      desinight logs 20261124/redshift/1000 -f
    """
    from ..app import open_context
    from .ops_cmds import _NoBackend
    ctx = open_context(obj.cfg, backend=_NoBackend())
    key, att = _attempt(ctx, job, number)
    path = Path(att.log_path) if att.log_path else None
    if path is None:
        raise NotFound(f"attempt {att.number} of {key} records no log path")
    click.echo(f"# {key} attempt {att.number} ({att.state}): {path}", err=True)
    if not follow:
        if not path.is_file():
            raise NotFound(f"no log yet at {path} (attempt {att.number} is {att.state})")
        _tail(path, lines)
        return
    _follow(ctx, att.id, path, lines)


def _follow(ctx, attempt_id: int, path: Path, lines: int | None) -> None:
    """Like ``tail -f``, ending by itself once the attempt is over and its log drained."""
    offset = 0
    try:
        while not path.is_file():          # queued: the job has not started writing
            if _terminal(ctx, attempt_id):
                raise NotFound(f"attempt ended without writing {path}")
            time.sleep(FOLLOW_EVERY_S)
        offset = _tail(path, lines)
        while True:
            done = _terminal(ctx, attempt_id)
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                offset += len(chunk)
            elif done:
                return
            else:
                time.sleep(FOLLOW_EVERY_S)
    except KeyboardInterrupt:
        return
    except OSError as e:
        raise DesinightError(f"cannot read {path}: {e.strerror}") from None


COMMANDS = [logs]
