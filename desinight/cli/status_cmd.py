"""status and show: the state of everything, one command away."""

from __future__ import annotations

import json

import click

from ..core.errors import DesinightError

GLYPH = {"completed": "[green]✔[/]", "running": "[cyan]▶[/]", "pending": "[yellow]…[/]",
         "submitted": "[yellow]↑[/]", "planned": "[dim]·[/]", "held": "[magenta]H[/]",
         "failed": "[red]✘[/]", "timeout": "[red]T[/]", "out_of_memory": "[red]M[/]",
         "cancelled": "[red]C[/]", "node_fail": "[red]N[/]", "dep_failed": "[red]↯[/]",
         "unknown": "[red]?[/]"}
#: the exposure's progress (status.exposure_progress) as the table shows it
PROGRESS_STYLE = {"done": "[green]{}[/]", "processing": "[cyan]{}[/]", "failed": "[red]{}[/]",
                  "held": "[magenta]{}[/]", "quarantined": "[red]{}[/]", "waiting": "[dim]{}[/]"}


#: nights in the table by default: the latest, with one line for the others
TABLE_NIGHTS = 7


def print_status(ctx, night: int | None = None, expid: int | None = None,
                 console=None, **kw) -> dict:
    from rich.console import Console     # rich only when printing (not for --json)
    console = console or Console()
    if not kw.get("night_range"):        # a range is the operator's choice: all of it
        kw.setdefault("recent", TABLE_NIGHTS)
    data = status_data(ctx, night=night, expid=expid, **kw)
    render(data, console, rows=kw.get("recent") or TABLE_NIGHTS)
    return data


def status_data(ctx, **kw) -> dict:
    from .. import status as S
    from ..db import repo
    from ..db.engine import transaction
    kw.setdefault("stale_s", ctx.cfg.heartbeat_stale_s)
    with transaction(ctx.sessions) as s:
        data = S.collect(s, repo.get_production(s, ctx.production), **kw)
    data["health"]["backend"] = ctx.cfg.backend   # whose states "states_as_of" dates
    return data


def to_json(data: dict) -> str:
    """The document with each top-level key, and each item of a top-level list, on a line of
    its own: as greppable as ``indent=1`` but written by json's C encoder, which ``indent``
    turns off (that pure-Python path took longer than the query for 10,000 nights)."""
    def value(v) -> str:
        if isinstance(v, list) and v:
            return "[\n  " + ",\n  ".join(json.dumps(x, sort_keys=True) for x in v) + "\n ]"
        return json.dumps(v, sort_keys=True)
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in sorted(data.items())) + "\n}"


def render(data: dict, console, rows: int = TABLE_NIGHTS) -> None:
    from rich.table import Table

    from ..core import kinds as K
    short = K.view("short")      # each kind's label in the steps column (core/kinds.py)
    nights = Table(title=f"production {data['production']}", title_justify="left")
    for col in ("night", "exposures", "jobs"):
        nights.add_column(col, no_wrap=col == "night")
    older = data["nights"][:-rows]
    for n in data["nights"][-rows:]:
        exps = " ".join(f"{k}:{v}" for k, v in sorted(n["exposures"].items()))
        jobs = " ".join(f"{GLYPH.get(k, k)}{k}:{v}" for k, v in sorted(n["jobs"].items()))
        nights.add_row(str(n["night"]) + (" closed" if n["closed"] else ""), exps, jobs)
    if data.get("earlier") or older:
        nights.add_row(*_earlier_row(data.get("earlier"), older))
    console.print(nights)
    if data["night"] is None and not data["range"]:
        console.print("no nights yet")
        _render_unfinished(data, console)
        console.print(f"daemon: {_daemon(data['health'])}")
        return
    t = Table(title=f"night {data['night']}", title_justify="left")
    for col in ("EXPID", "OBSTYPE", "TILE", "cams", "status", "steps"):
        t.add_column(col, no_wrap=col != "steps")
    for e in data["exposures"]:
        cams = _word(e["cameras"]) + (f" -{_word(e['bad_cameras'])}" if e["bad_cameras"] else "")
        status = PROGRESS_STYLE.get(e["progress"], "{}").format(e["progress"])
        if e.get("laststep", "all") != "all":   # an edit or a [laststep] rule stops it early
            status += f" (to {e['laststep']})"
        steps = " ".join(f"{short[k]}{GLYPH.get(e['jobs'][k], '?')}" for k in K.names()
                         if k in e["jobs"])
        t.add_row(str(e["expid"]), e["obstype"], "" if e["tileid"] is None else str(e["tileid"]),
                  cams, status, steps)
    if data["exposures"]:
        console.print(t)
    if data["failures"]:
        f = Table(title="failures (details: desinight show job ID)", title_justify="left")
        for col in ("id", "what", "state", "reason"):
            f.add_column(col, overflow="fold", no_wrap=col in ("id", "state"))
        for x in data["failures"][:200]:
            what = x.get("job") or (f"exposure {x['exposure']}" if "exposure" in x else x.get("path"))
            f.add_row(str(x.get("id", "")), str(what), f"[red]{x['state']}[/]", x.get("reason") or "")
        if len(data["failures"]) > 200:
            f.add_row("", f"... {len(data['failures']) - 200} more (--json for all)", "", "")
        console.print(f)
    _render_unfinished(data, console)
    h = data["health"]
    counts: dict[str, int] = {}
    for n in data["nights"]:
        if data["range"] or n["night"] == data["night"]:
            for state, c in n["jobs"].items():
                counts[state] = counts.get(state, 0) + c
    console.print("jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    console.print(f"daemon: {_daemon(h)} | {_freshness(h)} | last poll {_ago(h['last_poll'])} | "
                  f"last ingest {_ago(h['last_ingest'])} | "
                  + (f"[red]backend: {h['backend_error']}[/]" if h["backend_error"] else "backend ok")
                  + (f" | [red]daemon error: {h['tick_error']}[/]" if h.get("tick_error") else ""))


