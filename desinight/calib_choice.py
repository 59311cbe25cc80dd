"""Which calibrations a night's science uses: chosen, not guessed.

Per camera, an operator's choice for that camera (`desinight calib use NIGHT --from REF
--cameras b3`, the ``calib_camera_choice`` table) comes first; the science jobs on it then read
that camera's calibnight files from REF (``Job.calib_nights``, `step run --calib-nights`). For
the night as a whole, in order: an operator's choice (`desinight calib use NIGHT --from REF`, recorded in the
``calib_choice`` table), a per-night override file (``calib-NIGHT.toml`` in
``[calib] overrides_dir``), the night's own arcs and flats, or the automatic fallback: the
nearest earlier night at most ``calib.max_calib_age_nights`` back whose psfnight and
fiberflatnight both exist (not failed) and cover every camera the night needs. psfnight and
fiberflatnight always come from one night (the fiberflat is measured through that night's
traces). When nothing qualifies, the science is held and the reason says why.

The override file can also narrow the calibration exposures a night builds its own
calibrations from (``include_expids`` / ``exclude_expids``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .config import Config, read_toml
from .core.cameras import camera_word, parse_cameras
from .core.errors import ConfigError, DesinightError, NotFound
from .core.planner import NIGHTLY_CALIBS, CalibRef, ExposureInfo, plan_night
from .core.states import BROKEN, JobState
from .db import repo
from .db.models import CalibCameraChoice, CalibChoice, Job, JobEdge, Production, utcnow

PAIR = ("psfnight", "fiberflatnight")
_CALIB_TYPES = {"ZERO", "DARK", "ARC", "FLAT"}
_FILE_KEYS = {"night", "from", "include_expids", "exclude_expids", "comment"}


# --- nights -----------------------------------------------------------------------------------
def night_date(night: int) -> date:
    return date(night // 10000, night // 100 % 100, night % 100)


def nights_before(night: int, n: int) -> int:
    """The night ``n`` calendar nights before ``night`` (YYYYMMDD arithmetic)."""
    d = night_date(night) - timedelta(days=n)
    return d.year * 10000 + d.month * 100 + d.day


def age(night: int, ref: int) -> int:
    return (night_date(night) - night_date(ref)).days


# --- the override file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """A night's calibration choice: the reference night and/or the calibration exposures."""

    night: int
    ref_night: int | None = None
    include: frozenset[int] = frozenset()
    exclude: frozenset[int] = frozenset()
    origin: str = ""          # "calib use by operator:x at ...", "file /path/calib-N.toml"
    comment: str | None = None


def override_path(cfg: Config, night: int) -> Path:
    return cfg.calib_overrides / f"calib-{night}.toml"


def load_override(path: Path, night: int | None = None) -> Override:
    """Read and check one override file; every problem is one line naming the file and key."""
    data = read_toml(path)
    for key in data:
        if key not in _FILE_KEYS:
            raise ConfigError(f"{path}: unknown key {key} (known: {', '.join(sorted(_FILE_KEYS))})")
    n = _night(path, "night", data.get("night"))
    if night is not None and n != night:
        raise ConfigError(f"{path}: night = {n} but the file is for night {night}")
    ref = _night(path, "from", data["from"]) if "from" in data else None
    if ref == n:
        raise ConfigError(f"{path}: from = {ref} is the night itself")
    inc, exc = (frozenset(_expids(path, k, data.get(k, []))) for k in ("include_expids",
                                                                      "exclude_expids"))
    if inc & exc:
        raise ConfigError(f"{path}: EXPID {min(inc & exc)} is in both include_expids and "
                          "exclude_expids")
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise ConfigError(f"{path}: comment must be text")
    return Override(n, ref, inc, exc, f"file {path}", comment)


def _night(path: Path, key: str, value: Any) -> int:
    if value is None:
        raise ConfigError(f"{path}: {key} is required (YYYYMMDD)")
    try:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        night_date(value)
    except ValueError:
        raise ConfigError(f"{path}: {key} must be a YYYYMMDD night, got {value!r}") from None
    return value


def _expids(path: Path, key: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              and v > 0 for v in value):
        raise ConfigError(f"{path}: {key} must be a list of EXPIDs (positive integers)")
    return value


