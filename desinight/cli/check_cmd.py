"""`desinight check`: the monitoring probe (Nagios/Icinga plugin conventions; cron-friendly)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--night", help="Night YYYYMMDD to check (default: the latest).")
@click.option("--stale", "stale_s", type=click.FloatRange(min=1),
              help="Heartbeat older than this many seconds: CRITICAL [daemon.heartbeat_stale_s].")
@click.option("--backend-error-warn", type=click.FloatRange(min=0), metavar="MIN",
              help="Backend error lasting this many minutes: WARNING [check.backend_error_warn_min].")
@click.option("--backend-error-crit", type=click.FloatRange(min=0), metavar="MIN",
              help="... CRITICAL [check.backend_error_crit_min].")
@click.option("--failed-warn", type=click.IntRange(min=0), metavar="N",
              help="This many failed jobs in the night: WARNING, 0 = off [check.failed_warn].")
@click.option("--failed-crit", type=click.IntRange(min=0), metavar="N",
              help="... CRITICAL, 0 = off [check.failed_crit].")
@click.option("--waiting-warn", type=click.FloatRange(min=0), metavar="MIN",
              help="Exposure with no job queued this many minutes after arrival: WARNING "
                   "[check.waiting_warn_min].")
@click.option("--waiting-crit", type=click.FloatRange(min=0), metavar="MIN",
              help="... CRITICAL [check.waiting_crit_min].")
@click.option("--disk-warn", type=click.FloatRange(0, 100), metavar="PCT",
              help="Free space of the state or output dir below this percent: WARNING "
                   "[check.disk_warn_pct].")
@click.option("--disk-crit", type=click.FloatRange(0, 100), metavar="PCT",
              help="... CRITICAL [check.disk_crit_pct].")
@click.pass_obj
def check(obj, night: str | None, stale_s: float | None, backend_error_warn: float | None,
          backend_error_crit: float | None, failed_warn: int | None, failed_crit: int | None,
          waiting_warn: float | None, waiting_crit: float | None, disk_warn: float | None,
          disk_crit: float | None) -> None:
    """Monitoring probe: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one line, then perfdata.

    Checks the daemon's heartbeat, backend errors that last, failed jobs and exposures
    waiting in the night, jobs pending for a reason that never clears, and free space.

    \b
    Examples:
      desinight check
      desinight check --failed-crit 5 --waiting-warn 15
    """
    try:
        line, code = _probe(obj, night, dict(
            stale_s=stale_s, backend_error_warn_min=backend_error_warn,
            backend_error_crit_min=backend_error_crit, failed_warn=failed_warn,
            failed_crit=failed_crit, waiting_warn_min=waiting_warn,
            waiting_crit_min=waiting_crit, disk_warn_pct=disk_warn, disk_crit_pct=disk_crit))
    except Exception as e:  # noqa: BLE001 - a probe that cannot look answers UNKNOWN, never a traceback
        text = (str(e).splitlines() or [type(e).__name__])[0][:300]
        line, code = f"DESINIGHT UNKNOWN - {text} |", 3
    click.echo(line)
    sys.exit(code)


def _probe(obj, night: str | None, overrides: dict) -> tuple[str, int]:
    from .. import probe
    from ..app import open_context
    from ..core.errors import DesinightError
    from ..db import repo
    from ..db.engine import transaction
    from ..db.models import utcnow
    from .ops_cmds import _NoBackend, _night
    cfg = obj.cfg
    th = probe.Thresholds.from_config(cfg, **overrides)
    if th.backend_error_crit_min < th.backend_error_warn_min or \
            th.waiting_crit_min < th.waiting_warn_min or th.disk_crit_pct > th.disk_warn_pct:
        raise DesinightError("a CRITICAL threshold is milder than its WARNING threshold")
    n = _night(night) if night else None
    try:
        ctx = open_context(cfg, backend=_NoBackend())
        with transaction(ctx.sessions) as s:
            result = probe.run_checks(s, repo.get_production(s, ctx.production), cfg, th,
                                      utcnow(), night=n)
    except DesinightError:
        raise
    except Exception as e:  # noqa: BLE001 - the database cannot be read
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise DesinightError(f"cannot read the database: {first}") from None
    return result.line(), result.status


COMMANDS = [check]
