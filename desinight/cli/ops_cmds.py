"""init, ingest and demo: setting up a production and processing a night in one go."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from ..core.errors import BackendError, DesinightError, JobsFailed
from .readctx import parse_night as _night


@click.command()
@click.option("--production", help="Production name (default: config, $SPECPROD, 'daily').")
@click.option("--db-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db.")
@click.pass_obj
def init(obj, production: str | None, db_url: str | None) -> None:
    """Create the database (or upgrade its schema) and the production.

    \b
    Example:
      desinight init --production daily
    """
    from ..app import open_context
    from ..db import repo
    from ..db.engine import transaction
    cfg = obj.cfg.with_overrides(production=production, db_url=db_url)
    ctx = open_context(cfg, backend=_NoBackend(), create=True)
    with transaction(ctx.sessions) as s:
        prod, created = repo.ensure_production(s, cfg.production, str(cfg.raw_root.resolve()),
                                               str(cfg.prod_dir.resolve()))
    cfg.prod_dir.mkdir(parents=True, exist_ok=True)
    click.echo(f"{'created' if created else 'found'} production {cfg.production}: "
               f"raw {cfg.raw_root.resolve()}, outputs {cfg.prod_dir.resolve()}")


class _NoBackend:
    """init needs no batch system."""

    name = "none"


def process_night(ctx, night: int, wait: bool, closed: bool, timeout: float | None,
                  console: Console, poll_s: float = 1.0,
                  problems: list[tuple[str, str]] | None = None) -> dict:
    """Scan + plan + submit a night; with ``wait``, poll until every job has ended."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import orchestrate as O
    from ..ingest import ingest_night
    now = O.utc_now()
    counts = ingest_night(ctx, night, now, problems=problems)
    O.plan(ctx, night, closed=closed)
    O.reconcile(ctx, now)
    submitted = O.submit_ready(ctx, now)
    if not wait:
        return {"ingest": counts, "submitted": submitted}
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(TextColumn("[bold]night {task.fields[night]}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} jobs ended"), TimeElapsedColumn(),
                  console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task("jobs", total=None, night=night)
        while True:
            now = O.utc_now()
            O.poll(ctx, now)
            try:
                O.reconcile(ctx, now)
                submitted += O.submit_ready(ctx, now)
            except BackendError as e:   # an outage while waiting: report, keep waiting
                console.print(f"[yellow]backend unavailable, retrying:[/] {e}")
            done, total = _progress(ctx, night)
            bar.update(task, completed=done, total=total)
            if O.night_done(ctx, night):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise DesinightError(f"night {night} not finished after {timeout:.0f} s "
                                     "(jobs keep running; see `desinight status`)")
            time.sleep(poll_s)
    return {"ingest": counts, "submitted": submitted}


def _progress(ctx, night: int) -> tuple[int, int]:
    from sqlalchemy import func, select

    from ..core.states import FINAL
    from ..db import repo
    from ..db.engine import transaction
    from ..db.models import Job
    with transaction(ctx.sessions) as s:
        prod = repo.get_production(s, ctx.production)
        rows = dict(s.execute(select(Job.state, func.count()).where(
            Job.production_id == prod.id, Job.night == night).group_by(Job.state)).all())
    total = sum(rows.values())
    return sum(v for k, v in rows.items() if k in {st.value for st in FINAL}), total


@click.command()
@click.argument("night")
@click.option("--wait/--no-wait", default=False, help="Stay until every job of the night has ended; "
              "exit code 5 if any of them did not complete.")
@click.option("--open", "still_open", is_flag=True,
              help="More data may come: do not plan end-of-night work yet.")
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds.")
@click.option("--adopt", is_flag=True,
              help="Record completed, without running it, a job whose outputs all exist and "
                   "match the checksums recorded when they were written.")
@click.option("--dry-run", is_flag=True, help="Print the exposures it would ingest and the jobs "
              "it would plan and submit; change nothing.")
@click.pass_obj
def ingest(obj, night: str, wait: bool, still_open: bool, backend: str | None,
           timeout: float | None, adopt: bool, dry_run: bool) -> None:
    """Scan a night's raw data once, plan its jobs and submit them.

    \b
    Example:
      desinight ingest 20261124 --wait
      desinight ingest 20261124 --dry-run
    """
    from ..app import open_context
    from .status_cmd import print_status
    n = _night(night)
    cfg = obj.cfg.with_overrides(backend=backend)
    ctx = open_context(cfg)
    ctx.adopt = adopt
    if dry_run:
        _ingest_dry_run(ctx, n, closed=not still_open)
        return
    console = Console()
    problems: list[tuple[str, str]] = []
    out = process_night(ctx, n, wait, closed=not still_open, timeout=timeout, console=console,
                        problems=problems)
    ing = out["ingest"]
    click.echo(f"night {n}: {ing.get('ingested', 0)} exposures ingested, "
               f"{ing.get('quarantined', 0)} quarantined, {ing.get('rejected', 0)} rejected, "
               f"{ing.get('incomplete', 0)} incomplete; {out['submitted']} jobs submitted")
    if wait:
        data = print_status(ctx, night=n, console=console)
    # One line per bad exposure or odd directory; the good ones are recorded regardless.
    for _, line in problems:
        click.echo("desinight: ingest: " + " ".join(line.split()), err=True)
    if wait:
        _raise_if_failed(data, f"night {n}", f"desinight status --night {n} --failed")
    # With --open an exposure still in transfer is expected; anything else is bad data.
    if any(kind != "incomplete" or not still_open for kind, _ in problems):
        raise SystemExit(BAD_DATA_EXIT)


def _ingest_dry_run(ctx, night: int, closed: bool) -> None:
    from ..dryrun import ingest_preview
    p = ingest_preview(ctx, night, closed)
    click.echo(f"dry run: night {night}: would ingest {len(p['exposures'])} exposures"
               + "".join(f"\n  {e} {t} {st}" + (f" (laststep {ls})" if ls != "all" else "")
                         for e, t, st, ls in p["exposures"]))
    click.echo(f"dry run: would plan {len(p['jobs'])} jobs"
               + "".join(f"\n  {k} {st}" + (f" ({why})" if why else "") for k, st, why in p["jobs"]))
    click.echo(f"dry run: would submit {len(p['submit'])} jobs now")
    for line in p["problems"]:
        click.echo("desinight: ingest: " + " ".join(line.split()), err=True)


def _raise_if_failed(data: dict, what: str, look: str) -> None:
    """Exit code 5 (JobsFailed) when jobs of the night did not complete: scripts and cron
    must not read success from a night that failed."""
    failed = [f for f in data["failures"] if f["kind"] not in ("exposure", "file")]
    if failed:
        raise JobsFailed(f"{what}: {len(failed)} job(s) did not complete; see `{look}`")


#: `desinight ingest` exit code when some of the night's data were quarantined, rejected
#: or cannot complete (the rest was ingested): the same as for failed jobs (JobsFailed), so
#: scripts tell "the night has problems" (5) from an error (1-4, 6, 7).
BAD_DATA_EXIT = JobsFailed.exit_code


@click.command()
@click.option("--backend", type=click.Choice(["local", "slurm"]), help="Override the configured backend.")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Rotating log file (default: STATE_DIR/daemon-PRODUCTION.log).")
@click.option("--standby", is_flag=True,
              help="If another daemon is active for the production, wait and take over when it dies.")
@click.pass_obj
def daemon(obj, backend: str | None, log_file: str | None, standby: bool) -> None:
    """Run the nightly service: watch raw data, ingest, plan, submit, poll; until SIGTERM.

    One active daemon per production (a lock in the state directory with SQLite, a
    PostgreSQL advisory lock across hosts); a second one exits naming the holder, or with
    --standby waits and takes over. Logs are key=value lines, quiet at the console, INFO
    and up in the rotating log file.

    \b
    Example:
      desinight daemon &      # then: desinight status
    """
    from .. import logs
    from ..app import open_context
    from ..service import run_daemon
    cfg = obj.cfg.with_overrides(backend=backend)
    logs.setup(obj.verbose, Path(log_file) if log_file else
               cfg.state_dir / f"daemon-{cfg.production}.log")
    raise SystemExit(run_daemon(open_context(cfg), standby=standby))


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default="state/demo",
              show_default=True, help="Where the demo's raw data, outputs and database go.")
