"""Events someone must hear about: what they are, how loud, and what they carry.

Every move of a job into a failure state, every quarantine, the start and end of a backend
outage, and the daemon's start and stop become one structured log line at WARNING or ERROR
(through ``Context.event``, which takes its level from ``LEVELS``) and go on the context's
``on_event`` bus, where the daemon's notifier (``notify.py``) picks them up.

Job moves reach this module through ``transitions.LISTENERS`` (the daemon's monitor
registers ``move_event`` there): the one door that writes job states is also the one place
failures are heard, for the nightly production and campaigns alike.
"""

from __future__ import annotations

import logging
import statistics
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .core.states import FINAL, JobState
from .db.models import Attempt, Exposure, Job, JobExposure, Production

#: event name -> log level; events not named here log at INFO and are not notified
LEVELS: dict[str, int] = {
    "job_failed": logging.WARNING,
    "job_dep_failed": logging.WARNING,
    "exposure_quarantined": logging.WARNING,
    "exposure_rejected": logging.WARNING,
    "backend_outage_started": logging.ERROR,
    "backend_outage_ended": logging.WARNING,
    "daemon_started": logging.WARNING,
    "daemon_stopped": logging.WARNING,
    "night_summary": logging.WARNING,
}


class _EventSink(Protocol):
    def event(self, name: str, **fields: Any) -> None: ...


def level_of(name: str) -> int:
    return LEVELS.get(name, logging.INFO)


def is_alert(name: str) -> bool:
    return level_of(name) >= logging.WARNING


def move_listener(sink: _EventSink):
    """A ``transitions.LISTENERS`` entry that turns each failure move into an event on
    ``sink`` (the daemon's context: a WARNING line and the notifier)."""
    def on_move(m: Any) -> None:
        ev = move_event(m)
        if ev is not None:
            sink.event(ev[0], **ev[1])
    return on_move


def move_event(m: Any) -> tuple[str, dict[str, Any]] | None:
    """The alert for one ``transitions.Move``, or None when the move is not one."""
    if not m.is_alert:
        return None
    name = "job_dep_failed" if m.new == JobState.DEP_FAILED.value else "job_failed"
    return name, {"job": m.key, "kind": m.job_kind, "night": m.night,
                  "expid": ",".join(str(e) for e in m.expids) or None, "state": m.new,
                  "reason": m.reason, "log": m.log, "actor": m.actor}


def outage_event(before: str | None, after: str | None, since: datetime | None,
                 now: datetime) -> tuple[str, dict[str, Any]] | None:
    """An outage starts when ``backend_error`` gets a value and ends when it is cleared."""
    if not before and after:
        return "backend_outage_started", {"error": after}
    if before and not after:
        took = (now - since).total_seconds() if since else None
        return "backend_outage_ended", {"error": before,
                                        "lasted_s": None if took is None else round(took)}
    return None


# --- end of night ----------------------------------------------------------------------------
def night_summary(s: Session, prod: Production, night: int) -> dict[str, Any] | None:
    """The summary of a night whose jobs are all final, else None.

    Counts by state, the failures with their reasons, and the median and maximum time from an
    exposure's arrival to its last job's end, over the exposures whose jobs all completed."""
    jobs = s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)).all()
    if not jobs or any(JobState(j.state) not in FINAL for j in jobs):
        return None
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    failures = [{"job": j.key, "state": j.state, "reason": j.reason}
                for j in sorted(jobs, key=lambda j: j.id)
                if j.state != JobState.COMPLETED.value]
    durations = _arrival_to_done(s, prod, night)
    quarantined = s.scalar(select(func.count()).select_from(Exposure).where(
        Exposure.production_id == prod.id, Exposure.night == night,
        Exposure.quarantine_reason.is_not(None)))
    return {"night": night, "jobs": len(jobs), "states": counts, "failures": failures,
            "quarantined": quarantined or 0, "exposures_done": len(durations),
            "arrival_to_done_median_s": round(statistics.median(durations)) if durations else None,
            "arrival_to_done_max_s": round(max(durations)) if durations else None}


def _arrival_to_done(s: Session, prod: Production, night: int) -> list[float]:
    rows = s.execute(select(Exposure.expid, Exposure.arrived_at, Job.state, func.max(Attempt.ended_at))
                     .join(JobExposure, JobExposure.expid == Exposure.expid)
                     .join(Job, Job.id == JobExposure.job_id)
                     .join(Attempt, Attempt.job_id == Job.id)
                     .where(Exposure.production_id == prod.id, Exposure.night == night,
                            Job.production_id == prod.id)
                     .group_by(Exposure.expid, Exposure.arrived_at, Job.id, Job.state)).all()
    per: dict[int, tuple[datetime | None, list[str], list[datetime]]] = {}
    for expid, arrived, state, ended in rows:
        a, states, ends = per.setdefault(expid, (arrived, [], []))
        states.append(state)
        if ended is not None:
            ends.append(ended)
    return [(max(ends) - a).total_seconds() for a, states, ends in per.values()
            if a is not None and ends and set(states) == {JobState.COMPLETED.value}]


def summary_text(summary: dict[str, Any]) -> str:
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary["states"].items()))
    lines = [f"night {summary['night']} finished: {summary['jobs']} jobs ({states}); "
             f"{summary['quarantined']} exposures quarantined; arrival to done over "
             f"{summary['exposures_done']} exposures: median {_dur(summary['arrival_to_done_median_s'])}, "
             f"max {_dur(summary['arrival_to_done_max_s'])}"]
    lines += [f"  {f['job']} {f['state']}: {f['reason'] or ''}" for f in summary["failures"][:50]]
    if len(summary["failures"]) > 50:
        lines.append(f"  ... {len(summary['failures']) - 50} more (desinight status --failed)")
    return "\n".join(lines)


def _dur(secs: float | None) -> str:
    if secs is None:
        return "-"
    return f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.1f} min"


def event_text(name: str, fields: dict[str, Any]) -> str:
    """One human line for a message body."""
    if name == "night_summary":
        return summary_text(fields)
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and k != "summary")
    return f"{name} {shown}"
