"""Reprocessing campaigns: plan, enqueue, run and follow a manifest-described production.

A campaign is a production row with ``kind="campaign"`` and its own output directory. Its
exposures are copied from the source production's exposure table (header values, raw
paths, bad cameras, with the manifest's per-exposure bad cameras replacing the recorded
ones); nights the source never ingested are read from its raw root with the ingest code's
reader. Its jobs come from the same ``plan_night`` (closed nights) as nightly processing,
with ``Job.campaign`` set, in the same tables: `status`, `show` and `resubmit` treat both
alike.

* ``preview``: the dry run (`campaign plan`): what would be added, what exists, the cost.
  Nothing is written.
* ``enqueue``: the same computation, written in one transaction with bulk inserts
  (`campaign submit`). Idempotent: job keys are deterministic, existing ones are skipped.
* ``run_tick`` / ``campaign_context``: poll + submit under the manifest's throttle
  (`campaign run`, and later the daemon).
* ``progress``: counts per kind and state and the failures (`campaign status`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import rawdata, readers
from .config import Config
from .core.cameras import subtract
from .core.errors import BadExposure
from .core.manifest import Manifest, ManifestError, node_hours
from .core import kinds as K
from .core.planner import (NIGHTLY_CALIBS, CalibRef, CalibRule, ExposureInfo, PlannedJob,
                           plan_night)
from .core.states import ACTIVE, ExposureStatus, JobState
from .db import bulk
from .db.engine import transaction
from .db.models import Exposure, Job, Production
from .orchestrate import Context, job_resources, resources_for
from .plan_extras import shift_night
from .transitions import campaign_actor

_EXPOSURE_COLS = ("expid", "night", "obstype", "tileid", "exptime", "program", "seqnum",
                  "seqtot", "cameras", "bad_cameras", "raw_path", "status",
                  "quarantine_reason", "arrived_at")


@dataclass
class Preview:
    manifest: Manifest
    source: str
    raw_root: Path
    redux_dir: Path
    exists: bool                                   # the campaign production is already there
    nights: list[int] = field(default_factory=list)
    selected_exposures: int = 0
    new_exposures: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)   # new jobs only
    quarantine: dict[int, str] = field(default_factory=dict)
    existing: dict[str, dict[str, int]] = field(default_factory=dict)   # kind -> state -> n
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    #: partial campaign: input job key (a step not run) -> the first planned job needing it
    inputs: dict[str, str] = field(default_factory=dict)
    #: new jobs per kind already handed to the sink (saved) and no longer in ``jobs``
    flushed: Counter = field(default_factory=Counter)

    @property
    def new_by_kind(self) -> dict[str, int]:
        c = Counter(j.kind for j in self.jobs) + self.flushed
        return {k: c[k] for k in K.names() if c[k]}

    @property
    def new_total(self) -> int:
        return len(self.jobs) + sum(self.flushed.values())

    def flush(self, sink: Callable[[list[PlannedJob]], None]) -> None:
        """Hand the jobs planned so far to ``sink`` and keep only their counts."""
        if self.jobs:
            sink(self.jobs)
            self.flushed.update(j.kind for j in self.jobs)
            self.jobs = []

    @property
    def node_hours(self) -> tuple[float, float]:
        return node_hours(self.new_by_kind, self.resources)

    def summary(self) -> dict[str, Any]:
        typical, upper = self.node_hours
        done = {k: sum(v.values()) for k, v in self.existing.items()}
        completed = {k: v.get(JobState.COMPLETED.value, 0) for k, v in self.existing.items()}
        return {"campaign": self.manifest.name, "source": self.source,
                "output": str(self.redux_dir), "exists": self.exists, "nights": len(self.nights),
                "first_night": self.nights[0] if self.nights else None,
                "last_night": self.nights[-1] if self.nights else None,
                "exposures": self.selected_exposures, "new_exposures": len(self.new_exposures),
                "steps": list(self.manifest.steps), "throttle": self.manifest.throttle,
                "new_jobs": self.new_by_kind, "new_total": self.new_total,
                "existing_jobs": done, "existing_completed": completed,
                "node_hours": round(typical, 1), "node_hours_limit": round(upper, 1),
                "quarantined": len(self.quarantine)}


# --- configuration --------------------------------------------------------------------------
def campaign_config(cfg: Config, name: str, redux_dir: Path, raw_root: Path,
                    settings: dict[str, Any]) -> Config:
    """The config a campaign's jobs are rendered with: its own production and output dir,
    the source's raw data, the manifest's SLURM and per-kind overrides on top of the site's."""
    slurm = settings.get("slurm") or {}
    kinds = {k: dict(v) for k, v in cfg.kinds.items()}
    for k, v in (settings.get("kinds") or {}).items():
        kinds[k] = {**kinds.get(k, {}), **v}
    return cfg.with_overrides(production=name, redux_root=Path(redux_dir).parent,
                              raw_root=Path(raw_root), kinds=kinds,
                              slurm_account=slurm.get("account"), slurm_qos=slurm.get("qos"),
                              slurm_partition=slurm.get("partition"),
                              slurm_constraint=slurm.get("constraint"))