def _earlier_row(earlier: dict | None, older: list[dict]) -> tuple[str, str, str]:
    """One line for the nights the table leaves out: how many, and the jobs an operator
    would act on (failed, held, queued: docs/operator-guide.md "Many nights")."""
    n = len(older) + (earlier["nights"] if earlier else 0)
    jobs: dict[str, int] = dict(earlier["jobs"]) if earlier else {}
    for night in older:
        for k, v in night["jobs"].items():
            jobs[k] = jobs.get(k, 0) + v
    return (f"{n} earlier", "(--nights N, --json)",
            " ".join(f"{GLYPH.get(k, k)}{k}:{v}" for k, v in sorted(jobs.items())) or "-")


def _freshness(h: dict) -> str:
    """How old the job states shown are: the batch system's last answer to the daemon's poll
    (production polls SLURM every 30-60 s, docs/daemon.md "SLURM load budget")."""
    name = {"slurm": "SLURM"}.get(h.get("backend") or "", h.get("backend") or "backend")
    age = h.get("states_age_s")
    if age is None:
        return f"{name} states never polled"
    when = (f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200
            else f"{age / 3600:.1f} h")
    return f"{name} states as of {when} ago"


def _render_unfinished(data: dict, console) -> None:
    """Directories seen in the raw tree but not ingested, with why: nothing stays invisible."""
    from rich.table import Table
    rows = data.get("unfinished") or []
    if not rows:
        return
    u = Table(title="seen but not ingested", title_justify="left")
    for col in ("path", "why", "since"):
        u.add_column(col, overflow="fold", no_wrap=col == "since")
    for r in rows[:200]:
        why = (f"incomplete for {r['minutes']} min ({r['reason']})" if r["kind"] == "incomplete"
               else f"{r['kind']}: {r['reason']}")
        u.add_row(r["path"], why, f"{r['minutes']} min")
    if len(rows) > 200:
        u.add_row(f"... {len(rows) - 200} more (--json for all)", "", "")
    console.print(u)


def _daemon(h: dict) -> str:
    """The daemon's liveness (heartbeat + pid), red when it is not running."""
    return h["daemon"] if h.get("daemon_running") else f"[red]{h['daemon']}[/]"


def _word(cams: str) -> str:
    from ..core.cameras import camera_word
    try:
        return camera_word(cams.split(",")) if cams else ""
    except Exception:  # noqa: BLE001 - show what is stored rather than fail the view
        return cams


def _ago(iso: str | None) -> str:
    if not iso:
        return "never"
    from datetime import datetime, timezone
    secs = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    return (f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}min ago" if secs < 7200
            else f"{secs / 3600:.1f}h ago")


def _require_night(ctx, night: int) -> None:
    """A night the production has never seen is an error (exit 3), not an empty table."""
    from sqlalchemy import select

    from ..core.errors import NotFound
    from ..db import repo
    from ..db.engine import transaction
    from ..db.models import Night
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        if s.scalar(select(Night.night).where(Night.production_id == prod.id,
                                              Night.night == night)) is not None:
            return
        known = s.scalars(select(Night.night).where(Night.production_id == prod.id)).all()
    if night not in known:
        near = sorted(known, key=lambda n: abs(n - night))[:3]
        raise NotFound(f"night {night} is not in production {ctx.production}"
                       + (f" (nearest: {', '.join(map(str, sorted(near)))})" if near else " (no nights yet)"))


