"""`desinight check`: a monitoring probe following the Nagios plugin conventions.

Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one line of text, then ``|`` and perfdata. Each
check gives a status and, when not OK, a few words; the line names the worst first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import liveness
from .config import Config
from .core.states import ACTIVE, BROKEN, JobState
from .db import repo
from .db.models import Attempt, Job, Production

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Thresholds:
    stale_s: float
    backend_error_warn_min: float
    backend_error_crit_min: float
    failed_warn: int            # 0 = off
    failed_crit: int            # 0 = off
    waiting_warn_min: float
    waiting_crit_min: float
    disk_warn_pct: float
    disk_crit_pct: float
    pending_never_clear: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: Config, **overrides) -> "Thresholds":
        values = dict(stale_s=cfg.heartbeat_stale_s,
                      backend_error_warn_min=cfg.check_backend_error_warn_min,
                      backend_error_crit_min=cfg.check_backend_error_crit_min,
                      failed_warn=cfg.check_failed_warn, failed_crit=cfg.check_failed_crit,
                      waiting_warn_min=cfg.check_waiting_warn_min,
                      waiting_crit_min=cfg.check_waiting_crit_min,
                      disk_warn_pct=cfg.check_disk_warn_pct, disk_crit_pct=cfg.check_disk_crit_pct,
                      pending_never_clear=cfg.check_pending_never_clear)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class Result:
    findings: list[tuple[int, str]] = field(default_factory=list)   # (status, words)
    perf: list[str] = field(default_factory=list)
    ok_words: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return max((st for st, _ in self.findings), default=OK)

    def line(self) -> str:
        bad = [w for st, w in sorted(self.findings, key=lambda f: -f[0])]
        text = "; ".join(bad or self.ok_words)
        return f"DESINIGHT {WORDS[self.status]} - {text} | {' '.join(self.perf)}"

    def add(self, status: int, words: str) -> None:
        if status != OK:
            self.findings.append((status, words))


def by(value: float, warn: float, crit: float, higher_is_worse: bool = True) -> int:
    """OK/WARNING/CRITICAL of a value against thresholds (a 0 count threshold is off)."""
    if higher_is_worse:
        if crit and value >= crit:
            return CRITICAL
        return WARNING if warn and value >= warn else OK
    if value < crit:
        return CRITICAL
    return WARNING if value < warn else OK


def run_checks(s: Session, prod: Production, cfg: Config, th: Thresholds, now: datetime,
               night: int | None = None) -> Result:
    from .status import collect, latest_night
    r = Result()
    st = repo.service_state(s, prod)
    val = {k: (row.value, row.updated_at) for k, row in st.items()}

    # 1. the daemon's heartbeat
    live = liveness.assess(val.get("heartbeat", (None,))[0], val.get("daemon_pid", (None,))[0],
                           val.get("daemon_stopped", (None,))[0], now, th.stale_s)
    r.add(OK if live.running else CRITICAL, f"daemon {live.text}")
    age = live.heartbeat_age_s
    r.perf.append(f"heartbeat_age={age:.0f}s;;{th.stale_s:g};0" if age is not None
                  else f"heartbeat_age=U;;{th.stale_s:g};0")
    r.ok_words.append(f"daemon {live.text}")

    # 2. a backend error that has lasted: since the outage began (recorded by the daemon when
    # it sends the outage event), else since the error was last written
    err, since = val.get("backend_error", (None, None))
    began = val.get("backend_error_since", (None,))[0]
    since = datetime.fromisoformat(began) if err and began else since
    err_min = (now - since).total_seconds() / 60 if err and since else 0.0
    r.add(by(err_min, th.backend_error_warn_min, th.backend_error_crit_min),
          f"backend error for {err_min:.0f} min: {err}")
    r.perf.append(f"backend_error_age={err_min * 60:.0f}s;{th.backend_error_warn_min * 60:g};"
                  f"{th.backend_error_crit_min * 60:g};0")

    # 3-5. the current night: failed jobs, exposures waiting, pending that never clears
    night = night if night is not None else latest_night(s, prod)
    failed = waiting = 0
    oldest_wait_min = 0.0
    if night is not None:
        data = collect(s, prod, night=night, now=now)
        failed_jobs = [j for j in data["jobs"] if JobState(j["state"]) in BROKEN]
        failed = len(failed_jobs)
        if failed:
            first = failed_jobs[0]
            r.add(by(failed, th.failed_warn, th.failed_crit),
                  f"{failed} failed job(s) in night {night} (e.g. {first['key']} {first['state']}: "
                  f"{first['reason'] or '-'})")
        for e in data["exposures"]:
            if e["progress"] in ("waiting", "planned") and e["arrived_at"]:
                mins = (now - datetime.fromisoformat(e["arrived_at"])).total_seconds() / 60
                if mins >= th.waiting_warn_min:
                    waiting += 1
                    oldest_wait_min = max(oldest_wait_min, mins)
        if waiting:
            r.add(by(oldest_wait_min, th.waiting_warn_min, th.waiting_crit_min),
                  f"{waiting} exposure(s) of night {night} not processing after "
                  f"{oldest_wait_min:.0f} min")
        jobs = len(data["jobs"])
        done = sum(1 for j in data["jobs"] if j["state"] == JobState.COMPLETED.value)
        r.ok_words.append(f"night {night}: {done}/{jobs} jobs completed")
    r.perf.append(f"failed_jobs={failed};{th.failed_warn or ''};{th.failed_crit or ''};0")
    r.perf.append(f"exposures_waiting={waiting};;;0")
    stuck = _stuck_pending(s, prod, th.pending_never_clear)
    if stuck:
        key, reason = stuck[0]
        r.add(CRITICAL, f"{len(stuck)} job(s) pending with a reason that never clears "
                        f"(e.g. {key}: {reason})")
    r.perf.append(f"pending_stuck={len(stuck)};;1;0")

    # 6. free space where the state and the outputs are written
    for label, path in (("state", cfg.state_dir), ("output", cfg.prod_dir)):
        pct = free_pct(path)
        if pct is None:
            r.add(WARNING, f"{label} dir {path} cannot be inspected")
            continue
        r.add(by(pct, th.disk_warn_pct, th.disk_crit_pct, higher_is_worse=False),
              f"{label} dir {pct:.1f}% free ({path})")
        r.perf.append(f"{label}_free={pct:.1f}%;{th.disk_warn_pct:g}:;{th.disk_crit_pct:g}:;0;100")
    return r


def _stuck_pending(s: Session, prod: Production, reasons: tuple[str, ...]) -> list[tuple[str, str]]:
    """(job key, reason) of queued jobs whose last pending reason never clears by itself."""
    if not reasons:
        return []
    rows = s.execute(select(Job.key, Attempt.reason).join(Attempt, Attempt.job_id == Job.id)
                     .where(Job.production_id == prod.id,
                            Job.state.in_([st.value for st in ACTIVE]),
                            Attempt.state == JobState.PENDING.value,
                            Attempt.reason.is_not(None))).all()
    return [(key, reason) for key, reason in rows
            if reason.split("(")[0].split(",")[0].strip() in reasons]


def free_pct(path: Path) -> float | None:
    """Free percent of the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        du = shutil.disk_usage(p)
    except OSError:
        return None
    return 100.0 * du.free / du.total if du.total else None