def _resources(ccfg: Config) -> dict[str, dict[str, Any]]:
    return {k: dict(resources_for(ccfg, k).__dict__) for k in K.names()}


# --- the dry run ------------------------------------------------------------------------------
#: new jobs planned before a batch is saved (``enqueue``) or counted and dropped (the dry run
#: with ``keep_jobs=False``): bounds memory at 10,000 nights (790,000 jobs) to one batch's
#: objects, whole nights at a time (calibration fallbacks reach back into saved batches)
BATCH_JOBS = 50_000


def preview(s: Session, cfg: Config, m: Manifest, keep_jobs: bool = True) -> Preview:
    """Everything `campaign plan` shows; raises ManifestError (with line) on a bad manifest.
    ``keep_jobs=False``: the new jobs are counted, not kept in ``Preview.jobs``."""
    pv, rows, keys_by_night, inp = _select(s, cfg, m)
    _plan(pv, rows, keys_by_night, cfg.max_calib_age_nights,
          CalibRule(cfg.min_arcs, cfg.min_flats), cfg.dark_window_nights,
          sink=None if keep_jobs else (lambda jobs: None))
    if inp is not None:
        _check_inputs(s, pv, inp)
    return pv


def _select(s: Session, cfg: Config, m: Manifest
            ) -> tuple[Preview, list[dict], dict[int, set[str]], Production | None]:
    """The checks and the selection, before any planning: the preview (nights, exposures,
    existing jobs), the exposure rows to plan, the existing job keys per night and, for a
    partial campaign, the input production."""
    prods = {p.name: p for p in s.scalars(select(Production))}
    source = m.source or cfg.production
    src = prods.get(source)
    if src is None:
        raise m.error("campaign.source" if m.source else "campaign",
                      f"source production {source!r} does not exist (known: "
                      f"{', '.join(sorted(prods)) or 'none'})", m.source)
    mine = prods.get(m.name)
    if mine is not None and mine.kind != "campaign":
        raise m.error("campaign.name", f"{m.name!r} is already a {mine.kind} production; "
                                       "a campaign needs a new name")
    if mine is not None and (mine.settings or {}).get("source") not in (None, source):
        raise m.error("campaign.name", f"campaign {m.name!r} already exists with source "
                                       f"{mine.settings.get('source')!r}, not {source!r}")
    redux_dir = ((m.output_root or cfg.redux_root) / m.name).resolve()
    for p in prods.values():
        if p.name != m.name and Path(p.redux_dir).resolve() == redux_dir:
            raise m.error("campaign.output_root" if m.output_root else "campaign.name",
                          f"output {redux_dir} is production {p.name!r}'s directory")
    if m.partial:
        inp = m.input_production or source
        if inp not in prods:
            raise m.error("steps.input_production", f"input production {inp!r} does not exist",
                          inp)
    raw_root = Path(src.raw_root)
    ccfg = campaign_config(cfg, m.name, redux_dir, raw_root, m.settings())
    pv = Preview(m, source, raw_root, redux_dir, mine is not None, resources=_resources(ccfg))

    db_nights = set(s.scalars(select(Exposure.night).where(Exposure.production_id == src.id)
                              .distinct()))
    raw_nights = set(rawdata.list_nights(raw_root))
    available = db_nights | raw_nights
    for n in m.nights:
        if n not in available:
            raise m.error("selection.nights", f"night {n} is not in production {source} "
                                              f"nor under {raw_root}", n)
    for lo, hi in m.night_ranges:
        if not any(lo <= n <= hi for n in available):
            raise m.error("selection.night_ranges", f"no night of [{lo}, {hi}] in production "
                                                    f"{source} nor under {raw_root}", lo)
    pv.nights = m.wanted_nights(available)
    if not pv.nights:
        raise m.error("selection", "the selection leaves no night")
    rows = _source_rows(s, src, [n for n in pv.nights if n in db_nights], m)
    for n in pv.nights:
        if n not in db_nights:
            rows.extend(_raw_rows(raw_root, n, m))
    _check_named(m, rows)
    if m.tiles or m.expids:
        # A science restriction: only the nights that observed the selected science, with
        # their calibrations; other nights would only recompute calibrations nobody uses.
        sci = {r["night"] for r in rows if r["obstype"] == "SCIENCE"}
        rows = [r for r in rows if r["night"] in sci]
        pv.nights = [n for n in pv.nights if n in sci]
    for r in rows:
        if r["expid"] in m.bad_cameras:
            r["bad_cameras"] = ",".join(m.bad_cameras[r["expid"]])
    pv.selected_exposures = len(rows)

    have_exp: set[int] = set()
    keys_by_night: dict[int, set[str]] = defaultdict(set)
    if mine is not None:
        have_exp = set(s.scalars(select(Exposure.expid).where(Exposure.production_id == mine.id)))
        for key, night in s.execute(select(Job.key, Job.night).where(Job.production_id == mine.id)):
            keys_by_night[night].add(key)
        for kind, state, n in s.execute(select(Job.kind, Job.state, func.count()).where(
                Job.production_id == mine.id).group_by(Job.kind, Job.state)):
            pv.existing.setdefault(kind, {})[state] = n
    pv.new_exposures = [r for r in rows if r["expid"] not in have_exp]
    return pv, rows, keys_by_night, prods[m.input_production or source] if m.partial else None