def _range(text: str) -> tuple[int, int]:
    from .readctx import parse_night as _night
    lo, sep, hi = text.partition(":")
    if not sep:
        raise DesinightError(f"--range must look like YYYYMMDD:YYYYMMDD, got {text!r}")
    a, b = _night(lo), _night(hi)
    return (a, b) if a <= b else (b, a)


@click.command()
@click.option("--night", help="Night YYYYMMDD (default: the latest).")
@click.option("--range", "night_range", help="Nights FIRST:LAST, summarised, with all their failures.")
@click.option("--expid", type=int, help="Only this exposure (and its night).")
@click.option("--failed", is_flag=True, help="Only what failed, is held or quarantined.")
@click.option("--production", help="Another production of the same database (e.g. a campaign).")
@click.option("--watch", type=float, is_flag=False, flag_value=5.0, default=None,
              help="Refresh every N seconds (default 5) until Ctrl-C.")
@click.option("--nights", "recent", type=click.IntRange(min=1), default=None,
              help="List the N latest nights, one line for the others (default: 7 in the "
              "table; every night with --json or --range).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (docs/status-json.md).")
@click.pass_obj
def status(obj, night: str | None, night_range: str | None, expid: int | None, failed: bool,
           production: str | None, watch: float | None, recent: int | None, as_json: bool) -> None:
    """Nights, exposures, jobs and failures at a glance.

    \b
    Examples:
      desinight status
      desinight status --night 20261124 --failed
      desinight status --range 20261101:20261130 --json | jq '.failures'
      desinight status --nights 30
      desinight status --watch
    """
    from .readctx import open_read
    from .readctx import parse_night as _night
    ctx = open_read(obj.cfg.with_overrides(production=production))
    kw = dict(night=_night(night) if night else None, expid=expid, failed_only=failed,
              night_range=_range(night_range) if night_range else None)
    if recent is not None:
        kw["recent"] = recent
    if kw["night"] is not None:
        _require_night(ctx, kw["night"])
    if as_json:
        click.echo(to_json(status_data(ctx, **kw)))
        return
    if watch is None:
        print_status(ctx, **kw)
        return
    if not kw["night_range"]:
        kw.setdefault("recent", TABLE_NIGHTS)
    _watch(ctx, kw, max(0.5, watch))


def _watch(ctx, kw: dict, every: float) -> None:
    """Redraw in place with rich's Live until Ctrl-C. Each frame is rendered into an
    off-screen recording console (to a string buffer, not `capture()`, which would empty the
    record before export) and handed to Live as one renderable."""
    import io
    import time
    from datetime import datetime

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text
    console = Console()
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        try:
            while True:
                frame = Console(record=True, file=io.StringIO(), width=console.width,
                                force_terminal=True, color_system=console.color_system or "standard")
                render(status_data(ctx, **kw), frame, rows=kw.get("recent") or TABLE_NIGHTS)
                frame.print(f"[dim]refreshed {datetime.now():%H:%M:%S}, every {every:g} s; "
                            "Ctrl-C to stop[/]")
                live.update(Text.from_ansi(frame.export_text(styles=True)), refresh=True)
                time.sleep(every)
        except KeyboardInterrupt:
            pass


@click.group()
def show() -> None:
    """Everything about one job, exposure or night."""


