"""`desinight graph NIGHT`: the night's job graph as SVG, coloured by state."""

from __future__ import annotations

import click


@click.command("graph")
@click.argument("night")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="SVG file to write (default: standard output).")
@click.option("--production", help="Another production of the same database.")
@click.pass_obj
def graph(obj, night: str, output: str | None, production: str | None) -> None:
    """Draw NIGHT's jobs and their dependencies (graphviz), each filled with its state's colour.

    \b
    Example:
      desinight graph 20261124 -o night-20261124.svg
    """
    from pathlib import Path

    from ..app import open_context
    from ..core.errors import NotFound
    from ..db import repo
    from ..db.engine import transaction
    from ..graph import night_graph, svg
    from .ops_cmds import _NoBackend, _night
    n = _night(night)
    ctx = open_context(obj.cfg.with_overrides(production=production), backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        data = night_graph(s, repo.get_production(s, ctx.production), n)
    if not data["jobs"]:
        raise NotFound(f"night {night} has no jobs in production {ctx.production}")
    text = svg(data)
    if output is None:
        click.echo(text, nl=False)
        return
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    click.echo(f"wrote {out} ({len(data['jobs'])} jobs, {len(data['edges'])} edges)")
