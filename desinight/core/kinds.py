"""The job-kind registry: one declaration per kind of job, read by everything that knows kinds.

The planner (which kinds exist, in which order, and how a declared kind joins the graph),
the step runner (the task entry point and its unit of work), the status views (the short
label), campaign manifests (step names, kinds tables, typical minutes), the defaults (the
resources a job asks for and how they grow with its cameras and exposures) and the docs'
JSON schema (a test compares it with this registry) all look a kind up here.

Adding a kind = one ``register(JobKind(...))`` in a module named in the config's
``[desinight] kind_modules`` (or ``$DESINIGHT_KIND_MODULES``), one template
``slurm_templates/NAME.sh.j2`` and one step function (docs/architecture.md, "Job kinds").

Pure: no I/O, no numpy. Entry points are "module:function" strings, imported only by the
step runner inside the job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: how many jobs of a kind a night gets
GRANULARITIES = ("night", "exposure", "tile")
#: what one task of a job covers: one camera, or one spectrograph (its three arms)
UNITS = ("camera", "spectrograph")
#: resource keys a kind (or [kinds.NAME] of the config) may set: sizes, then site placement
SIZE_KEYS = ("nodes", "ntasks", "cpus_per_task", "time_minutes", "mem_mb")
PLACEMENT_KEYS = ("partition", "qos", "constraint", "gres", "reservation")
#: how sizes grow with the job: ntasks by cameras, minutes by cameras and exposures
SCALING_KEYS = ("ntasks_per_camera", "max_ntasks", "minutes_per_exposure", "minutes_per_camera")


@dataclass(frozen=True)
class Scaling:
    """How a job's size grows with what it covers (0 = fixed size).

    ntasks = max(base ntasks, ceil(ntasks_per_camera x cameras)), at most max_ntasks;
    time_minutes = base + minutes_per_exposure x (exposures - 1) + minutes_per_camera x cameras.
    """

    ntasks_per_camera: float = 0.0
    max_ntasks: int = 0                 # 0 = no ceiling
    minutes_per_exposure: float = 0.0
    minutes_per_camera: float = 0.0


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``after`` and ``obstypes`` are the dependency rule of a declared kind:
    one job per ``granularity`` unit over exposures of ``obstypes``, after the jobs of the
    ``after`` kinds covering the same exposures (built-in kinds are planned by
    core/planner.py's own rules, which these fields describe)."""

    name: str
    granularity: str                    # "night" | "exposure" | "tile"
    step: str                           # task entry point "module:function"
    short: str                          # label in `status` steps column
    typical_minutes: float              # one job, 30 cameras, one node (campaign cost estimate)
    obstypes: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    unit: str = "camera"
    resources: Mapping[str, Any] = field(default_factory=lambda: {"ntasks": 1, "time_minutes": 30})
    scaling: Scaling = Scaling()
    #: files one task writes, relative to the production directory; {night} {expid} {camera}
    #: {spectro} {tileid} are filled in
    outputs: tuple[str, ...] = ()
    bundles: bool = False               # several ranks may share one camera (bundles over ranks)
    builtin: bool = False               # planned by the planner's own rules, not the generic one

    @property
    def template(self) -> str:
        return f"{self.name}.sh.j2"


_REGISTRY: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Add a kind (after the existing ones, in pipeline order). Refuses a bad declaration."""
    if not kind.name.isidentifier() or kind.name != kind.name.lower():
        raise ConfigError(f"job kind {kind.name!r}: a lower-case identifier is required")
    if kind.name in _REGISTRY and _REGISTRY[kind.name] != kind:
        raise ConfigError(f"job kind {kind.name!r} is already declared")
    if kind.granularity not in GRANULARITIES:
        raise ConfigError(f"job kind {kind.name}: granularity {kind.granularity!r} "
                          f"(one of {', '.join(GRANULARITIES)})")
    if kind.unit not in UNITS:
        raise ConfigError(f"job kind {kind.name}: unit {kind.unit!r} (one of {', '.join(UNITS)})")
    unknown = [p for p in kind.after if p not in _REGISTRY]
    if unknown:
        raise ConfigError(f"job kind {kind.name}: after unknown kind(s) {', '.join(unknown)}")
    if ":" not in kind.step:
        raise ConfigError(f"job kind {kind.name}: step {kind.step!r} is not 'module:function'")
    bad = set(kind.resources) - set(SIZE_KEYS) - set(PLACEMENT_KEYS)
    if bad:
        raise ConfigError(f"job kind {kind.name}: unknown resource key(s) {', '.join(sorted(bad))}")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a declared kind (tests); built-in kinds stay."""
    if name in _REGISTRY and not _REGISTRY[name].builtin:
        del _REGISTRY[name]