def choice_for(s: Session, cfg: Config, prod: Production, night: int) -> Override | None:
    """The night's override: the recorded `calib use` (reference night) over the file's."""
    path = override_path(cfg, night)
    found = load_override(path, night) if path.is_file() else None
    row = s.scalar(select(CalibChoice).where(CalibChoice.production_id == prod.id,
                                             CalibChoice.night == night))
    if row is None:
        return found
    at = row.at.strftime("%Y-%m-%d %H:%M UTC")
    return Override(night, row.ref_night, found.include if found else frozenset(),
                    found.exclude if found else frozenset(),
                    f"calib use by {row.actor} at {at}", row.reason)


def camera_choices(s: Session, prod: Production, night: int) -> dict[str, CalibCameraChoice]:
    """The night's per-camera choices (`calib use --cameras`), by camera."""
    return {r.camera: r for r in s.scalars(select(CalibCameraChoice).where(
        CalibCameraChoice.production_id == prod.id, CalibCameraChoice.night == night))}


def _by_camera(s: Session, prod: Production, refs: dict[str, int]
               ) -> dict[str, tuple[CalibRef, CalibRef] | str]:
    """camera -> its chosen night's (psfnight, fiberflatnight), or why that night cannot
    serve it any more (failed since): the science on that camera is held, never re-guessed."""
    out: dict[str, tuple[CalibRef, CalibRef] | str] = {}
    for cam, n in refs.items():
        ref = _calib_nights(s, prod, n, n).get(n)
        if ref is not None and all(k in ref.keys and cam in ref.cameras[k] for k in PAIR):
            out[cam] = (ref.refs()["psfnight"], ref.refs()["fiberflatnight"])
        else:
            out[cam] = f"the chosen reference night {n} has no psfnight and fiberflatnight for {cam}"
    return out


# --- the calibrations on record -------------------------------------------------------------------
@dataclass
class NightCalibs:
    """A night's psfnight and fiberflatnight jobs (not failed): keys and cameras."""

    night: int
    keys: dict[str, str] = field(default_factory=dict)
    cameras: dict[str, set[str]] = field(default_factory=dict)

    def covers(self, needed: set[str]) -> bool:
        return all(k in self.keys and needed <= self.cameras[k] for k in PAIR)

    def refs(self) -> dict[str, CalibRef]:
        return {k: CalibRef(self.keys[k], self.night) for k in PAIR}


def _calib_nights(s: Session, prod: Production, lo: int, hi: int) -> dict[int, NightCalibs]:
    out: dict[int, NightCalibs] = {}
    for key, kind, night, cams in s.execute(select(Job.key, Job.kind, Job.night, Job.cameras).where(
            Job.production_id == prod.id, Job.kind.in_(PAIR), Job.night.between(lo, hi),
            Job.state.not_in([st.value for st in BROKEN]))):
        nc = out.setdefault(night, NightCalibs(night))
        nc.keys[kind] = key
        nc.cameras[kind] = set(parse_cameras(cams.split(","))) if cams else set()
    return out


def needed_cameras(exps: list[ExposureInfo]) -> set[str]:
    """The cameras whose science (and flats) need a psfnight and a fiberflatnight."""
    return {c for e in exps if e.obstype in ("SCIENCE", "FLAT") for c in e.cameras}


def auto_fallback(s: Session, cfg: Config, prod: Production, night: int,
                  needed: set[str]) -> tuple[dict[str, CalibRef], str | None]:
    """The automatic fallback: biasnight as before (nearest earlier), psfnight and
    fiberflatnight together from the nearest qualifying night; else why none qualifies."""
    out = {k: v for k, v in _nearest_bias(s, prod, night).items()}
    k = cfg.max_calib_age_nights
    lo = nights_before(night, k)
    recent = _calib_nights(s, prod, lo, night - 1) if k else {}
    for n in sorted(recent, reverse=True):
        if recent[n].covers(needed):
            out.update(recent[n].refs())
            return out, None
    cams = camera_word(needed) if needed else "any camera"
    why = f"none within {k} nights before (calib.max_calib_age_nights) covers {cams}"
    older = _calib_nights(s, prod, 0, lo - 1)
    both = [n for n in sorted(older, reverse=True) if older[n].covers(needed)]
    if both:
        why += f" (nearest: {both[0]}, {age(night, both[0])} nights before)"
    return out, why


def _nearest_bias(s: Session, prod: Production, night: int) -> dict[str, CalibRef]:
    row = s.execute(select(Job.key, Job.night).where(
        Job.production_id == prod.id, Job.kind == "biasnight", Job.night < night,
        Job.state.not_in([st.value for st in BROKEN])).order_by(Job.night.desc()).limit(1)).first()
    return {"biasnight": CalibRef(row.key, row.night)} if row else {}