@show.command("job")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True)
@click.option("--lines", default=15, show_default=True, help="Log lines to show.")
@click.pass_obj
def show_job(obj, ident: str, as_json: bool, lines: int) -> None:
    """A job by id or key: inputs, attempts (backend ids, states, script, log).

    \b
    Example:
      desinight show job 20261124/psfnight
    """
    from ..app import open_context
    from ..db import repo
    from ..db.engine import transaction
    from ..history import job_events
    from .ops_cmds import _NoBackend
    ctx = open_context(obj.cfg, backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        job = repo.get_job(s, prod, ident)
        parents = repo.parents_of(s, [job.id])[job.id]
        data = {
            "schema": 1, "id": job.id, "key": job.key, "kind": job.kind, "night": job.night,
            "tileid": job.tileid, "cameras": job.cameras, "expids": job.expids,
            "state": job.state, "reason": job.reason, "hold_reason": job.hold_reason,
            "calib_night": job.calib_night, "calib_nights": job.calib_nights,
            "resources": job.resources,
            "parents": [{"id": p.id, "key": p.key, "state": p.state} for p in parents],
            "attempts": [{
                "number": a.number, "backend": a.backend, "backend_id": a.backend_id,
                "state": a.state, "exit_code": a.exit_code, "reason": a.reason, "node": a.node,
                "depends_on": a.depends_on.split(",") if a.depends_on else [],
                "submitted_at": a.submitted_at and a.submitted_at.isoformat(),
                "started_at": a.started_at and a.started_at.isoformat(),
                "ended_at": a.ended_at and a.ended_at.isoformat(),
                "script": a.script_path, "command": a.command, "log": a.log_path,
                "attempt_dir": a.attempt_dir} for a in job.attempts],
            "events": job_events(s, job)}
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    from rich.console import Console
    console = Console()
    console.print(f"[bold]job {data['id']}[/] {data['key']}  kind={data['kind']} "
                  f"state={GLYPH.get(data['state'], '')} {data['state']}")
    console.print(f"exposures {data['expids']}  cameras {data['cameras']}  tile {data['tileid']}"
                  + (f"  calibrations from night {data['calib_night']}" if data["calib_night"] else ""))
    if data["calib_nights"]:     # `calib use --cameras`
        console.print(f"calibrations per camera: {data['calib_nights']}")
    if data["reason"] or data["hold_reason"]:
        console.print(f"[red]reason:[/] {data['reason'] or data['hold_reason']}")
    for p in data["parents"]:
        console.print(f"  after {p['key']} ({p['state']})")
    def moves(number: int | None) -> None:
        for e in data["events"]:
            if e["attempt"] == number:
                console.print(f"  {e['at'][:19]} {e['from']} -> {e['to']} by {e['actor']}@{e['host']}"
                              + (f": {e['reason']}" if e["reason"] else ""), markup=False,
                              highlight=False)
    if any(e["attempt"] is None for e in data["events"]):
        console.print("[bold]before any attempt[/]")
        moves(None)
    for a in data["attempts"]:
        console.print(f"[bold]attempt {a['number']}[/] {a['backend']} id={a['backend_id']} "
                      f"state={a['state']} exit={a['exit_code']} node={a['node']} "
                      f"afterok={','.join(a['depends_on']) or '-'}")
        console.print(f"  submitted {a['submitted_at']} started {a['started_at']} ended {a['ended_at']}")
        if a["reason"]:
            console.print(f"  reason: {a['reason']}")
        console.print(f"  script:  {a['script']}\n  command: {a['command']}\n  log:     {a['log']}",
                      markup=False, highlight=False)
        moves(a["number"])
    if data["attempts"]:
        tail = _tail(data["attempts"][-1]["log"], lines)
        if tail:
            console.print(f"[bold]last {len(tail)} lines of the log[/]")
            console.print("\n".join(tail), markup=False, highlight=False)
        console.print(f"rerun by hand: DESINIGHT_ATTEMPT_DIR=$(mktemp -d) bash "
                      f"{data['attempts'][-1]['script']}", markup=False, highlight=False)


def _tail(path: str | None, n: int) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64_000))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []


