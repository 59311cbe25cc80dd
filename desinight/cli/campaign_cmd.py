"""campaign plan / submit / run / status: reprocessing described by a manifest (docs/campaigns.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..core import kinds as K
from ..core.errors import BackendError, DesinightError, JobsFailed


@click.group()
def campaign() -> None:
    """Reprocess nights into a new production from a TOML manifest.

    \b
    Example:
      desinight campaign plan reproc.toml      # dry run: job counts, node-hours, what is done
      desinight campaign submit reproc.toml    # record the jobs (nothing reaches the queue yet)
      desinight campaign run reproc-2027a      # submit under the throttle until done
      desinight campaign status reproc-2027a
    """


def _open(obj, backend: str | None = None, need_backend: bool = False):
    from ..app import open_context
    from .ops_cmds import _NoBackend
    cfg = obj.cfg.with_overrides(backend=backend)
    return open_context(cfg, backend=None if need_backend else _NoBackend())


def _manifest(obj, path: str):
    """The manifest, parsed after the config: the config's kind_modules declare the kinds
    that its steps (by default every kind) and [kinds] sections may name."""
    from ..core.manifest import load_manifest
    _ = obj.cfg       # imports the config's kind_modules (the config is read lazily)
    return load_manifest(path)


def _print_preview(pv, console, title: str) -> None:
    from rich.table import Table
    s = pv.summary()
    console.print(f"[bold]{title} {s['campaign']}[/]: source {s['source']} -> {s['output']}")
    console.print(f"nights {s['nights']} ({s['first_night']}..{s['last_night']}), "
                  f"exposures {s['exposures']} ({s['new_exposures']} new), "
                  f"steps {', '.join(s['steps'])}, throttle {s['throttle']}")
    t = Table(title_justify="left")
    for col in ("kind", "new", "already planned", "completed"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for k in K.names():
        new, had = s["new_jobs"].get(k, 0), s["existing_jobs"].get(k, 0)
        if new or had:
            t.add_row(k, str(new), str(had), str(s["existing_completed"].get(k, 0)))
    t.add_row("[bold]total", f"[bold]{s['new_total']}", str(sum(s["existing_jobs"].values())),
              str(sum(s["existing_completed"].values())))
    console.print(t)
    click.echo(f"new jobs: {s['new_total']}; estimated {s['node_hours']} node-hours "
               f"(at most {s['node_hours_limit']} at the time limits)")
    if s["quarantined"]:
        console.print(f"[yellow]{s['quarantined']} exposures quarantined by the planner[/]")
    if s["new_total"] == 0 and s["exists"]:
        console.print("nothing new to plan: the campaign is already recorded")


@campaign.command("plan")
@click.argument("manifest", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@click.pass_obj
def plan_cmd(obj, manifest: str, as_json: bool) -> None:
    """Dry run: job counts per kind, node-hours estimate, what is already done. Writes nothing."""
    from .. import campaign as C
    from ..db.engine import transaction
    m = _manifest(obj, manifest)
    ctx = _open(obj)
    with transaction(ctx.sessions) as s:
        pv = C.preview(s, ctx.cfg, m, keep_jobs=False)   # reads only; counts, not objects
    if as_json:
        click.echo(json.dumps(pv.summary(), indent=1, sort_keys=True))
    else:
        from rich.console import Console
        _print_preview(pv, Console(), "campaign")


@campaign.command("submit")
@click.argument("manifest", type=click.Path(dir_okay=True))
@click.pass_obj
def submit_cmd(obj, manifest: str) -> None:
    """Record the campaign and its jobs; `campaign run` (or the daemon) submits them.

    Re-submitting the same manifest adds nothing; a widened selection adds only what is new.
    """
    from .. import campaign as C
    m = _manifest(obj, manifest)
    ctx = _open(obj)
    pv = C.enqueue(ctx.sessions, ctx.cfg, m)
    from rich.console import Console
    _print_preview(pv, Console(), "enqueued campaign")
    click.echo(f"next: desinight campaign run {m.name}")


def _bar(done: int, total: int, width: int = 40) -> str:
    filled = int(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled)


@campaign.command("run")
@click.argument("name")
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--timeout", type=float, help="Give up after this many seconds (jobs keep running).")
@click.option("--poll", "poll_s", type=float, default=5.0, show_default=True,
              help="Seconds between polls.")
@click.option("--once", is_flag=True, help="One poll + submit round, then exit.")
@click.option("--adopt", is_flag=True,
              help="Record completed, without running it, a job whose outputs all exist and "
                   "match the checksums recorded when they were written.")
@click.pass_obj
def run_cmd(obj, name: str, backend: str | None, timeout: float | None, poll_s: float,
            once: bool, adopt: bool) -> None:
    """Submit the campaign's jobs, never more than its throttle queued at once, until done.

    NAME is the campaign name (or its manifest file). A running `desinight daemon` does the
    same every `daemon.campaign_tick_s`; the two take turns (a lock per campaign round).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import campaign as C
    from .. import orchestrate as O
    from ..db.engine import transaction
    from ..service import campaign_lock
    name = _name(obj, name)
    base = _open(obj, backend, need_backend=True)
    ctx = C.campaign_context(base, name)
    ctx.adopt = adopt       # adopt.py: outputs already in the campaign's directory are trusted
    lock = campaign_lock(ctx.cfg, name)
    console = Console()
    deadline = None if timeout is None else time.monotonic() + timeout
    submitted = 0
    with Progress(TextColumn(f"[bold]campaign {name}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} jobs ended, {task.fields[queued]} queued"),
                  TimeElapsedColumn(), console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("jobs", total=None, queued=0)
        while True:
            lock.acquire(wait=True)     # the daemon's campaign round may be in its tick
            try:
                submitted += C.run_tick(ctx, O.utc_now())
            except BackendError as e:   # an outage: report, keep going
                console.print(f"[yellow]backend unavailable, retrying:[/] {e}")
            finally:
                lock.release()
            with transaction(ctx.sessions) as s:
                p = C.progress(s, name)
            bar.update(task, completed=p["ended"], total=p["jobs"], queued=p["queued"])
            if p["done"] or once:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise DesinightError(f"campaign {name} not finished after {timeout:.0f} s "
                                     f"(queued jobs keep running; `desinight campaign run {name}` "
                                     "again to go on)")
            time.sleep(poll_s)
    click.echo(f"campaign {name}: {submitted} jobs submitted; {p['completed']}/{p['jobs']} "
               f"completed, {p['failed']} failed, {p['held']} held, {p['queued']} queued")
    _raise_if_failed(p)


def _raise_if_failed(p: dict) -> None:
    """Exit code 5 when jobs failed: a script must not read success from a failed campaign."""
    if p["failed"]:
        raise JobsFailed(f"campaign {p['campaign']}: {p['failed']} jobs failed "
                         f"(desinight campaign status {p['campaign']})")


def _name(obj, text: str) -> str:
    """A campaign name, or a manifest file whose campaign.name is used."""
    p = Path(text)
    if p.suffix == ".toml" or p.is_file():
        return _manifest(obj, text).name
    return text


@campaign.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--failures", default=20, show_default=True, help="Failures to list.")
@click.pass_obj
def status_cmd(obj, name: str, as_json: bool, failures: int) -> None:
    """Progress of a campaign: a bar, counts per kind and state, and the failures.

    Per night and per job: `desinight status --production NAME --night N`.
    """
    from ..db.engine import transaction
    from ..db.stats import campaign_progress
    from .readctx import open_read
    name = _name(obj, name)
    ctx = open_read(obj.cfg)     # read only: no orchestrator, backend or planner to import
    with transaction(ctx.sessions) as s:
        p = campaign_progress(s, name, failures=failures)
    if as_json:
        click.echo(json.dumps(p, indent=1, sort_keys=True))
        _raise_if_failed(p)
        return
    from rich.console import Console
    from rich.table import Table

    from .status_cmd import GLYPH
    console = Console()
    pct = 100 * p["completed"] / p["jobs"] if p["jobs"] else 0.0
    console.print(f"[bold]campaign {p['campaign']}[/] (source {p['source']}, output {p['output']}, "
                  f"throttle {p['throttle']}): {p['nights']} nights, {p['exposures']} exposures")
    console.print(f"{_bar(p['completed'], p['jobs'])} {pct:5.1f}%  {p['completed']}/{p['jobs']} "
                  f"completed, {p['queued']} queued, {p['failed']} failed, {p['held']} held"
                  + ("  [green]done[/]" if p["done"] else ""))
    t = Table(title_justify="left")
    t.add_column("kind")
    t.add_column("jobs", justify="right")
    t.add_column("states")
    for kind, st in p["kinds"].items():
        t.add_row(kind, str(sum(st.values())),
                  " ".join(f"{GLYPH.get(k, k)}{k}:{v}" for k, v in sorted(st.items())))
    console.print(t)
    if p["failures"]:
        f = Table(title=f"failures (first {len(p['failures'])} of {p['failed']}; details: "
                        f"desinight status --production {name} --failed)", title_justify="left")
        for col in ("id", "job", "state", "reason"):
            f.add_column(col, overflow="fold")
        for x in p["failures"]:
            f.add_row(str(x["id"]), x["job"], f"[red]{x['state']}[/]", x["reason"] or "")
        console.print(f)
    _raise_if_failed(p)
