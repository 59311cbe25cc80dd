"""`desinight exposure EXPID`: mark cameras/amplifiers bad, set LASTSTEP, flag, comment."""

from __future__ import annotations

import click

from ..core.planner import LASTSTEPS


@click.command()
@click.argument("expid", type=int)
@click.option("--bad-cameras", help="Cameras to drop from its jobs that have not run "
              "(added to those already bad), e.g. b3 or b3,r3 or a3.")
@click.option("--bad-amps", help="Amplifiers masked in preproc (zero ivar), e.g. b7D,z8A.")
@click.option("--laststep", type=click.Choice(LASTSTEPS),
              help="ignore: dropped from everything; skysub: no flux calibration nor coadd; "
              "fluxcal: no coadd; all: everything.")
@click.option("--flag", type=click.Choice(["short", "low_sn", "aborted", "test", "corrupted"]),
              help="Record a flag on the exposure.")
@click.option("--comment", help="Why (kept with the edit, with your login and the time).")
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--dry-run", is_flag=True, help="Print what would be cancelled and re-planned; "
              "change nothing.")
@click.pass_obj
def exposure(obj, expid, bad_cameras, bad_amps, laststep, flag, comment, backend, dry_run) -> None:
    """Edit exposure EXPID and re-plan its jobs that have not run.

    Prints what changed and every job it cancels, re-plans or releases. Jobs that ended
    (failed...) are re-planned so that `desinight resubmit` runs them the new way; running
    jobs are left alone. `desinight show exposure EXPID` lists the edits.

    \b
    Examples:
      desinight exposure 26112403 --bad-cameras b3 --comment "b3 CCD noisy"
      desinight exposure 26112403 --laststep skysub --dry-run
    """
    from .. import orchestrate as O
    from ..app import open_context
    from ..exposure_edit import edit_exposure
    ctx = open_context(obj.cfg.with_overrides(backend=backend))
    res = edit_exposure(ctx, expid, bad_cameras=bad_cameras, bad_amps=bad_amps,
                        laststep=laststep, flag=flag, comment=comment, dry_run=dry_run)
    pre = "dry run: would " if dry_run else ""
    for name, (old, new) in res.changes.items():
        click.echo(f"exposure {expid}: {name} {old or '-'} -> {new or '-'}")
    if not res.changes:
        click.echo(f"exposure {expid}: no change" + (" (comment recorded)" if comment and not dry_run else ""))
    for what, keys in (("cancel", res.cancelled), ("re-plan", res.replanned),
                       ("release", res.released)):
        verb = what if dry_run else {"cancel": "cancelled", "re-plan": "re-planned",
                                     "release": "released"}[what]
        click.echo(f"{pre}{verb} {len(keys)} jobs" + (": " + ", ".join(keys) if keys else ""))
    if res.completed:
        click.echo(f"{len(res.completed)} of them had completed; `desinight resubmit --force` "
                   "runs them again the new way: " + ", ".join(sorted(res.completed)))
    for key in res.left_running:
        click.echo(f"{key} is running: left alone (resubmit it when it ends)")
    if not dry_run:
        O.reconcile(ctx, O.utc_now())
        n = O.submit_ready(ctx, O.utc_now())
        click.echo(f"{n} jobs submitted now")


COMMANDS = [exposure]