def get(name: str) -> JobKind:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown job kind {name!r} (known: {', '.join(_REGISTRY)})") from None


def names() -> tuple[str, ...]:
    """Every kind, in pipeline order (built-in kinds first)."""
    return tuple(_REGISTRY)


def declared() -> tuple[JobKind, ...]:
    """Kinds planned by the generic rule (not built in), in declaration order."""
    return tuple(k for k in _REGISTRY.values() if not k.builtin)


class _View(Mapping):
    """A live read-only {kind: attribute} mapping (sees kinds registered later)."""

    def __init__(self, attr: str):
        self._attr = attr

    def __getitem__(self, name: str) -> Any:
        if name not in _REGISTRY:
            raise KeyError(name)
        return getattr(_REGISTRY[name], self._attr)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)


def view(attr: str) -> Mapping[str, Any]:
    return _View(attr)


def record_ident(name: str, expids, tileid: int | None) -> str:
    """How a job's step records are named (run/steps/NIGHT/KIND-IDENT-rankR.json)."""
    if tileid not in (None, -1) and name in _REGISTRY and _REGISTRY[name].granularity == "tile":
        return f"tile{tileid}"
    return f"{expids[0]:08d}" if len(expids) == 1 else "night"


def output_paths(name: str, night: int, expids, tileid: int | None, unit: str) -> list[str]:
    """The declared outputs of one task (``unit``: its camera, or spectrograph number),
    relative to the production directory."""
    out = []
    for pattern in get(name).outputs:
        fields = {"night": night, "tileid": tileid, "camera": unit, "spectro": unit}
        for e in (expids if "{expid" in pattern else expids[:1]):
            out.append(pattern.format(expid=e, **fields))
    return out