def _check_inputs(s: Session, pv: Preview, inp: Production) -> None:
    """Every output a partial campaign takes from its input production must be there: the
    job completed and its files on disk. Else the manifest is refused, naming what lacks."""
    from . import partial_inputs
    m = pv.manifest
    done = dict(s.execute(select(Job.key, Job.state).where(
        Job.production_id == inp.id, Job.key.in_(sorted(pv.inputs)))).all())
    def order(key: str) -> tuple:     # pipeline order: the root of a missing chain first
        night, kind, *rest = key.split("/")
        return night, K.names().index(kind), rest

    for key, needed_by in sorted(pv.inputs.items(), key=lambda kv: order(kv[0])):
        state = done.get(key)
        if state != JobState.COMPLETED.value:
            raise m.error("steps.input_production",
                          f"production {inp.name} has no completed {key} "
                          f"({state or 'no such job'}; needed by {needed_by})",
                          m.input_production)
    cams = dict(s.execute(select(Job.key, Job.cameras).where(
        Job.production_id == inp.id, Job.key.in_(sorted(pv.inputs)))).all())
    for key in sorted(pv.inputs):
        missing = partial_inputs.missing(Path(inp.redux_dir), key, cams[key])
        if missing:
            raise m.error("steps.input_production",
                          f"production {inp.name}'s {key} output {missing} is missing",
                          m.input_production)