def plan_inputs(s: Session, cfg: Config, prod: Production, night: int,
                exps: list[ExposureInfo]) -> tuple[list[ExposureInfo], dict[str, Any]]:
    """The exposures and the calibration arguments ``plan_night`` gets for this night.

    A broken override file holds the night's science with the file's error as the reason:
    the operator meant to choose, so no guess is made, and the daemon's other nights go on."""
    try:
        choice = choice_for(s, cfg, prod, night)
    except ConfigError as e:
        fallback, _ = auto_fallback(s, cfg, prod, night, needed_cameras(exps))
        return exps, {"fallback": fallback, "chosen": {},
                      "no_fallback": f"calibration override refused: {e}"}
    if choice is not None and (choice.include or choice.exclude):
        exps = [e for e in exps if e.obstype not in _CALIB_TYPES
                or ((not choice.include or e.expid in choice.include)
                    and e.expid not in choice.exclude)]
    fallback, why = auto_fallback(s, cfg, prod, night, needed_cameras(exps))
    chosen = None
    if choice is not None and choice.ref_night is not None:
        ref = _calib_nights(s, prod, choice.ref_night, choice.ref_night).get(choice.ref_night)
        if ref is None or not all(k in ref.keys for k in PAIR):
            why = f"the chosen reference night {choice.ref_night} has no psfnight and fiberflatnight"
            chosen = {}     # held: never silently back to a guess
        else:
            chosen = ref.refs()
    by_camera = _by_camera(s, prod, {c: r.ref_night
                                     for c, r in camera_choices(s, prod, night).items()})
    return exps, {"fallback": fallback, "no_fallback": why, "chosen": chosen,
                  "by_camera": by_camera}


# --- calib use -------------------------------------------------------------------------------------
@dataclass
class Change:
    """What `calib use` did (or, dry, would do)."""

    night: int
    ref_night: int
    cameras: list[str] = field(default_factory=list)       # `--cameras`; empty: the whole night
    replanned: list[str] = field(default_factory=list)     # one line per changed job
    untouched: list[str] = field(default_factory=list)     # jobs already submitted or run
    held: list[str] = field(default_factory=list)          # jobs still held, with the reason


def use(s: Session, cfg: Config, prod: Production, night: int, ref_night: int, actor: str,
        dry_run: bool = False, reason: str | None = None,
        cameras: list[str] | None = None) -> Change:
    """Take ``night``'s psfnight and fiberflatnight from ``ref_night`` (only for ``cameras``
    when given); re-plan its jobs not yet submitted. With ``dry_run`` the same answer, nothing
    written."""
    if cameras:
        return _use_cameras(s, cfg, prod, night, ref_night, cameras, actor, dry_run, reason)
    if ref_night == night:
        raise DesinightError(f"--from {ref_night} is night {night} itself")
    exps = repo.exposure_infos(s, prod, night)
    if not exps:
        raise NotFound(f"night {night} has no exposures in production {prod.name}")
    ref = _calib_nights(s, prod, ref_night, ref_night).get(ref_night)
    lacking = [k for k in PAIR if ref is None or k not in ref.keys]
    if lacking:
        raise NotFound(f"night {ref_night} has no {' or '.join(lacking)} in production "
                       f"{prod.name} (not planned, or failed)")
    needed = needed_cameras(exps)
    for k in PAIR:
        if not needed <= ref.cameras[k]:
            raise DesinightError(f"night {ref_night}'s {k} lacks {camera_word(needed - ref.cameras[k])}"
                                 f" (night {night} needs {camera_word(needed)})")
    change = Change(night, ref_night)
    _replan(s, cfg, prod, night, actor, change, dry_run, chosen=ref.refs())
    if not dry_run:
        s.execute(delete(CalibChoice).where(CalibChoice.production_id == prod.id,
                                            CalibChoice.night == night))
        s.add(CalibChoice(production_id=prod.id, night=night, ref_night=ref_night, actor=actor,
                          reason=reason, at=utcnow()))
        s.flush()
    return change


