"""`desinight history NIGHT|EXPID|JOB`: every recorded state move, oldest first."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def history(obj, target: str, as_json: bool) -> None:
    """Every state move of TARGET (a night, an EXPID or a job key/id): when, from, to,
    why, who (daemon, operator:LOGIN, campaign:NAME) and on which host.

    \b
    Examples:
      desinight history 20261124
      desinight history 26112403
      desinight history 20261124/psfnight
    """
    from ..app import open_context
    from ..db import repo
    from ..db.engine import transaction
    from ..history import events
    from .ops_cmds import _NoBackend
    ctx = open_context(obj.cfg, backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        label, rows = events(s, repo.get_production(s, ctx.production), target)
    if as_json:
        click.echo(json.dumps({"schema": 1, "target": label, "events": rows}, indent=1))
        return
    click.echo(f"history of {label}: {len(rows)} moves")
    for e in rows:
        att = f"#{e['attempt']}" if e["attempt"] else "  "
        click.echo(f"{e['at'][:19]}  {e['what']:<34} {att:>3}  {e['from']:>13} -> {e['to']:<13} "
                   f"{e['actor']}@{e['host']}" + (f"  {e['reason']}" if e["reason"] else ""))


COMMANDS = [history]