def _source_rows(s: Session, src: Production, nights: list[int], m: Manifest) -> list[dict]:
    if not nights:
        return []
    wanted = set(nights)
    cols = [getattr(Exposure, c) for c in _EXPOSURE_COLS]
    out = []
    q = select(*cols).where(Exposure.production_id == src.id,
                            Exposure.night.between(min(nights), max(nights)))
    for row in s.execute(q):
        r = dict(zip(_EXPOSURE_COLS, row))
        if r["night"] not in wanted or not m.selects(r["expid"], r["obstype"], r["tileid"]):
            continue
        if r["status"] != ExposureStatus.QUARANTINED.value:
            r["status"] = ExposureStatus.INGESTED.value   # planned in the source, not here
        out.append(r)
    return out


def _raw_rows(raw_root: Path, night: int, m: Manifest) -> list[dict]:
    """Exposures of a night the source never ingested, read like ingest reads them."""
    out = []
    dirs = rawdata.list_exposure_dirs(raw_root, night)
    read = readers.inspect_many(raw_root, dirs)   # in reader processes, never here
    for d in dirs:
        expid = int(d.name)
        try:
            raw = readers.result(read[d])
        except rawdata.Incomplete:
            continue
        except BadExposure as e:
            if expid not in m.exclude_expids:
                out.append({"expid": expid, "night": night, "obstype": "UNKNOWN", "tileid": None,
                            "raw_path": str(rawdata.raw_file(d, expid)), "cameras": "",
                            "bad_cameras": "", "status": ExposureStatus.QUARANTINED.value,
                            "quarantine_reason": str(e)})
            continue
        if not m.selects(raw.expid, raw.obstype, raw.tileid):
            continue
        ok = raw.night == night
        out.append({"expid": raw.expid, "night": night, "obstype": raw.obstype,
                    "tileid": raw.tileid, "exptime": raw.exptime, "program": raw.program,
                    "seqnum": raw.seqnum, "seqtot": raw.seqtot, "cameras": ",".join(raw.cameras),
                    "bad_cameras": ",".join(raw.bad_cameras), "raw_path": str(raw.raw_path),
                    "status": (ExposureStatus.INGESTED if ok else ExposureStatus.QUARANTINED).value,
                    "quarantine_reason": None if ok else
                    f"header NIGHT {raw.night} does not match directory night {night}"})
    return out


def _check_named(m: Manifest, rows: list[dict]) -> None:
    """Every EXPID and tile the manifest names must be among the selected exposures."""
    expids = {r["expid"] for r in rows}
    for e in sorted(m.expids):
        if e not in expids:
            raise m.error("selection.expids", f"exposure {e} is not on a selected night", e)
    for e in sorted(m.bad_cameras):
        if e not in expids:
            raise m.error(f"selection.bad_cameras.{e}", f"exposure {e} is not in the selection")
    tiles = {r["tileid"] for r in rows}
    for t in sorted(m.tiles):
        if t not in tiles:
            raise m.error("selection.tiles", f"tile {t} is not observed on a selected night", t)


@lru_cache(maxsize=4096)
def _good_cameras(cameras: str, bad: str) -> tuple[str, ...]:
    return tuple(subtract(cameras.split(",") if cameras else [], bad.split(",") if bad else []))