@click.option("--night", default="20261124", show_default=True)
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--backend", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--timeout", type=float, default=1800, show_default=True)
@click.pass_obj
def demo(obj, workdir: str, night: str, seed: int, backend: str, timeout: float) -> None:
    """Simulate a small night and process it end to end; print the status table.
    Exit code 5 if any job did not complete.

    Runs on the embedded defaults (SQLite, local backend) with nothing else installed;
    `--backend slurm` uses the SLURM cluster that `sbatch` reaches (see docs/slurm.md).

    \b
    Example:
      desinight demo
      desinight demo --backend slurm --dir /tmp/demo
    """
    from ..app import open_context
    from ..config import Config
    from ..db import repo
    from ..db.engine import transaction
    from ..sim import simulate_night
    from .status_cmd import print_status
    n = _night(night)
    root = Path(workdir).resolve()
    marker = root / ".desinight-demo"
    if root.exists() and any(root.iterdir()) and not marker.exists():
        raise DesinightError(f"{root} exists and is not a desinight demo directory; "
                             "choose another --dir")
    if marker.exists():
        shutil.rmtree(root)   # a demo always starts from scratch
    root.mkdir(parents=True, exist_ok=True)
    marker.touch()
    # written first, so `desinight --config DIR/desinight.toml status` works even mid-demo
    (root / "desinight.toml").write_text(
        "[desinight]\n"
        f"production = \"demo\"\nraw_root = \"raw\"\nredux_root = \"redux\"\nstate_dir = \"state\"\n"
        f"backend = \"{backend}\"\n")
    console = Console()
    cfg = Config(production="demo", raw_root=root / "raw", redux_root=root / "redux",
                 state_dir=root / "state", backend=backend, local_cpus=obj.cfg.local_cpus)
    console.print(f"[bold]1/3[/] simulating night {n} (preset small, seed {seed}) into {cfg.raw_root}")
    simulate_night(n, cfg.raw_root, preset="small", seed=seed, progress=console.is_terminal)
    ctx = open_context(cfg, create=True)
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    console.print(f"[bold]2/3[/] processing on the {backend} backend (database {cfg.database_url})")
    process_night(ctx, n, wait=True, closed=True, timeout=timeout, console=console)
    console.print("[bold]3/3[/] done")
    data = print_status(ctx, night=n, console=console)
    console.print(f"outputs: {cfg.prod_dir}\nscripts and logs: {cfg.prod_dir / 'run'}\n"
                  f"look again: {Path(sys.executable).parent / 'desinight'} --config {root / 'desinight.toml'} status")
    _raise_if_failed(data, "demo", f"desinight --config {root / 'desinight.toml'} status --failed")


COMMANDS = [init, ingest, demo, daemon]
