"""resubmit and cancel."""

from __future__ import annotations

import click

from ..core.errors import DesinightError


def _selection(target: str | None, job: str | None, night: str | None):
    """(target, job, night): TARGET (an EXPID, a night or a job, resolved against the database)
    or exactly one of --job / --night."""
    from .ops_cmds import _night
    if sum(x is not None for x in (target, job, night)) != 1:
        raise DesinightError("give exactly one of TARGET (EXPID, NIGHT or JOB), --job or --night")
    return target, job, _night(night) if night else None


@click.command()
@click.argument("target", required=False)
@click.option("--job", help="A job id or key instead of an exposure.")
@click.option("--night", help="Every failed job of this night (with --failed).")
@click.option("--failed", is_flag=True, help="With --night: the night's failed jobs.")
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--time", "time_minutes", type=click.IntRange(1, 7 * 24 * 60),
              help="Time limit in minutes for the new attempts (else learned / configured).")
@click.option("--mem", "mem_mb", type=click.IntRange(1), help="Memory in MB for the new attempts.")
@click.option("--qos", help="QOS for the new attempts.")
@click.option("--partition", help="Partition for the new attempts.")
@click.option("--force", is_flag=True, help="Re-run completed jobs too, and everything "
              "downstream of them.")
@click.option("--dry-run", is_flag=True, help="Print what would be resubmitted; change nothing.")
@click.option("--adopt", is_flag=True,
              help="Record completed, without running it, a job whose outputs all exist and "
                   "match the checksums recorded when they were written.")
@click.pass_obj
def resubmit(obj, target, job, night, failed, backend, time_minutes, mem_mb, qos, partition,
             force, dry_run, adopt) -> None:
    """Retry what failed for TARGET (an EXPID, a night or a job) and everything downstream,
    re-linking dependents.

    Only failed, timed-out, out-of-memory, node-failed, dep_failed or cancelled jobs are
    retried. Each gets a new attempt; dependents wait on the new ids. A job already tried
    `max_attempts` times (config, default 3) is refused.

    Each new attempt asks for the resources configured now (desinight.toml re-read), with
    1.5x the time after a TIMEOUT and 1.5x the memory after an OUT_OF_MEMORY, unless
    --time/--mem/--qos/--partition say otherwise; what changed is printed and kept in the
    job's history.

    With --force, completed jobs of TARGET are re-run as well, with everything downstream
    of them (refused while one of those is queued or running).

    \b
    Examples:
      desinight resubmit 26112403
      desinight resubmit 20261124/psfnight
      desinight resubmit --night 20261124 --failed
      desinight resubmit 20261124/redshift/1000 --time 90
      desinight resubmit 26112403 --force
    """
    from .. import orchestrate as O
    from ..app import open_context
    from ..retry import resubmit as do_resubmit
    if night and not (failed or force):
        raise DesinightError("--night needs --failed (resubmit only what failed) or --force")
    tgt, j, n = _selection(target, job, night)
    ctx = open_context(obj.cfg.with_overrides(backend=backend))
    res = do_resubmit(ctx, job=j, night=n, target=tgt,
                      overrides={"time_minutes": time_minutes, "mem_mb": mem_mb, "qos": qos,
                                 "partition": partition}, dry_run=dry_run, force=force)
    if dry_run:
        for key, why in res.refused.items():
            click.echo(f"would refuse {key}: {why}", err=True)
        for key, note in res.learned.items():
            click.echo(f"{key}: {note}")
        click.echo(f"dry run: would resubmit {len(res.replanned)} jobs: " + ", ".join(res.replanned))
        return
    O.reconcile(ctx, O.utc_now())
    ctx.adopt = adopt
    submitted = O.submit_ready(ctx, O.utc_now())
    for key, why in res.refused.items():
        click.echo(f"refused {key}: {why}", err=True)
    for key, note in res.learned.items():
        click.echo(f"{key}: {note}")
    click.echo(f"resubmitted {len(res.replanned)} jobs ({submitted} submitted now): "
               + ", ".join(res.replanned))
    if res.refused and not res.replanned:
        raise DesinightError("nothing resubmitted")


@click.command()
@click.argument("target", required=False)
@click.option("--job", help="A job id or key.")
@click.option("--night", help="Every queued job of this night.")
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--dry-run", is_flag=True, help="Print what would be cancelled; change nothing.")
@click.pass_obj
def cancel(obj, target, job, night, backend, dry_run) -> None:
    """Cancel TARGET (an EXPID, a night or a job): scancel what is queued or running, and
    everything downstream of it.

    \b
    Examples:
      desinight cancel 26112403
      desinight cancel 20261124
      desinight cancel 20261124/redshift/1000/26112404
    """
    from ..app import open_context
    from ..retry import cancel as do_cancel
    tgt, j, n = _selection(target, job, night)
    keys = do_cancel(open_context(obj.cfg.with_overrides(backend=backend)), job=j, night=n,
                     target=tgt, dry_run=dry_run)
    click.echo(("dry run: would cancel" if dry_run else "cancelled") + f" {len(keys)} jobs"
               + (": " + ", ".join(keys) if keys else ""))


@click.command()
@click.argument("job")
@click.option("--here", is_flag=True, help="Run it in this shell (required: rerun never submits).")
@click.option("--cameras", help="Only these cameras, e.g. b0 or a0 (re-renders the script).")
@click.option("--record", is_flag=True,
              help="Record the run as a new attempt (default: production state untouched).")
@click.pass_obj
def rerun(obj, job: str, here: bool, cameras: str | None, record: bool) -> None:
    """Rerun a job's stored script by hand, in this shell, to debug it.

    Output goes to the terminal; the exit record goes to a scratch directory under
    STATE_DIR/rerun unless --record. Use `resubmit` to retry through the batch system.

    \b
    Examples:
      desinight rerun 20261124/stdstars/1000 --here
      desinight rerun 42 --here --cameras b0
    """
    from ..app import open_context
    from ..rerun import rerun_here
    from .ops_cmds import _NoBackend
    if not here:
        raise DesinightError("rerun only runs here (--here); to retry in the batch system "
                             "use `desinight resubmit --job JOB`")
    res = rerun_here(open_context(obj.cfg, backend=_NoBackend()), job, cameras=cameras, record=record)
    click.echo(f"rerun of {job}: exit code {res.exit_code}; script {res.script}; "
               f"records in {res.attempt_dir}" + (" (recorded as a new attempt)" if res.recorded else ""),
               err=True)
    raise SystemExit(res.exit_code)


COMMANDS = [resubmit, cancel, rerun]
