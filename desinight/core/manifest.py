"""Campaign manifests: parse and validate a TOML file describing a reprocessing campaign.

Pure: no database, no filesystem except reading the one file in ``load_manifest``. Checks
that need the database (does the night exist? is the name taken?) live in ``campaign.py``
but report through ``Manifest.error`` so every message names the file, the line and the
field: ``campaign.toml:7: selection.nights: 2026113 is not a YYYYMMDD night``.

Format (docs/campaigns.md, docs/campaign-manifest.schema.json)::

    [campaign]
    name = "reproc-2027a"          # the new production (plain name, not an existing nightly one)
    source = "daily"               # production whose exposures are reprocessed (default: config)
    output_root = "/redux"         # $DESI_SPECTRO_REDUX of the campaign (default: config redux_root)
    code_version = "0.4.0"         # recorded with the campaign
    config_version = "2027a"
    throttle = 500                 # at most this many jobs queued or running at once

    [selection]
    nights = [20261124]
    night_ranges = [[20261101, 20261130]]
    expids = []; tiles = []; obstypes = []              # empty = no restriction
    exclude_nights = []; exclude_expids = []; exclude_tiles = []
    [selection.bad_cameras]
    "26112403" = "b0,r1"           # per exposure, replaces the recorded bad cameras

    [steps]
    from = "extract"               # or: only = ["redshift"]
    input_production = "daily"     # where the outputs of steps not run come from

    [slurm]                        # account, qos, partition, constraint
    [kinds.science]                # per-kind resources: nodes, ntasks, cpus_per_task, time_minutes, mem_mb
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cameras import parse_cameras
from .errors import DesinightError
from . import kinds as K
from .states import ObsType

#: the built-in kinds (manifests may also name kinds declared later: K.names())
JOB_KINDS = K.BUILTIN

#: Throttle when the manifest names none: enough to keep a partition busy, few enough that
#: slurmctld and the fair-share of other users are not flooded.
DEFAULT_THROTTLE = 500

#: Typical run time (minutes) of one job of each kind on one node, used for the cost
#: estimate printed by `campaign plan` (the time limits in KIND_RESOURCES are upper bounds).
#: Declared with each kind in core/kinds.py (for a 30-camera exposure).
TYPICAL_MINUTES = K.view("typical_minutes")

#: Step names an operator may use besides job kinds.
STEP_ALIASES: dict[str, tuple[str, ...]] = {
    "calibrations": ("biasnight", "darknight", "arc", "psfnight", "flat", "fiberflatnight"),
    "bias": ("biasnight",), "psf": ("arc", "psfnight"), "fiberflat": ("flat", "fiberflatnight"),
    "preproc": ("science",), "extract": ("science",), "sky": ("science",),
    "stdstar": ("stdstars",), "coadd": ("redshift",), "zfind": ("redshift",),
}

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_SECTIONS = {"campaign", "selection", "steps", "slurm", "kinds"}
_CAMPAIGN_KEYS = {"name", "source", "output_root", "code_version", "config_version",
                  "throttle", "description"}
_SELECTION_KEYS = {"nights", "night_ranges", "expids", "tiles", "obstypes", "exclude_nights",
                   "exclude_expids", "exclude_tiles", "bad_cameras"}
_STEPS_KEYS = {"from", "only", "input_production"}
_SLURM_KEYS = {"account", "qos", "partition", "constraint"}
_KIND_KEYS = {"nodes", "ntasks", "cpus_per_task", "time_minutes", "mem_mb"}
_TOML_LINE = re.compile(r"at line (\d+)")


class ManifestError(DesinightError):
    """An invalid manifest; the message names file, line and field."""

    exit_code = 2


@dataclass(frozen=True)
class Manifest:
    name: str
    source: str | None = None
    output_root: Path | None = None
    code_version: str | None = None
    config_version: str | None = None
    throttle: int = DEFAULT_THROTTLE
    description: str = ""
    nights: tuple[int, ...] = ()
    night_ranges: tuple[tuple[int, int], ...] = ()
    expids: frozenset[int] = frozenset()
    tiles: frozenset[int] = frozenset()
    obstypes: frozenset[str] = frozenset()
    exclude_nights: frozenset[int] = frozenset()
    exclude_expids: frozenset[int] = frozenset()
    exclude_tiles: frozenset[int] = frozenset()
    bad_cameras: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    steps: tuple[str, ...] = field(default_factory=K.names)   # job kinds planned, in pipeline order
    input_production: str | None = None
    slurm: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    path: str = "<manifest>"
    text: str = ""

    # --- messages ---------------------------------------------------------------------
    def error(self, key: str, message: str, value: Any = None) -> ManifestError:
        """A ManifestError located at ``key`` (``section.name``), or at ``value`` inside it."""
        return ManifestError(f"{self.path}:{locate(self.text, key, value)}: {key}: {message}")

    # --- derived ----------------------------------------------------------------------
    @property
    def partial(self) -> bool:
        """True when some job kinds are not planned (their inputs come from elsewhere)."""
        return tuple(self.steps) != K.names()

    def settings(self) -> dict[str, Any]:
        """What the campaign production records about itself (Production.settings)."""
        return {"manifest": self.text, "manifest_path": self.path, "source": self.source,
                "code_version": self.code_version, "config_version": self.config_version,
                "throttle": self.throttle, "steps": list(self.steps),
                "input_production": self.input_production if self.partial else None,
                "slurm": dict(self.slurm), "kinds": {k: dict(v) for k, v in self.kinds.items()},
                "description": self.description}

    def wanted_nights(self, available: Iterable[int]) -> list[int]:
        """Selected nights among ``available`` (ranges expand over available nights only)."""
        avail = set(available)
        out = set(self.nights)
        for lo, hi in self.night_ranges:
            out.update(n for n in avail if lo <= n <= hi)
        return sorted(out - set(self.exclude_nights))

    def selects(self, expid: int, obstype: str, tileid: int | None) -> bool:
        """Is this exposure (of a selected night) part of the campaign?

        ``expids``/``tiles``/``exclude_tiles`` restrict science exposures; a selected night's
        calibration exposures come along (they calibrate the science) unless ``obstypes``
        leaves them out or ``exclude_expids`` names them. With ``expids`` or ``tiles``, only
        nights with selected science are kept (campaign.preview)."""
        if expid in self.exclude_expids:
            return False
        if self.obstypes and obstype not in self.obstypes:
            return False
        if obstype == ObsType.SCIENCE.value:
            if self.expids and expid not in self.expids:
                return False
            if self.tiles and tileid not in self.tiles:
                return False
            if tileid in self.exclude_tiles:
                return False
        return True


def locate(text: str, key: str, value: Any = None) -> int:
    """1-based line of ``key`` (``section.sub.name``) in TOML ``text``; with ``value``, the
    first line at or after the key that mentions it. Falls back to the table, then line 1."""
    lines = text.splitlines()
    parts = key.split(".")
    table_line, key_line = None, None

    def header(prefix: list[str], exact: bool = True) -> int | None:
        body = r"\s*\.\s*".join(re.escape(p) for p in prefix)
        hdr = re.compile(r"^\s*\[+\s*" + body + (r"\s*\]+\s*(#.*)?$" if exact else r"[\s.\]]"))
        return next((i for i, line in enumerate(lines) if hdr.match(line)), None)

    whole = header(parts)   # the key is itself a table: point at its header
    rest = parts
    # Try the longest table prefix that has a [header]; the rest is the key inside it.
    for cut in range(len(parts) - 1, 0, -1):
        table_line = header(parts[:cut])
        if table_line is not None:
            rest = parts[cut:]
            break
    if whole is not None:
        table_line, rest = whole, []
    elif table_line is None and len(parts) == 1:
        table_line = header(parts, exact=False)   # [kinds.science] for "kinds"
        if table_line is not None:
            rest = []
    start = table_line + 1 if table_line is not None else 0
    name = rest[0] if rest else None
    if name is not None:
        kre = re.compile(r"""^\s*["']?""" + re.escape(name) + r"""["']?\s*[=.]""")
        for i in range(start, len(lines)):
            if i > start and table_line is not None and re.match(r"^\s*\[", lines[i]):
                break
            if table_line is None and re.match(r"^\s*\[", lines[i]):
                break
            if kre.match(lines[i]):
                key_line = i
                break
    at = key_line if key_line is not None else table_line
    if at is None:
        return 1
    if value is not None:
        needle = str(value)
        for i in range(at, len(lines)):
            if i > at and re.match(r"^\s*\[", lines[i]):
                break
            if i > at and re.match(r"^\s*[\w\"'-]+\s*=", lines[i]) and i != at:
                # the next key: the value was not on a continuation line
                break
            if needle in lines[i].split("#", 1)[0]:
                return i + 1
    return at + 1


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file (one ManifestError for any problem)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ManifestError(f"{p}: cannot read manifest: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"{p}: cannot read manifest: is a directory") from None
    except OSError as e:
        raise ManifestError(f"{p}: cannot read manifest: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{p}: cannot read manifest: not UTF-8 text") from None
    return parse_manifest(text, str(p))


def parse_manifest(text: str, path: str = "<manifest>") -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE.search(str(e))
        line = m.group(1) if m else str(max(1, len(text.splitlines())))
        msg = re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", str(e))
        raise ManifestError(f"{path}:{line}: not valid TOML: {msg}") from None
    v = _Validator(text, path)
    return v.run(data)


class _Validator:
    def __init__(self, text: str, path: str):
        self.text, self.path = text, path

    def fail(self, key: str, message: str, value: Any = None) -> ManifestError:
        return ManifestError(f"{self.path}:{locate(self.text, key, value)}: {key}: {message}")

    def known(self, section: str, table: Any, keys: set[str]) -> dict:
        if not isinstance(table, dict):
            raise self.fail(section, "must be a table")
        for k in table:
            if k not in keys:
                raise self.fail(f"{section}.{k}", f"unknown key (known: {', '.join(sorted(keys))})")
        return table

    def string(self, key: str, value: Any, *, plain: bool = False) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        if plain and not _NAME.fullmatch(value):
            raise self.fail(key, f"must be a plain name (letters, digits, _ . -), got {value!r}")
        return value

    def integer(self, key: str, value: Any, positive: bool = True) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or (positive and value <= 0):
            raise self.fail(key, f"must be a positive integer, got {value!r}", value)
        return value

    def night(self, key: str, value: Any) -> int:
        text = str(value)
        if (isinstance(value, bool) or not isinstance(value, (int, str)) or not text.isdigit()
                or len(text) != 8 or not text.startswith("20") or not _valid_date(text)):
            raise self.fail(key, f"{value!r} is not a YYYYMMDD night", value)
        return int(text)

    def int_list(self, key: str, value: Any, conv=None) -> list[int]:
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {value!r}")
        return [(conv or (lambda v: self.nonneg(key, v)))(x) for x in value]

    def nonneg(self, key: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(key, f"{value!r} is not a non-negative integer", value)
        return value

    def run(self, data: dict) -> Manifest:
        for section in data:
            if section not in _SECTIONS:
                raise self.fail(section, f"unknown section (known: {', '.join(sorted(_SECTIONS))})")
        if "campaign" not in data:
            raise ManifestError(f"{self.path}:1: campaign: missing [campaign] table")
        c = self.known("campaign", data["campaign"], _CAMPAIGN_KEYS)
        if "name" not in c:
            raise self.fail("campaign", "missing campaign.name")
        kw: dict[str, Any] = {"name": self.string("campaign.name", c["name"], plain=True)}
        if "source" in c:
            kw["source"] = self.string("campaign.source", c["source"], plain=True)
        if "output_root" in c:
            kw["output_root"] = Path(self.string("campaign.output_root", c["output_root"]))
        for k in ("code_version", "config_version"):
            if k in c:
                kw[k] = self.string(f"campaign.{k}", c[k])
        if "description" in c:
            if not isinstance(c["description"], str):
                raise self.fail("campaign.description", "must be a string")
            kw["description"] = c["description"]
        if "throttle" in c:
            kw["throttle"] = self.integer("campaign.throttle", c["throttle"])

        sel = self.known("selection", data.get("selection", {}), _SELECTION_KEYS)
        kw["nights"] = tuple(self.int_list("selection.nights", sel.get("nights", []),
                                           lambda v: self.night("selection.nights", v)))
        ranges = []
        rr = sel.get("night_ranges", [])
        if not isinstance(rr, list):
            raise self.fail("selection.night_ranges", "must be a list of [first, last] pairs")
        for r in rr:
            if not isinstance(r, list) or len(r) != 2:
                raise self.fail("selection.night_ranges", f"{r!r} is not a [first, last] pair")
            lo, hi = (self.night("selection.night_ranges", x) for x in r)
            if lo > hi:
                raise self.fail("selection.night_ranges", f"[{lo}, {hi}]: first night after last", lo)
            ranges.append((lo, hi))
        kw["night_ranges"] = tuple(ranges)
        if not kw["nights"] and not ranges:
            raise self.fail("selection", "select nights with selection.nights or "
                                         "selection.night_ranges")
        kw["exclude_nights"] = frozenset(self.int_list(
            "selection.exclude_nights", sel.get("exclude_nights", []),
            lambda v: self.night("selection.exclude_nights", v)))
        for k in ("expids", "tiles", "exclude_expids", "exclude_tiles"):
            kw[k] = frozenset(self.int_list(f"selection.{k}", sel.get(k, [])))
        obst = sel.get("obstypes", [])
        if not isinstance(obst, list):
            raise self.fail("selection.obstypes", "must be a list")
        types = set()
        for o in obst:
            if not isinstance(o, str) or o.upper() not in ObsType.__members__:
                raise self.fail("selection.obstypes", f"{o!r} is not an OBSTYPE (known: "
                                f"{', '.join(ObsType.__members__)})", o)
            types.add(o.upper())
        kw["obstypes"] = frozenset(types)
        bad = sel.get("bad_cameras", {})
        if not isinstance(bad, dict):
            raise self.fail("selection.bad_cameras", "must be a table EXPID = \"cameras\"")
        badmap: dict[int, tuple[str, ...]] = {}
        for k, val in bad.items():
            key = f"selection.bad_cameras.{k}"
            if not str(k).isdigit():
                raise self.fail(key, f"{k!r} is not an EXPID")
            if not isinstance(val, str):
                raise self.fail(key, f"must be a camera word string like \"b0,r1\", got {val!r}")
            try:
                badmap[int(k)] = tuple(parse_cameras(val))
            except DesinightError as e:
                raise self.fail(key, str(e)) from None
        kw["bad_cameras"] = badmap

        st = self.known("steps", data.get("steps", {}), _STEPS_KEYS)
        if "from" in st and "only" in st:
            raise self.fail("steps.only", "give steps.from or steps.only, not both")
        if "from" in st:
            first = self.steps("steps.from", [st["from"]])[0]
            kw["steps"] = K.names()[K.names().index(first):]
        elif "only" in st:
            if not isinstance(st["only"], list) or not st["only"]:
                raise self.fail("steps.only", "must be a non-empty list of steps")
            chosen = set(self.steps("steps.only", st["only"]))
            kw["steps"] = tuple(k for k in K.names() if k in chosen)
        if "input_production" in st:
            kw["input_production"] = self.string("steps.input_production",
                                                 st["input_production"], plain=True)
        if tuple(kw.get("steps", K.names())) != K.names():
            kw.setdefault("input_production", kw.get("source"))

        kw["slurm"] = {k: self.string(f"slurm.{k}", v) for k, v in
                       self.known("slurm", data.get("slurm", {}), _SLURM_KEYS).items()}
        kinds = self.known("kinds", data.get("kinds", {}), set(K.names()))
        kw["kinds"] = {}
        for kind, res in kinds.items():
            res = self.known(f"kinds.{kind}", res, _KIND_KEYS)
            kw["kinds"][kind] = {k: self.integer(f"kinds.{kind}.{k}", v) for k, v in res.items()}
        return Manifest(path=self.path, text=self.text, **kw)

    def steps(self, key: str, names: list) -> list[str]:
        out: list[str] = []
        for n in names:
            if not isinstance(n, str):
                raise self.fail(key, f"{n!r} is not a step name")
            low = n.lower()
            if low in K.names():
                out.append(low)
            elif low in STEP_ALIASES:
                out.extend(STEP_ALIASES[low])
            else:
                raise self.fail(key, f"unknown step {n!r} (known: {', '.join(K.names())}, "
                                     f"{', '.join(STEP_ALIASES)})", n)
        return out


def _valid_date(text: str) -> bool:
    from datetime import date
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def node_hours(counts: Mapping[str, int], resources: Mapping[str, Mapping[str, Any]]) -> tuple[float, float]:
    """(typical, upper bound) node-hours of ``counts`` jobs per kind: nodes x TYPICAL_MINUTES,
    and nodes x the time limit the jobs ask for."""
    typical = upper = 0.0
    for kind, n in counts.items():
        res = resources.get(kind, {})
        nodes = res.get("nodes") or 1
        typical += n * nodes * TYPICAL_MINUTES.get(kind, 10) / 60
        upper += n * nodes * (res.get("time_minutes") or 30) / 60
    return typical, upper
