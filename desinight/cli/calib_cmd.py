"""calib use / show: which night's calibrations a night's science uses (docs/operator-guide.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table


def _night(text: str) -> int:
    from ..calib_choice import night_date
    try:
        n = int(text)
        night_date(n)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a YYYYMMDD night") from None
    return n


@click.group()
def calib() -> None:
    """Choose a night's calibrations: psfnight and fiberflatnight always from one night.

    \b
    Example:
      desinight calib show 20261125
      desinight calib use 20261125 --from 20261124 --dry-run
      desinight calib use 20261125 --from 20261124
      desinight calib use 20261125 --from 20261124 --cameras b3,r3
      desinight calib use 20261125 --from 20261125 --cameras b3   (b3 back)
    """


@calib.command("use")
@click.argument("night")
@click.option("--from", "ref", required=True, help="Reference night (YYYYMMDD) whose psfnight "
              "and fiberflatnight the night's science uses.")
@click.option("--cameras", help="Only these cameras (a camera word: b3,r3 or a3 for every arm of "
              "spectrograph 3) take their calibrations from --from; the others keep theirs. "
              "--from NIGHT itself puts them back on the night's choice.")
@click.option("--reason", help="Why (kept with the choice, shown by `calib show`).")
@click.option("--dry-run", is_flag=True, help="Print what would be re-planned; change nothing.")
@click.pass_obj
def use_cmd(obj, night: str, ref: str, cameras: str | None, reason: str | None,
            dry_run: bool) -> None:
    """Take NIGHT's calibrations from night --from; re-plan its jobs not yet submitted."""
    from ..app import open_context
    from ..calib_choice import use
    from ..db import repo
    from ..db.engine import transaction
    from ..transitions import operator_actor
    from .ops_cmds import _NoBackend
    n, r = _night(night), _night(ref)
    cams = _cameras(cameras) if cameras is not None else None
    ctx = open_context(obj.cfg, backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        ch = use(s, ctx.cfg, prod, n, r, operator_actor(), dry_run=dry_run, reason=reason,
                 cameras=cams)
        if dry_run:
            s.rollback()
    head = "dry run: would re-plan" if dry_run else "re-planned"
    for line in ch.replanned:
        click.echo(f"{head} {line}")
    for line in ch.untouched:
        click.echo(f"not changed (already submitted or run; resubmit to redo): {line}")
    for line in ch.held:
        click.echo(f"still held: {line}")
    if not cams:
        what = f"night {n} {'would take' if dry_run else 'takes'} psfnight and fiberflatnight from {r}"
    else:
        from ..core.cameras import camera_word
        what = f"night {n} cameras {camera_word(cams)} {'would ' if dry_run else ''}" + (
            "go back to the night's choice" if r == n else
            f"take psfnight and fiberflatnight from {r}")
    click.echo(f"{what}: {len(ch.replanned)} jobs re-planned, {len(ch.untouched)} already "
               "submitted or run"
               + (" (dry run: nothing changed)" if dry_run else ""))


def _cameras(text: str) -> list[str]:
    from ..core.cameras import parse_cameras
    from ..core.errors import DesinightError
    try:
        cams = parse_cameras(text)
    except DesinightError as e:
        raise click.BadParameter(str(e), param_hint="--cameras") from None
    if not cams:
        raise click.BadParameter("no camera named, e.g. b3,r3", param_hint="--cameras")
    return cams


@calib.command("show")
@click.argument("night")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def show_cmd(obj, night: str, as_json: bool) -> None:
    """Where each camera's psfnight and fiberflatnight come from, and the held jobs."""
    from ..app import open_context
    from ..calib_choice import show
    from ..db import repo
    from ..db.engine import transaction
    from .ops_cmds import _NoBackend
    n = _night(night)
    ctx = open_context(obj.cfg, backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        data = show(s, ctx.cfg, repo.get_production(s, ctx.production), n)
    if as_json:
        click.echo(json.dumps(data, indent=1, sort_keys=True))
        return
    console = Console(width=160)
    c = data["choice"]
    console.print(f"night {n}: " + (f"calibrations from {c['from']}, {c['origin']}" if c and c["from"]
                                     else "no reference night chosen")
                  + (f" ({c['comment']})" if c and c["comment"] else ""))
    console.print(f"override file: {data['override_file']}"
                  + ("" if Path(data["override_file"]).is_file() else " (none)"))
    for cam, cc in data["camera_choices"].items():
        console.print(f"{cam}: calibrations from {cc['from']}, {cc['origin']}"
                      + (f" ({cc['comment']})" if cc["comment"] else ""))
    if c and (c["include_expids"] or c["exclude_expids"]):
        console.print(f"calibration exposures: include {c['include_expids'] or 'all'}, "
                      f"exclude {c['exclude_expids'] or 'none'}")
    t = Table(title_justify="left")
    for col in ("camera", "psfnight", "fiberflatnight", "source"):
        t.add_column(col, overflow="fold")
    for cam, v in data["cameras"].items():
        src = "held (below)" if v["source"].startswith("held: ") else v["source"]
        t.add_row(cam, str(v["psfnight"] or "-"), str(v["fiberflatnight"] or "-"), src)
    console.print(t)
    if data["science_calib_nights"]:
        console.print("planned science jobs use the calibrations of night "
                      + ", ".join(map(str, data["science_calib_nights"]))
                      + "".join(f"; {cam} from {', '.join(map(str, ns))}" for cam, ns in
                                data["science_calib_nights_by_camera"].items()))
    by_reason: dict[str, list[str]] = {}
    for h in data["held"]:
        by_reason.setdefault(h["reason"] or "", []).append(h["job"])
    for reason, jobs in by_reason.items():    # one reason, many jobs: said once
        console.print(f"held, {len(jobs)} jobs ({jobs[0]}{', ...' if len(jobs) > 1 else ''}): "
                      f"{reason}")


COMMANDS = [calib]