def _use_cameras(s: Session, cfg: Config, prod: Production, night: int, ref_night: int,
                 cameras: list[str], actor: str, dry_run: bool, reason: str | None) -> Change:
    """`calib use --cameras`: those cameras' psfnight and fiberflatnight from ``ref_night``
    (``--from`` the night itself: back to the night's own choice); the other cameras keep what
    they had. Choices for different cameras compose."""
    exps = repo.exposure_infos(s, prod, night)
    if not exps:
        raise NotFound(f"night {night} has no exposures in production {prod.name}")
    cams = parse_cameras(cameras)
    absent = set(cams) - {c for e in exps for c in e.cameras}
    if absent:
        raise NotFound(f"night {night} has no camera {camera_word(absent)} in production "
                       f"{prod.name}")
    if ref_night != night:
        ref = _calib_nights(s, prod, ref_night, ref_night).get(ref_night)
        lacking = [k for k in PAIR if ref is None or k not in ref.keys]
        if lacking:
            raise NotFound(f"night {ref_night} has no {' or '.join(lacking)} in production "
                           f"{prod.name} (not planned, or failed)")
        for k in PAIR:
            if not set(cams) <= ref.cameras[k]:
                raise NotFound(f"night {ref_night}'s {k} lacks "
                               f"{camera_word(set(cams) - ref.cameras[k])} in production {prod.name}")
    refs = {c: r.ref_night for c, r in camera_choices(s, prod, night).items()}
    for c in cams:
        if ref_night == night:
            refs.pop(c, None)
        else:
            refs[c] = ref_night
    change = Change(night, ref_night, cams)
    _replan(s, cfg, prod, night, actor, change, dry_run, by_camera=_by_camera(s, prod, refs))
    if not dry_run:
        s.execute(delete(CalibCameraChoice).where(
            CalibCameraChoice.production_id == prod.id, CalibCameraChoice.night == night,
            CalibCameraChoice.camera.in_(cams)))
        if ref_night != night:
            s.add_all(CalibCameraChoice(production_id=prod.id, night=night, camera=c,
                                        ref_night=ref_night, actor=actor, reason=reason,
                                        at=utcnow()) for c in cams)
        s.flush()
    return change


def calib_text(night: int, calib_night: int | None, calib_nights: str | None) -> str:
    """``20261124`` or ``20261124 (b3=20261123)``: the nights a job's calibrations come from."""
    return f"{calib_night or night}" + (f" ({calib_nights})" if calib_nights else "")


_KEEP: Any = object()


def _replan(s: Session, cfg: Config, prod: Production, night: int, actor: str, change: Change,
            dry_run: bool, chosen: Any = _KEEP, by_camera: Any = _KEEP) -> None:
    """Point the night's planned and held jobs at the chosen calibrations (``chosen`` for the
    night, ``by_camera`` per camera; else as on record): their calibration parents,
    calib_night, calib_nights and hold. Jobs already submitted or run are listed, not touched."""
    from .db.bulk import key_ids
    from .transitions import transition
    exps = repo.exposure_infos(s, prod, night)
    exps, kw = plan_inputs(s, cfg, prod, night, exps)
    if chosen is not _KEEP:
        kw["chosen"] = chosen
    if by_camera is not _KEEP:
        kw["by_camera"] = by_camera
    from .plan_extras import plan_extras    # the calibration-set rule and darks, as the night's plan
    want = {pj.key: pj for pj in plan_night(night, exps, (), closed=True, **kw,
                                            **plan_extras(s, cfg, prod, night)).jobs}
    jobs = s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)
                     .order_by(Job.id)).all()
    parents = repo.parents_of(s, [j.id for j in jobs])
    ids = key_ids(s, prod, [d for pj in want.values() for d in pj.deps])
    how = f"calib use --from {change.ref_night}" + (
        f" --cameras {camera_word(change.cameras)}" if change.cameras else "")
    for job in jobs:
        pj = want.get(job.key)
        if pj is None or pj.kind in NIGHTLY_CALIBS or pj.kind in ("arc", "flat"):
            continue
        old = {p.key: p.id for p in parents[job.id] if p.kind in NIGHTLY_CALIBS}
        new = {d for d in pj.deps if d.split("/")[1] in NIGHTLY_CALIBS}
        held = job.state == JobState.HELD.value
        if held and pj.hold_reason:
            change.held.append(f"{job.key} ({pj.hold_reason})")
            continue
        if (set(old) == new and job.calib_night == pj.calib_night
                and job.calib_nights == pj.calib_nights and not held):
            continue
        if job.state not in (JobState.PLANNED.value, JobState.HELD.value):
            change.untouched.append(f"{job.key} ({job.state})")
            continue
        was = "none" if held else calib_text(night, job.calib_night, job.calib_nights)
        change.replanned.append(f"{job.key}: calibrations {was} -> "
                                f"{calib_text(night, pj.calib_night, pj.calib_nights)}"
                                + ("; held -> planned" if held else ""))
        if dry_run:
            continue
        values = {"calib_night": pj.calib_night, "calib_nights": pj.calib_nights}
        if held:
            transition(s, [job.id], JobState.PLANNED, how, actor, expect=[JobState.HELD],
                       values={"hold_reason": None, **values})
        else:
            s.execute(update(Job).where(Job.id == job.id).values(**values))
        gone = [pid for k, pid in old.items() if k not in new]
        if gone:
            s.execute(delete(JobEdge).where(JobEdge.child_id == job.id,
                                            JobEdge.parent_id.in_(gone)))
        for key in sorted(new - set(old)):
            s.add(JobEdge(parent_id=ids[key], child_id=job.id))
    s.flush()