@show.command("exposure")
@click.argument("expid", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show_exposure(obj, expid: int, as_json: bool) -> None:
    """One exposure: header values, raw file, status, and every job that covers it.

    \b
    Example:
      desinight show exposure 26112403
    """
    from sqlalchemy import select

    from ..app import open_context
    from ..db import repo
    from ..db.engine import transaction
    from ..db.models import Job, JobExposure
    from ..exposure_edit import edits_of
    from .ops_cmds import _NoBackend
    ctx = open_context(obj.cfg, backend=_NoBackend())
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        e = repo.get_exposure(s, prod, expid)
        jobs = s.scalars(select(Job).join(JobExposure).where(
            Job.production_id == prod.id, JobExposure.expid == expid).order_by(Job.id)).all()
        data = {"schema": 1, "expid": e.expid, "night": e.night, "obstype": e.obstype,
                "tileid": e.tileid, "exptime": e.exptime, "program": e.program,
                "seqnum": e.seqnum, "seqtot": e.seqtot, "cameras": e.cameras,
                "bad_cameras": e.bad_cameras, "raw_path": e.raw_path, "status": e.status,
                "laststep": e.laststep, "laststep_reason": e.laststep_reason,
                "bad_amps": e.bad_amps, "flags": e.flags,
                "edits": [{"at": x.at.isoformat(), "actor": x.actor, "comment": x.comment,
                           "changes": x.changes, "effects": x.effects}
                          for x in edits_of(s, e)],
                "reason": e.quarantine_reason,
                "arrived_at": e.arrived_at and e.arrived_at.isoformat(),
                "ingested_at": e.ingested_at and e.ingested_at.isoformat(),
                "jobs": [{"id": j.id, "key": j.key, "kind": j.kind, "state": j.state,
                          "reason": j.reason or j.hold_reason, "attempts": len(j.attempts),
                          "backend_id": j.last_attempt.backend_id if j.last_attempt else None,
                          "log": j.last_attempt.log_path if j.last_attempt else None}
                         for j in jobs]}
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(f"[bold]exposure {e.expid}[/] night {e.night} {e.obstype} tile {e.tileid} "
                  f"exptime {e.exptime} program {e.program} seq {e.seqnum}/{e.seqtot}")
    console.print(f"cameras {_word(e.cameras)}" + (f"  bad {_word(e.bad_cameras)}" if e.bad_cameras else ""))
    console.print(f"raw {e.raw_path}", markup=False, highlight=False)
    console.print(f"status {e.status}" + (f"  [red]{e.quarantine_reason}[/]" if e.quarantine_reason else ""))
    extra = [f"laststep {e.laststep}" + (f" ({e.laststep_reason})" if e.laststep_reason else "")]
    extra += [f"bad amps {e.bad_amps}"] if e.bad_amps else []
    extra += [f"flags {e.flags}"] if e.flags else []
    console.print("  ".join(extra), markup=False, highlight=False)
    for x in data["edits"]:
        what = ", ".join(f"{k} {o or '-'} -> {n or '-'}" for k, (o, n) in x["changes"].items())
        console.print(f"edit {x['at'][:19]} by {x['actor']}: {what or 'no change'}"
                      + (f" -- {x['comment']}" if x["comment"] else ""), markup=False, highlight=False)
    t = Table()
    for col in ("id", "job", "state", "attempts", "backend id", "reason"):
        t.add_column(col, overflow="fold")
    for j in data["jobs"]:
        t.add_row(str(j["id"]), j["key"], f"{GLYPH.get(j['state'], '')} {j['state']}",
                  str(j["attempts"]), j["backend_id"] or "", j["reason"] or "")
    console.print(t)


@show.command("night")
@click.argument("night")
@click.pass_obj
def show_night(obj, night: str) -> None:
    """One night: all its exposures, jobs and failures."""
    from ..app import open_context
    from .ops_cmds import _NoBackend, _night
    ctx = open_context(obj.cfg, backend=_NoBackend())
    _require_night(ctx, _night(night))
    print_status(ctx, night=_night(night))


@click.command()
@click.argument("night")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="HTML file to write (one self-contained file).")
@click.option("--production", help="Another production of the same database.")
@click.pass_obj
def report(obj, night: str, output: str, production: str | None) -> None:
    """Write a static HTML page for a night: exposures, job timeline, failures.

    \b
    Example:
      desinight report 20261124 -o night-20261124.html
    """
    from pathlib import Path

    from ..app import open_context
    from ..report import render_html
    from .ops_cmds import _NoBackend, _night
    ctx = open_context(obj.cfg.with_overrides(production=production), backend=_NoBackend())
    data = status_data(ctx, night=_night(night))
    data["attempts"] = night_attempts_data(ctx, _night(night))
    data["graph_svg"] = night_graph_svg(ctx, _night(night))
    if not data["exposures"] and not data["jobs"]:
        raise DesinightError(f"night {night} has no exposures in production {ctx.production}")
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_html(data))
    tmp.replace(out)
    click.echo(f"wrote {out} ({len(data['jobs'])} jobs, {len(data['failures'])} failures)")


def night_attempts_data(ctx, night: int) -> list[dict]:
    from ..db import repo
    from ..db.engine import transaction
    from ..history import night_attempts
    with transaction(ctx.sessions) as s:
        return night_attempts(s, repo.get_production(s, ctx.production), night)


def night_graph_svg(ctx, night: int) -> str | None:
    """The job graph for the report; None (a note instead) when graphviz is not installed."""
    from ..db import repo
    from ..db.engine import transaction
    from ..graph import inline_svg, night_graph
    with transaction(ctx.sessions) as s:
        data = night_graph(s, repo.get_production(s, ctx.production), night)
    try:
        return inline_svg(data) if data["jobs"] else None
    except DesinightError:
        return None


COMMANDS = [status, show, report]