def _plan(pv: Preview, rows: list[dict], keys_by_night: dict[int, set[str]],
          max_age: int, rule: CalibRule = CalibRule(), dark_window: int = 0,
          sink: Callable[[list[PlannedJob]], None] | None = None,
          batch: int | None = None) -> None:
    """Plan every night in order. The fallback is the nearest earlier night whose psfnight
    and fiberflatnight both exist and cover the night's cameras, at most ``max_age`` nights
    back (calib_choice's rule, on the campaign's own nights).

    With ``sink``, every ``batch`` (default ``BATCH_JOBS``) new jobs, at a night's end, go
    to ``sink`` and leave ``pv.jobs`` (``Preview.flush``); the last ones too."""
    batch = batch or BATCH_JOBS
    from .calib_choice import age, needed_cameras
    m = pv.manifest
    steps = set(m.steps)
    skip_calibs = not set(NIGHTLY_CALIBS) <= steps
    by_night: dict[int, list[ExposureInfo]] = defaultdict(list)
    for r in rows:
        if r["status"] == ExposureStatus.QUARANTINED.value:
            continue
        by_night[r["night"]].append(ExposureInfo(r["expid"], r["night"], r["obstype"],
                                                 r["tileid"], _good_cameras(r["cameras"] or "",
                                                                            r["bad_cameras"] or ""),
                                                 r["seqnum"], r["seqtot"]))
    fallback: dict[str, CalibRef] = {}
    pairs: list[tuple[int, set[str]]] = []       # (night, cameras) with both psf and fiberflat
    cams_of: dict[str, set[str]] = {}
    for night in pv.nights:
        existing = keys_by_night.get(night, set())
        needed = needed_cameras(by_night.get(night, []))
        fb = {k: v for k, v in fallback.items() if k == "biasnight"}
        why = None
        pair = next((n for n, c in reversed(pairs) if needed <= c), None)
        if pair is not None and age(night, pair) <= max_age:
            fb.update({k: CalibRef(f"{pair}/{k}", pair) for k in ("psfnight", "fiberflatnight")})
        else:
            why = (f"none of the campaign's nights within {max_age} nights before "
                   "(calib.max_calib_age_nights) covers its cameras")
        # the darks of the campaign's nights within [calib] dark_window_nights (plan_extras)
        near = [e for k in range(-dark_window, dark_window + 1) if k
                for e in by_night.get(shift_night(night, k), ()) if e.obstype == "DARK"]
        p = plan_night(night, by_night.get(night, []), existing, closed=True, fallback=fb,
                       no_fallback=why, rule=rule, dark_neighbours=near)
        pv.quarantine.update(p.quarantine)
        pv.waiting.extend(f"{night}: {w}" for w in p.waiting)
        for pj in p.jobs:
            if pj.kind in ("psfnight", "fiberflatnight"):   # the only ones asked below
                cams_of[pj.key] = set(pj.cameras)
            if pj.kind not in steps:
                continue
            deps = tuple(d for d in pj.deps if d.split("/")[1] in steps)
            for d in pj.deps:
                # the outputs of a step not run come from the input production
                if d not in deps and d.split("/")[1] != "redshift":
                    pv.inputs.setdefault(d, pj.key)
            hold = None if skip_calibs else pj.hold_reason
            if deps != pj.deps or hold != pj.hold_reason:
                pj = PlannedJob(pj.key, pj.kind, pj.night, pj.tileid, pj.expids, pj.cameras,
                                deps, pj.calib_night, hold)
            pv.jobs.append(pj)
        tonight = existing | {pj.key for pj in p.jobs}
        if f"{night}/biasnight" in tonight:
            fallback["biasnight"] = CalibRef(f"{night}/biasnight", night)
        if all(f"{night}/{k}" in tonight for k in ("psfnight", "fiberflatnight")):
            pairs.append((night, cams_of.get(f"{night}/psfnight", set())
                          & cams_of.get(f"{night}/fiberflatnight", set())
                          if f"{night}/psfnight" in cams_of else needed))
        if sink is not None and len(pv.jobs) >= batch:
            pv.flush(sink)
    if sink is not None:
        pv.flush(sink)