# --- calib show -------------------------------------------------------------------------------------
def show(s: Session, cfg: Config, prod: Production, night: int) -> dict[str, Any]:
    """Where each camera's psfnight and fiberflatnight come from, and why."""
    all_exps = repo.exposure_infos(s, prod, night)
    if not all_exps:
        raise NotFound(f"night {night} has no exposures in production {prod.name}")
    exps, kw = plan_inputs(s, cfg, prod, night, all_exps)
    choice = choice_for(s, cfg, prod, night)
    needed = needed_cameras(exps) or {c for e in exps for c in e.cameras}
    own = _calib_nights(s, prod, night, night).get(night, NightCalibs(night))
    fb = kw["fallback"]
    per_cam = camera_choices(s, prod, night)
    cams: dict[str, dict[str, Any]] = {}
    for cam in sorted(needed, key=lambda c: (int(c[1:]), "brz".index(c[0]))):
        if cam in per_cam:
            row, ok = per_cam[cam], not isinstance(kw["by_camera"].get(cam), str)
            n = row.ref_night if ok else None
            src = (f"chosen for {cam} ({_origin(row)})" if ok
                   else f"held: {kw['by_camera'][cam]}")
        elif kw["chosen"] is not None:
            ref = kw["chosen"].get("psfnight")
            src = (f"chosen ({choice.origin})" if ref else
                   f"held: {kw['no_fallback']}")
            n = ref.night if ref else None
        elif all(k in own.keys and cam in own.cameras[k] for k in PAIR):
            n, src = night, "own (this night's arcs and flats)"
        elif "psfnight" in fb:
            n = fb["psfnight"].night
            src = f"automatic fallback ({age(night, n)} nights before)"
        else:
            n, src = None, f"held: {kw['no_fallback']}"
        cams[cam] = {"psfnight": n, "fiberflatnight": n, "source": src}
    held = s.execute(select(Job.key, Job.hold_reason).where(
        Job.production_id == prod.id, Job.night == night,
        Job.state == JobState.HELD.value).order_by(Job.key)).all()
    rows = s.execute(select(Job.calib_night, Job.calib_nights).where(
        Job.production_id == prod.id, Job.night == night, Job.kind == "science",
        Job.state != JobState.HELD.value)).all()
    used = sorted({cn or night for cn, _ in rows})
    by_cam: dict[str, set[int]] = {}
    for _, word in rows:
        for cam, n in parse_calib_nights(word).items():
            by_cam.setdefault(cam, set()).add(n)
    return {"night": night, "production": prod.name, "science_calib_nights": used,
            "science_calib_nights_by_camera": {c: sorted(v) for c, v in sorted(by_cam.items())},
            "camera_choices": {c: {"from": r.ref_night, "origin": _origin(r),
                                   "comment": r.reason} for c, r in sorted(per_cam.items())},
            "choice": None if choice is None else {
                "from": choice.ref_night, "origin": choice.origin, "comment": choice.comment,
                "include_expids": sorted(choice.include), "exclude_expids": sorted(choice.exclude)},
            "override_file": str(override_path(cfg, night)),
            "max_calib_age_nights": cfg.max_calib_age_nights,
            "cameras": cams, "held": [{"job": k, "reason": r} for k, r in held]}


def _origin(row: CalibCameraChoice) -> str:
    return f"calib use --cameras by {row.actor} at {row.at.strftime('%Y-%m-%d %H:%M UTC')}"


def parse_calib_nights(word: str | None) -> dict[str, int]:
    """``b3=20261123,r3=20261123`` (``Job.calib_nights``) -> {"b3": 20261123, ...}."""
    out: dict[str, int] = {}
    for item in (word or "").split(","):
        cam, sep, n = item.partition("=")
        if sep:
            out[cam] = int(n)
    return out