def scaled(name: str, base: Mapping[str, Any], cameras: int, exposures: int,
           overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``base`` resources grown for a job of ``cameras`` cameras and ``exposures`` exposures,
    by the kind's Scaling (fields of ``overrides``, e.g. from [kinds.NAME], replace it)."""
    sc = get(name).scaling if name in _REGISTRY else Scaling()
    over = {k: v for k, v in (overrides or {}).items() if k in SCALING_KEYS}
    if over:
        sc = Scaling(**{**sc.__dict__, **over})
    out = dict(base)
    if sc.ntasks_per_camera and cameras:
        n = max(int(out.get("ntasks") or 1), math.ceil(sc.ntasks_per_camera * cameras))
        out["ntasks"] = min(n, sc.max_ntasks) if sc.max_ntasks else n
    extra = sc.minutes_per_exposure * max(0, exposures - 1) + sc.minutes_per_camera * cameras
    if extra:
        out["time_minutes"] = int(math.ceil(int(out.get("time_minutes") or 30) + extra))
    return out


# --- the built-in kinds (DESIGN.md "Processing graph"), in pipeline order --------------------
# Resources: one rank per job unless a site scales it ([kinds.NAME] ntasks_per_camera); the
# time limits are upper bounds for 30 cameras, TYPICAL minutes what a job usually takes.
_J = "desinight.steps.jobs:"
_EXP = "exposures/{night}/{expid:08d}/"
#: where a cumulative redshift writes (DESI's layout), relative to the production directory
CUMULATIVE_DIR = "tiles/cumulative/{tileid}/{night}/"
for _k in (
    JobKind("biasnight", "night", _J + "_task_biasnight", "bias", 5, ("ZERO", "DARK"),
            resources={"ntasks": 1, "time_minutes": 15},
            outputs=("calibnight/{night}/biasnight-{camera}-{night}.fits",)),
    # darks of this night and of the nights within [calib] dark_window_nights (planner)
    JobKind("darknight", "night", _J + "_task_darknight", "dark", 4, ("DARK",), ("biasnight",),
            resources={"ntasks": 1, "time_minutes": 15},
            outputs=("calibnight/{night}/darknight-{camera}-{night}.fits",)),
    JobKind("arc", "exposure", _J + "_task_arc", "arc", 6, ("ARC",), ("biasnight",),
            resources={"ntasks": 1, "time_minutes": 20},
            outputs=("preproc/{night}/{expid:08d}/preproc-{camera}-{expid:08d}.fits",
                     _EXP + "psf-{camera}-{expid:08d}.fits")),
    JobKind("psfnight", "night", _J + "_task_psfnight", "psf", 3, ("ARC",), ("arc",),
            resources={"ntasks": 1, "time_minutes": 10},
            outputs=("calibnight/{night}/psfnight-{camera}-{night}.fits",)),
    JobKind("flat", "exposure", _J + "_task_flat", "flat", 6, ("FLAT",), ("biasnight", "psfnight"),
            resources={"ntasks": 1, "time_minutes": 20}, bundles=True,
            outputs=("preproc/{night}/{expid:08d}/preproc-{camera}-{expid:08d}.fits",
                     _EXP + "frame-{camera}-{expid:08d}.fits",
                     _EXP + "fiberflat-{camera}-{expid:08d}.fits")),
    JobKind("fiberflatnight", "night", _J + "_task_fiberflatnight", "ff", 3, ("FLAT",), ("flat",),
            resources={"ntasks": 1, "time_minutes": 10},
            outputs=("calibnight/{night}/fiberflatnight-{camera}-{night}.fits",)),
    JobKind("science", "exposure", _J + "_task_science", "sci", 12, ("SCIENCE",),
            ("biasnight", "psfnight", "fiberflatnight"),
            resources={"ntasks": 1, "time_minutes": 30}, bundles=True,
            outputs=("preproc/{night}/{expid:08d}/preproc-{camera}-{expid:08d}.fits",
                     _EXP + "frame-{camera}-{expid:08d}.fits",
                     _EXP + "sframe-{camera}-{expid:08d}.fits")),
    JobKind("stdstars", "tile", _J + "_task_stdstars", "std", 4, ("SCIENCE",), ("science",),
            unit="spectrograph", resources={"ntasks": 1, "time_minutes": 15},
            outputs=("tiles/{tileid}/{night}/stdstars-{spectro}-{tileid}-{night}.fits",)),
    JobKind("fluxcalib", "exposure", _J + "_task_fluxcalib", "cal", 3, ("SCIENCE",),
            ("science", "stdstars"), resources={"ntasks": 1, "time_minutes": 10},
            outputs=(_EXP + "fluxcalib-{camera}-{expid:08d}.fits",
                     _EXP + "cframe-{camera}-{expid:08d}.fits")),
    JobKind("redshift", "tile", _J + "_task_redshift", "z", 15, ("SCIENCE",), ("fluxcalib",),
            unit="spectrograph", resources={"ntasks": 1, "time_minutes": 30},
            outputs=("tiles/{tileid}/{night}/coadd-{spectro}-{tileid}-{night}.fits",
                     "tiles/{tileid}/{night}/redrock-{spectro}-{tileid}-{night}.fits")),
    # The tile's every good exposure on nights <= this one (planner: _cumulative); its own
    # directory per night, so night N's result stays when night N+k adds exposures.
    JobKind("cumulative", "tile", _J + "_task_cumulative", "zc", 15, ("SCIENCE",), ("fluxcalib",),
            unit="spectrograph", resources={"ntasks": 1, "time_minutes": 30},
            scaling=Scaling(minutes_per_exposure=1.0),
            outputs=(CUMULATIVE_DIR + "coadd-{spectro}-{tileid}-thru{night}.fits",
                     CUMULATIVE_DIR + "redrock-{spectro}-{tileid}-thru{night}.fits")),
):
    register(JobKind(**{**_k.__dict__, "builtin": True}))

#: the built-in kinds, in pipeline order (a constant: planner rules and tests name them)
BUILTIN: tuple[str, ...] = names()
