"""Counts for the read-only views (`status`, `campaign status`), aggregated in SQL with Core
selects whose rows come back as plain tuples: at 10,000 nights SQLAlchemy's per-row objects
cost as much as the queries themselves (issue 18 item 5). Imports only the models, so the
commands that use it stay light."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..core import kinds as K
from ..core.errors import NotFound
from ..core.states import ACTIVE, BROKEN, FINAL, JobState
from .models import Attempt, Exposure, Job, Night, Production

#: job states counted for the nights a `status --nights N` list leaves out: the ones an
#: operator must act on or follow, few and served by the job(production_id, state, kind)
#: index; planned and completed would mean reading every job of the survey
NOTABLE = [JobState.HELD.value, *(st.value for st in BROKEN), *(st.value for st in ACTIVE)]


def tuples(s: Session, stmt) -> list[tuple]:
    """The rows as the driver returns them (plain tuples), skipping SQLAlchemy's Row objects
    and the ORM's execution layer: only for columns that need no type conversion (integers,
    strings; booleans come back as 0/1 from SQLite)."""
    res = s.connection().execute(stmt)
    try:
        return res.cursor.fetchall()
    finally:
        res.close()


def recent_nights(s: Session, prod_id: int, lo: int, hi: int, n: int) -> list[int]:
    """The n latest nights of lo..hi, oldest first."""
    return sorted(r[0] for r in tuples(s, select(Night.night).where(
        Night.production_id == prod_id, Night.night.between(lo, hi))
        .order_by(Night.night.desc()).limit(n)))


def per_night(s: Session, prod_id: int, lo: int, hi: int, extra: int | None = None) -> list[dict]:
    """Per night of lo..hi (and night ``extra``), oldest first: closed, exposures per obstype,
    jobs per state."""
    def where(col):
        sel = col.between(lo, hi)
        return sel if extra is None or lo <= extra <= hi else sel | (col == extra)
    rows: dict[int, dict] = {}

    def row(n: int) -> dict:
        return rows.get(n) or rows.setdefault(n, {"night": n, "closed": False,
                                                  "exposures": {}, "jobs": {}})
    for n, closed in tuples(s, select(Night.night, Night.closed).where(
            Night.production_id == prod_id, where(Night.night))):
        row(n)["closed"] = bool(closed)
    for n, obstype, count in tuples(s, select(Exposure.night, Exposure.obstype, func.count())
                                    .where(Exposure.production_id == prod_id, where(Exposure.night))
                                    .group_by(Exposure.night, Exposure.obstype)):
        row(n)["exposures"][obstype] = count
    for n, state, count in tuples(s, select(Job.night, Job.state, func.count())
                                  .where(Job.production_id == prod_id, where(Job.night))
                                  .group_by(Job.night, Job.state)):
        row(n)["jobs"][state] = count
    return [rows[n] for n in sorted(rows)]


def earlier(s: Session, prod_id: int, lo: int, hi: int, shown: list[dict]) -> dict:
    """The nights of lo..hi that ``shown`` leaves out: how many, and their jobs per NOTABLE
    state (the selection's counts less the shown nights')."""
    n_all = tuples(s, select(func.count()).select_from(Night).where(
        Night.production_id == prod_id, Night.night.between(lo, hi)))[0][0]
    jobs: Counter[str] = Counter()
    for state, count in tuples(s, select(Job.state, func.count()).where(
            Job.production_id == prod_id, Job.state.in_(NOTABLE), Job.night.between(lo, hi))
            .group_by(Job.state)):
        jobs[state] = count
    listed = [n for n in shown if lo <= n["night"] <= hi]
    for n in listed:
        jobs.subtract({k: v for k, v in n["jobs"].items() if k in NOTABLE})
    return {"nights": max(0, n_all - len(listed)),
            "first": tuples(s, select(func.min(Night.night)).where(
                Night.production_id == prod_id, Night.night.between(lo, hi)))[0][0],
            "jobs": {k: v for k, v in sorted(jobs.items()) if v > 0}}


def campaign_production(s: Session, name: str) -> Production:
    prod = s.scalar(select(Production).where(Production.name == name))
    if prod is None or prod.kind != "campaign":
        names = s.scalars(select(Production.name).where(Production.kind == "campaign")).all()
        hint = f" (campaigns: {', '.join(names)})" if names else " (none submitted yet)"
        raise NotFound(f"no campaign named {name!r}{hint}")
    return prod


def campaign_progress(s: Session, name: str, failures: int = 20) -> dict[str, Any]:
    """`campaign status`: counts per kind and state, the totals and the first failures."""
    prod = campaign_production(s, name)
    by_kind: dict[str, dict[str, int]] = {}
    for kind, state, n in tuples(s, select(Job.kind, Job.state, func.count()).where(
            Job.production_id == prod.id).group_by(Job.kind, Job.state)):
        by_kind.setdefault(kind, {})[state] = n
    states: Counter[str] = Counter()
    for v in by_kind.values():
        states.update(v)
    total = sum(states.values())
    final = sum(states[st.value] for st in FINAL)
    bad = [st.value for st in BROKEN]
    fail_rows = tuples(s, select(Job.id, Job.key, Job.state, Job.reason).where(
        Job.production_id == prod.id, Job.state.in_(bad)).order_by(Job.night, Job.id)
        .limit(failures))
    n_nights = tuples(s, select(func.count()).select_from(Night).where(
        Night.production_id == prod.id))[0][0]
    n_exp = tuples(s, select(func.count()).select_from(Exposure).where(
        Exposure.production_id == prod.id))[0][0]
    queued = tuples(s, select(func.count()).select_from(Attempt).join(Job).where(
        Job.production_id == prod.id, Attempt.state.in_([st.value for st in ACTIVE])))[0][0]
    settings = prod.settings or {}
    return {"schema": 1, "campaign": prod.name, "source": settings.get("source"),
            "output": prod.redux_dir, "steps": settings.get("steps"),
            "throttle": settings.get("throttle"), "code_version": settings.get("code_version"),
            "nights": n_nights, "exposures": n_exp, "jobs": total, "ended": final,
            "completed": states[JobState.COMPLETED.value],
            "failed": sum(states[b] for b in bad), "held": states[JobState.HELD.value],
            "queued": queued, "states": dict(states),
            "kinds": {k: by_kind[k] for k in K.names() if k in by_kind},
            "failures": [{"id": i, "job": key, "state": st, "reason": reason}
                         for i, key, st, reason in fail_rows],
            "done": total > 0 and states[JobState.PLANNED.value] == 0
            and not any(states[a.value] for a in ACTIVE)}