# --- writing ----------------------------------------------------------------------------------
def enqueue(sessions, cfg: Config, m: Manifest, batch: int | None = None) -> Preview:
    """Record the campaign and its new jobs (state planned) in one transaction.

    Planned and saved in batches of whole nights (``BATCH_JOBS`` jobs): a 10,000-night
    campaign never holds its 790,000 jobs' objects at once. ``pv.jobs`` is left empty;
    ``pv.new_by_kind`` counts them."""
    with transaction(sessions) as s:
        pv, rows, keys_by_night, inp = _select(s, cfg, m)
        prod = s.scalar(select(Production).where(Production.name == m.name))
        if prod is None:
            prod = Production(name=m.name, raw_root=str(pv.raw_root), redux_dir=str(pv.redux_dir),
                              kind="campaign", settings={**m.settings(), "source": pv.source})
            s.add(prod)
            s.flush()
        else:
            prod.settings = {**m.settings(), "source": pv.source}
        bulk.insert_nights(s, prod, pv.nights, closed=True)
        bulk.insert_exposures(s, prod, pv.new_exposures)
        ccfg = campaign_config(cfg, m.name, pv.redux_dir, pv.raw_root, m.settings())
        actor = campaign_actor(m.name)

        def save(jobs: list[PlannedJob]) -> None:
            bulk.save_jobs(s, prod, jobs, job_resources(ccfg, jobs, pv.resources), actor,
                           campaign=m.name)

        _plan(pv, rows, keys_by_night, cfg.max_calib_age_nights,
              CalibRule(cfg.min_arcs, cfg.min_flats), cfg.dark_window_nights,
              sink=save, batch=batch)
        del rows, keys_by_night
        if inp is not None:
            _check_inputs(s, pv, inp)    # refused: the transaction (and every batch) rolls back
        # the planner's rejects are never in a job, so saving first changes nothing for them
        bulk.quarantine(s, prod, pv.quarantine, actor)
        if pv.new_total >= bulk.ANALYZE_AFTER:
            bulk.analyze(s)
        if pv.inputs:
            from . import partial_inputs
            inp = s.scalar(select(Production).where(
                Production.name == (m.input_production or pv.source)))
            partial_inputs.link(Path(inp.redux_dir), pv.redux_dir, pv.inputs)
    return pv


def get_campaign(s: Session, name: str) -> Production:
    from .db.stats import campaign_production
    return campaign_production(s, name)


def campaign_context(base: Context, name: str) -> Context:
    """A Context for the campaign's production, throttled by its manifest."""
    with transaction(base.sessions) as s:
        prod = get_campaign(s, name)
        settings = dict(prod.settings or {})
        ccfg = campaign_config(base.cfg, prod.name, Path(prod.redux_dir), Path(prod.raw_root),
                               settings)
    return Context(cfg=ccfg, sessions=base.sessions, backend=base.backend, production=name,
                   on_event=base.on_event, max_queued=settings.get("throttle"),
                   actor=campaign_actor(name), campaign=True)


def unfinished_campaigns(ctx: Context) -> list[str]:
    """Campaign productions with jobs still to submit or to follow (planned or queued)."""
    open_states = [JobState.PLANNED.value, *(st.value for st in ACTIVE)]
    with transaction(ctx.sessions) as s:
        return list(s.scalars(select(Production.name).where(
            Production.kind == "campaign",
            select(Job.id).where(Job.production_id == Production.id,
                                 Job.state.in_(open_states)).exists()).order_by(Production.name)))


def run_tick(ctx: Context, now: datetime) -> int:
    """One poll + submit round under the throttle; returns jobs submitted."""
    from . import orchestrate as O
    O.poll(ctx, now)
    O.reconcile(ctx, now)
    return O.submit_ready(ctx, now)


# --- progress -----------------------------------------------------------------------------------
def progress(s: Session, name: str, failures: int = 20) -> dict[str, Any]:
    """Counts per kind and state, the totals and the first failures (all in SQL; the
    query lives in db/stats.py, which `campaign status` imports without this module)."""
    from .db.stats import campaign_progress
    return campaign_progress(s, name, failures)


__all__ = ["Preview", "ManifestError", "preview", "enqueue", "campaign_context", "run_tick",
           "progress", "get_campaign", "campaign_config"]
