"""The night planner: a pure function from a night's exposures to new jobs and edges.

Graph (DESIGN.md): ZERO/DARK -> biasnight; ARC -> arc (per exposure) -> psfnight;
FLAT -> flat (per exposure) -> fiberflatnight; SCIENCE -> science (per exposure, after the
nightly calibrations) -> stdstars (per tile) -> fluxcalib (per exposure) -> redshift (per tile).

Nightly and per-tile jobs wait for their sequence to be complete. That is decided by rules on
the data, never by the clock: a sequence is complete when its last exposure says so
(SEQNUM == SEQTOT), when an exposure of a later phase of the night has arrived (the survey
always takes zeros, then arcs, then flats, then science), or when the night is closed.

Calibration sets (DESI's rule, docs/architecture.md "Calibration sets"): psfnight and
fiberflatnight are built from the best complete sequences of the night's arcs (flats), not from
every arc: complete = SEQNUM 1..SEQTOT all present (ingested, not quarantined), with at least
``CalibRule.min_arcs`` (``min_flats``) good exposures (LASTSTEP not ``ignore``); best = fewest
bad cameras; sequences tied for best are combined. While the night is open they wait until such
a set exists; once it is closed without one, every good exposure is used (as before sets).

Darks: ZERO exposures make the nightly bias (DARKs only when there are no zeros); the DARKs of
the night and of its neighbours (``dark_neighbours``, the caller's window) make darknight, and
every preproc (arc, flat, science) of the night waits for it when one is planned.

Planning is idempotent and incremental: job keys are deterministic, so existing keys are
skipped and a late exposure only adds its own jobs (plus a new version of its tile's
redshift, which waits for the previous version so the two never write the same file).

Two redshifts per tile (docs/science.md "Per-night and cumulative redshifts"): ``redshift``
over the night's exposures, and ``cumulative`` over the tile's every good exposure on this and
earlier nights (``history``, read by the caller), after the flux calibrations of all of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from . import kinds
from .states import ObsType

#: order of the phases of a night; a later phase arriving closes the earlier ones
_PHASE = {ObsType.ZERO: 0, ObsType.DARK: 0, ObsType.ARC: 1, ObsType.FLAT: 2, ObsType.SCIENCE: 3}
NIGHTLY_CALIBS = ("biasnight", "psfnight", "fiberflatnight")
#: the built-in kinds (core/kinds.py); kinds declared there later are planned by _plan_declared
JOB_KINDS = kinds.BUILTIN


@dataclass(frozen=True)
class ExposureInfo:
    expid: int
    night: int
    obstype: str
    tileid: int | None = None
    cameras: tuple[str, ...] = ()      # good cameras: present minus bad
    seqnum: int | None = None
    seqtot: int | None = None
    #: how far it is processed (DESI's LASTSTEP): "ignore" drops it from every job, "skysub"
    #: stops after the science job (no stdstars/fluxcalib/coadd), "fluxcal" keeps it out of
    #: the tile's redshift (coadd), "all" is everything
    laststep: str = "all"


#: LASTSTEP values, least to most processing
LASTSTEPS = ("ignore", "skysub", "fluxcal", "all")


def _upto(exps: Iterable[ExposureInfo], step: str) -> list[ExposureInfo]:
    """The exposures processed at least through ``step``."""
    need = LASTSTEPS.index(step)
    return [e for e in exps if LASTSTEPS.index(e.laststep) >= need]


@dataclass(frozen=True)
class CalibRule:
    """What a complete calibration set needs ([calib] min_arcs / min_flats; DESI: 3 arcs)."""

    min_arcs: int = 1
    min_flats: int = 1


def calib_sequences(exps: Iterable[ExposureInfo], obstype: str) -> list[list[ExposureInfo]]:
    """The night's ``obstype`` exposures cut into sequences: consecutive exposures (nothing of
    another OBSTYPE between them) with SEQNUM rising under one SEQTOT. An exposure without
    SEQNUM/SEQTOT is a sequence of its own."""
    ordered = sorted(exps, key=lambda e: e.expid)
    seqs: list[list[ExposureInfo]] = []
    prev: ExposureInfo | None = None
    for e in ordered:
        if e.obstype != obstype:
            prev = None
            continue
        if (prev is None or e.seqnum is None or prev.seqnum is None or e.seqtot != prev.seqtot
                or e.seqnum <= prev.seqnum):
            seqs.append([])
        seqs[-1].append(e)
        prev = e
    return seqs


def _complete(seq: list[ExposureInfo]) -> bool:
    if len(seq) == 1 and seq[0].seqnum is None:
        return True
    tot = seq[0].seqtot
    return tot is not None and sorted(e.seqnum for e in seq) == list(range(1, tot + 1))


def best_calib_set(exps: Iterable[ExposureInfo], obstype: str,
                   minimum: int) -> list[ExposureInfo] | None:
    """The good exposures of the best complete set (None: no sequence qualifies).

    Qualifies: complete, with at least ``minimum`` good (LASTSTEP not ignore) exposures.
    Best: fewest bad cameras (the cameras of the night's good ``obstype`` exposures that are
    not good in every good exposure of the sequence); sequences tied for best are combined."""
    exps = list(exps)
    allcams = set(_union_cameras(_upto((e for e in exps if e.obstype == obstype), "skysub")))
    scored = []
    for seq in calib_sequences(exps, obstype):
        good = _upto(seq, "skysub")
        if not _complete(seq) or len(good) < minimum:
            continue
        ok = set.intersection(*(set(e.cameras) for e in good))
        scored.append((len(allcams - ok), good))
    if not scored:
        return None
    least = min(bad for bad, _ in scored)
    return sorted((e for bad, good in scored if bad == least for e in good), key=lambda e: e.expid)


@dataclass(frozen=True)
class CalibRef:
    """A nightly calibration job that science may use: this night's, or an earlier night's."""

    key: str
    night: int


@dataclass(frozen=True)
class PlannedJob:
    key: str
    kind: str
    night: int
    tileid: int | None
    expids: tuple[int, ...]
    cameras: tuple[str, ...]
    deps: tuple[str, ...] = ()         # keys of parent jobs (may belong to an earlier night)
    calib_night: int | None = None     # set when calibrations come from an earlier night
    hold_reason: str | None = None     # set when the job cannot run yet
    #: cameras whose psfnight/fiberflatnight come from another night than calib_night (or
    #: the job's night), ``b3=20261123,r3=20261123``: `calib use --cameras` (science only)
    calib_nights: str | None = None


@dataclass(frozen=True)
class Earlier:
    """A good exposure of a tile on an earlier night (input of the tile's cumulative redshift)
    and the key of its fluxcalib job, which wrote its cframes (None: not planned yet)."""

    info: ExposureInfo
    fluxcalib: str | None


@dataclass
class Plan:
    jobs: list[PlannedJob] = field(default_factory=list)
    quarantine: dict[int, str] = field(default_factory=dict)   # expid -> reason
    waiting: list[str] = field(default_factory=list)           # why something was not planned yet
    released: list[PlannedJob] = field(default_factory=list)   # held jobs that can now run


def job_key(night: int, kind: str, expid: int | None = None) -> str:
    """Deterministic key of a job: ``20261124/psfnight``, ``20261124/arc/26112401``, ..."""
    return f"{night}/{kind}" if expid is None else f"{night}/{kind}/{expid:08d}"


def _union_cameras(exps: Iterable[ExposureInfo]) -> tuple[str, ...]:
    cams: set[str] = set()
    for e in exps:
        cams.update(e.cameras)
    return _canonical(tuple(sorted(cams))) if cams else ()


@lru_cache(maxsize=4096)
def _canonical(cams: tuple[str, ...]) -> tuple[str, ...]:
    # cached: a campaign asks for the same few camera sets ~100 times a night (half of its
    # planning time at 1,000 nights went to parsing them again)
    from .cameras import parse_cameras
    return tuple(parse_cameras(cams))


class _Night:
    """Helper holding one night's exposures and the rules on them."""

    def __init__(self, exposures: list[ExposureInfo], closed: bool):
        self.exps = exposures
        self.closed = closed
        self.by_type: dict[ObsType, list[ExposureInfo]] = defaultdict(list)
        for e in exposures:
            self.by_type[ObsType(e.obstype)].append(e)

    def of(self, *types: ObsType) -> list[ExposureInfo]:
        return sorted((e for t in types for e in self.by_type.get(t, [])), key=lambda e: e.expid)

    def phase_done(self, *types: ObsType) -> bool:
        if self.closed:
            return True
        phase = max(_PHASE[t] for t in types)
        if any(_PHASE[ObsType(e.obstype)] > phase for e in self.exps):
            return True
        mine = self.of(*types)
        return bool(mine) and _sequence_ended(mine[-1])


def _sequence_ended(e: ExposureInfo) -> bool:
    return e.seqtot is not None and e.seqnum is not None and e.seqnum >= e.seqtot


def plan_night(night: int, exposures: Iterable[ExposureInfo], existing: Iterable[str] = (),
               closed: bool = False, fallback: Mapping[str, CalibRef] | None = None,
               held: Iterable[str] = (), redefine: bool = False,
               chosen: Mapping[str, CalibRef] | None = None,
               no_fallback: str | None = None,
               history: Mapping[int, Iterable[Earlier]] | None = None,
               by_camera: Mapping[str, tuple[CalibRef, CalibRef] | str] | None = None,
               rule: CalibRule | None = None,
               dark_neighbours: Iterable[ExposureInfo] = ()) -> Plan:
    """The built-in kinds' rules (below), then the generic rule of every declared kind.

    history: {tileid: its good exposures on earlier nights} for the cumulative redshifts;
    None plans none (a caller that cannot read the production's other nights, e.g. a
    campaign, never plans a cumulative fit over fewer exposures than it should have).
    by_camera: per-camera choices (`calib use --cameras`): camera -> (psfnight, fiberflatnight)
      of the chosen night, or why that night cannot serve (the science on it is held)."""
    exposures, existing = list(exposures), set(existing)
    plan = _plan_builtin(night, exposures, existing, closed, fallback, held, redefine, chosen,
                         no_fallback, history, by_camera or {}, rule or CalibRule(),
                         list(dark_neighbours))
    if kinds.declared():
        _plan_declared(plan, night, exposures, existing, closed, set(held))
    return plan


def _plan_builtin(night: int, exposures: Iterable[ExposureInfo], existing: Iterable[str] = (),
                  closed: bool = False, fallback: Mapping[str, CalibRef] | None = None,
                  held: Iterable[str] = (), redefine: bool = False,
                  chosen: Mapping[str, CalibRef] | None = None,
                  no_fallback: str | None = None,
                  history: Mapping[int, Iterable[Earlier]] | None = None,
                  by_camera: Mapping[str, tuple[CalibRef, CalibRef] | str] | None = None,
                  rule: CalibRule = CalibRule(),
                  dark_neighbours: list[ExposureInfo] | None = None) -> Plan:
    """New jobs for ``night``.

    exposures: the night's ingested (not quarantined) exposures.
    existing: keys of jobs already in the database (any night).
    closed: the night is over (one-shot ingest of a finished night, or end-of-night rule).
    fallback: nearest earlier night's calibration job per kind in NIGHTLY_CALIBS, used when
      this night has none; science without any PSF/fiberflat is planned but held.
    held: keys of existing jobs held for missing calibrations. Those the data now allow (late
      arcs tonight, or an earlier night's calibrations processed since) come back in
      ``Plan.released`` with their new parents.
    redefine: also return the jobs whose keys exist, as the data now define them (an
      exposure edit re-plans the jobs that have not run from this).
    chosen: psfnight and fiberflatnight picked by an operator (`calib use`, an override file):
      science uses them whatever tonight has.
    no_fallback: why ``fallback`` holds no calibrations (age, cameras): the held jobs' reason.
    rule: what a complete arc/flat set needs (module docstring, "Calibration sets").
    dark_neighbours: DARK exposures of other nights within the dark window: darknight
      combines them with tonight's.
    """
    existing = set(existing)
    held = set(held)
    fallback = dict(fallback or {})
    plan = Plan()
    seen: dict[int, ExposureInfo] = {}
    good: list[ExposureInfo] = []
    for e in sorted(exposures, key=lambda e: e.expid):
        if e.expid in seen:
            plan.quarantine[e.expid] = f"duplicate EXPID {e.expid}"
            continue
        seen[e.expid] = e
        try:
            ObsType(e.obstype)
        except ValueError:
            plan.quarantine[e.expid] = (f"unknown OBSTYPE {e.obstype!r} (expected one of "
                                        f"{', '.join(t.value for t in ObsType)})")
            continue
        if e.night != night:
            plan.quarantine[e.expid] = f"exposure NIGHT {e.night} is not night {night}"
            continue
        good.append(e)
    n = _Night(good, closed)
    out: dict[str, PlannedJob] = {}

    def add(job: PlannedJob) -> None:
        if job.key in held and job.hold_reason is None:
            plan.released.append(job)
        elif (redefine or job.key not in existing) and job.key not in out:
            out[job.key] = job

    def nightly(kind: str, types: tuple[ObsType, ...],
                minimum: int = 0) -> tuple[bool, CalibRef | None, list[ExposureInfo]]:
        """(decided, reference, tonight's inputs) for one nightly calibration: tonight's, an
        earlier one, or None. ``minimum``: tonight's inputs are the best complete set with at
        least that many good exposures (calibration sets); 0: every good exposure."""
        mine = _upto(n.of(*types), "skysub")
        if not n.phase_done(*types):
            if mine:
                plan.waiting.append(f"{kind}: waiting for the rest of the "
                                    f"{'/'.join(t.value for t in types)} sequence")
            return False, None, []
        if mine and minimum:
            best = best_calib_set(n.exps, types[0].value, minimum)
            if best is None and not n.closed:
                plan.waiting.append(f"{kind}: waiting for a complete {types[0].value} sequence "
                                    f"(SEQNUM 1..SEQTOT) of at least {minimum} good exposures")
                return False, None, []
            mine = best or mine     # closed without a complete set: every good one
        if mine:
            return True, CalibRef(job_key(night, kind), night), mine
        return True, fallback.get(kind), []

    # --- bias, dark -------------------------------------------------------------------
    # Zeros make the bias; darks only without zeros (their dark current would enter it).
    zeros = (_upto(n.of(ObsType.ZERO), "skysub")
             or _upto(n.of(ObsType.DARK), "skysub"))
    bias_ok, bias, _ = nightly("biasnight", (ObsType.ZERO, ObsType.DARK))
    if bias_ok and zeros:
        add(PlannedJob(bias.key, "biasnight", night, None, tuple(e.expid for e in zeros),
                       _union_cameras(zeros)))
    bias_deps = (bias.key,) if bias else ()
    if not bias_ok:
        plan.jobs = list(out.values())
        return plan
    darks = _upto(n.of(ObsType.DARK), "skysub") if n.of(ObsType.ZERO) else []
    darks += [e for e in dark_neighbours or () if e.obstype == ObsType.DARK.value
              and e.night != night and e.laststep != "ignore"]
    dark_key = job_key(night, "darknight")
    if darks:
        darks.sort(key=lambda e: e.expid)
        add(PlannedJob(dark_key, "darknight", night, None, tuple(e.expid for e in darks),
                       _union_cameras(darks), bias_deps))
    # every preproc subtracts the measured dark: it waits for the night's darknight
    pre_deps = (*bias_deps, dark_key) if darks or dark_key in existing else bias_deps

    # --- arcs -> psfnight ---------------------------------------------------------------
    for e in _upto(n.of(ObsType.ARC), "skysub"):
        add(PlannedJob(job_key(night, "arc", e.expid), "arc", night, None, (e.expid,),
                       e.cameras, pre_deps))
    psf_ok, psf, arcs = nightly("psfnight", (ObsType.ARC,), rule.min_arcs)
    if psf_ok and arcs:
        add(PlannedJob(psf.key, "psfnight", night, None, tuple(e.expid for e in arcs),
                       _union_cameras(arcs), tuple(job_key(night, "arc", e.expid) for e in arcs)))
    if not psf_ok:
        plan.jobs = list(out.values())
        return plan

    # --- flats -> fiberflatnight --------------------------------------------------------
    no_psf = None if psf else f"no PSF calibration (no arcs) on night {night} or any earlier night"
    for e in _upto(n.of(ObsType.FLAT), "skysub"):
        add(PlannedJob(job_key(night, "flat", e.expid), "flat", night, None, (e.expid,),
                       e.cameras, (*pre_deps, psf.key) if psf else pre_deps,
                       calib_night=psf.night if psf and psf.night != night else None,
                       hold_reason=no_psf))
    ff_ok, ff, flats = nightly("fiberflatnight", (ObsType.FLAT,), rule.min_flats)
    if ff_ok and flats:
        add(PlannedJob(ff.key, "fiberflatnight", night, None, tuple(e.expid for e in flats),
                       _union_cameras(flats), tuple(job_key(night, "flat", e.expid) for e in flats),
                       hold_reason=no_psf))
    if not ff_ok:
        plan.jobs = list(out.values())
        return plan

    # --- science, per exposure, then per tile ---------------------------------------------
    psf, ff, mixed = _one_calib_night(psf, ff, fallback, chosen)
    missing = [k for k, ref in (("psfnight", psf), ("fiberflatnight", ff)) if ref is None]
    hold = (f"no {' or '.join(missing)} calibration on night {night}"
            + (f" ({mixed})" if mixed else "")
            + (f"; {no_fallback}" if no_fallback else " or any earlier night")
            if missing else None)
    calib_nights = {ref.night for ref in (psf, ff) if ref is not None} - {night}
    calib_night = min(calib_nights) if calib_nights else None
    calib_deps = (*pre_deps, *(ref.key for ref in (psf, ff) if ref is not None))
    tiles: dict[int, list[ExposureInfo]] = defaultdict(list)
    for e in n.of(ObsType.SCIENCE):
        if e.laststep != "ignore":
            deps, why, word = _per_camera(e.cameras, calib_deps, calib_night or night, hold,
                                          by_camera or {})
            add(PlannedJob(job_key(night, "science", e.expid), "science", night, e.tileid,
                           (e.expid,), e.cameras, deps, calib_night, why, word))
        tiles[e.tileid if e.tileid is not None else -1].append(e)

    for tile, every in tiles.items():
        if not _tile_done(n, tile, every):
            plan.waiting.append(f"tile {tile}: waiting for the rest of its exposures")
            continue
        texps = _upto(every, "fluxcal")
        if not texps:
            continue
        std_key = f"{night}/stdstars/{tile}"
        add(PlannedJob(std_key, "stdstars", night, tile, tuple(e.expid for e in texps),
                       _union_cameras(texps),
                       tuple(job_key(night, "science", e.expid) for e in texps),
                       calib_night, hold))
        for e in texps:
            add(PlannedJob(job_key(night, "fluxcalib", e.expid), "fluxcalib", night, tile,
                           (e.expid,), e.cameras, (job_key(night, "science", e.expid), std_key),
                           calib_night, hold))
        zexps = _upto(texps, "all")
        if not zexps:
            continue
        # Keyed by the tile's last exposure whatever its LASTSTEP: an edit never renames it.
        z_key = f"{night}/redshift/{tile}/{every[-1].expid:08d}"
        earlier = sorted(k for k in existing | set(out)
                         if k.startswith(f"{night}/redshift/{tile}/") and k < z_key)
        add(PlannedJob(z_key, "redshift", night, tile, tuple(e.expid for e in zexps),
                       _union_cameras(zexps),
                       (*(job_key(night, "fluxcalib", e.expid) for e in zexps), *earlier[-1:]),
                       calib_night, hold))
        if history is not None:
            add(_cumulative(night, tile, every[-1].expid, zexps, history.get(tile, ()),
                            existing | set(out), calib_night, hold))

    plan.jobs = list(out.values())
    return plan


def _cumulative(night: int, tile: int, last: int, zexps: list[ExposureInfo],
                before: Iterable[Earlier], known: set[str], calib_night: int | None,
                hold: str | None) -> PlannedJob:
    """The tile's cumulative redshift through ``night``: every good exposure (LASTSTEP all,
    some good camera) of this and earlier nights, after the fluxcalib job of each (the
    earlier nights' too: SLURM afterok while they are queued, nothing once completed, and
    dep_failed with their reason if they failed). An earlier exposure whose fluxcalib job
    is not planned yet holds it: it never fits fewer exposures than the tile has."""
    key = f"{night}/cumulative/{tile}/{last:08d}"
    prev = sorted(k for k in known if k.startswith(f"{night}/cumulative/{tile}/") and k < key)
    old = sorted((b for b in before if b.info.night < night and b.info.laststep == "all"
                  and b.info.cameras), key=lambda b: (b.info.night, b.info.expid))
    missing = [b.info for b in old if b.fluxcalib is None]
    if missing and hold is None:
        hold = (f"tile {tile}: no flux calibration job yet for earlier exposure(s) "
                + ", ".join(f"{e.expid} (night {e.night})" for e in missing))
    exps = [b.info for b in old] + zexps
    deps = (*(b.fluxcalib for b in old if b.fluxcalib),
            *(job_key(night, "fluxcalib", e.expid) for e in zexps), *prev[-1:])
    return PlannedJob(key, "cumulative", night, tile, tuple(e.expid for e in exps),
                      _union_cameras(exps), deps, calib_night, hold)


def _one_calib_night(psf: CalibRef | None, ff: CalibRef | None, fallback: Mapping[str, CalibRef],
                     chosen: Mapping[str, CalibRef] | None
                     ) -> tuple[CalibRef | None, CalibRef | None, str | None]:
    """psfnight and fiberflatnight for science, always from one night: the fiberflat is
    measured through that night's traces. Tonight's half (arcs without flats) gives way to a
    fallback night holding both; without one, neither is used (the science is held)."""
    if chosen is not None:      # an operator's choice; empty: the chosen night has none (hold)
        return chosen.get("psfnight"), chosen.get("fiberflatnight"), None
    if psf is None or ff is None or psf.night == ff.night:
        return psf, ff, None
    fb_psf, fb_ff = fallback.get("psfnight"), fallback.get("fiberflatnight")
    if fb_psf and fb_ff and fb_psf.night == fb_ff.night:
        return fb_psf, fb_ff, None
    return None, None, (f"psfnight of {psf.night} and fiberflatnight of {ff.night} "
                        "are never mixed")


def _per_camera(cameras: Iterable[str], deps: tuple[str, ...], base: int, hold: str | None,
                by_camera: Mapping[str, tuple[CalibRef, CalibRef] | str]
                ) -> tuple[tuple[str, ...], str | None, str | None]:
    """A science job's (deps, hold, calib_nights) under per-camera choices: each chosen
    camera adds its night's psfnight and fiberflatnight as parents. A job held for want of the
    night's own calibrations stays held (its other cameras need them too)."""
    mine = {c: by_camera[c] for c in cameras if c in by_camera}
    if not mine or hold:
        return deps, hold, None
    pairs: dict[str, tuple[CalibRef, CalibRef]] = {}
    for c, ref in sorted(mine.items()):
        if isinstance(ref, str):
            return deps, f"{c}: {ref}", None
        pairs[c] = ref
    extra = [r.key for pair in pairs.values() for r in pair if r.key not in deps]
    word = ",".join(f"{c}={psf.night}" for c, (psf, _) in pairs.items() if psf.night != base)
    return deps + tuple(dict.fromkeys(extra)), None, word or None


def _tile_done(n: _Night, tile: int, texps: list[ExposureInfo]) -> bool:
    if n.closed or _sequence_ended(texps[-1]):
        return True
    last = texps[-1].expid
    # Another tile (or anything else) observed after this tile's last exposure closes it.
    return any(e.expid > last and (e.obstype != ObsType.SCIENCE or e.tileid != tile)
               for e in n.exps)


def _plan_declared(plan: Plan, night: int, exposures: list[ExposureInfo], existing: set[str],
                   closed: bool, held: set[str]) -> None:
    """Jobs of kinds declared in the registry (core/kinds.py), by their generic rule: one job
    per exposure / tile / night over exposures of the kind's OBSTYPEs, once every parent job
    (of the ``after`` kinds, covering the same exposures) exists. A parent's hold and
    calibration night pass to the child."""
    good = [e for e in exposures if e.expid not in plan.quarantine and e.night == night
            and e.obstype in {t.value for t in ObsType}]
    n = _Night(good, closed)
    new = {j.key: j for j in plan.jobs}
    known = existing | set(new)
    released = {j.key: j for j in plan.released}
    still_held = held - set(released)

    def parents_of(kind: kinds.JobKind, exps: list[ExposureInfo], tile: int | None) -> list[str] | None:
        keys: list[str] = []
        for pname in kind.after:
            parent = kinds.get(pname)
            if parent.granularity == "exposure":
                want = [job_key(night, pname, e.expid) for e in exps]
            elif parent.granularity == "tile":
                mine = f"{night}/{pname}/{tile}"    # redshift keys add /EXPID of the version
                want = [k for k in sorted(known) if k == mine or k.startswith(mine + "/")][-1:] \
                    or [mine]
            else:
                want = [job_key(night, pname)]
            if not all(k in known for k in want):
                return None                     # a parent is not planned yet: wait for it
            keys += want
        return keys

    for kind in kinds.declared():
        types = tuple(ObsType(t) for t in kind.obstypes)
        exps = n.of(*types)
        if kind.granularity == "exposure":
            groups = [((e,), e.tileid, job_key(night, kind.name, e.expid)) for e in exps]
        elif kind.granularity == "tile":
            tiles: dict[int, list[ExposureInfo]] = defaultdict(list)
            for e in exps:
                tiles[e.tileid if e.tileid is not None else -1].append(e)
            groups = [(tuple(t), tile, f"{night}/{kind.name}/{tile}") for tile, t in tiles.items()
                      if _tile_done(n, tile, t)]
        else:
            groups = [(tuple(exps), None, job_key(night, kind.name))] \
                if exps and n.phase_done(*types) else []
        for group, tile, key in groups:
            if key in known and key in still_held:
                # held with its parents: released with them, once none of them is held
                deps = parents_of(kind, list(group), tile)
                if deps is not None and not any(d in still_held or (d in new and new[d].hold_reason)
                                                for d in deps):
                    up = [released[d] for d in deps if d in released]
                    job = PlannedJob(key, kind.name, night, tile, tuple(e.expid for e in group),
                                     _union_cameras(group), tuple(deps),
                                     next((u.calib_night for u in up if u.calib_night), None))
                    plan.released.append(job)
                    released[key] = job
                    still_held.discard(key)
                continue
            if key in known:
                continue
            deps = parents_of(kind, list(group), tile)
            if deps is None:
                plan.waiting.append(f"{key}: waiting for its parent jobs to be planned")
                continue
            up = [new[d] for d in deps if d in new]
            job = PlannedJob(key, kind.name, night, tile, tuple(e.expid for e in group),
                             _union_cameras(group), tuple(deps),
                             next((u.calib_night for u in up if u.calib_night), None),
                             next((u.hold_reason for u in up if u.hold_reason), None))
            plan.jobs.append(job)
            new[key] = job
            known.add(key)
