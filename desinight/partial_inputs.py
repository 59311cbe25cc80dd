"""The inputs a partial campaign takes from its input production (docs/campaigns.md, Steps).

A campaign that starts at ``extract`` runs no calibration jobs: its science reads psfnight,
fiberflatnight (and biasnight) of the input production. `campaign plan` checks those outputs
exist; `campaign submit` links them, file by file, into the campaign's directory at the same
relative paths, so the steps read them where they always do and the links show where each
came from. Only outputs of steps the campaign does not run are linked: nothing it writes
can land on a link.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .core.cameras import parse_cameras
from .core.errors import FilesystemError

_CALIBS = ("biasnight", "psfnight", "fiberflatnight")
#: per-exposure and per-tile outputs of each kind (relative globs; NIGHT, EXPID, TILE filled in)
_OUTPUTS = {
    "arc": ("preproc/{night}/{expid}/preproc-*", "exposures/{night}/{expid}/psf-*"),
    "flat": ("preproc/{night}/{expid}/preproc-*", "exposures/{night}/{expid}/frame-*",
             "exposures/{night}/{expid}/fiberflat-*"),
    "science": ("preproc/{night}/{expid}/preproc-*", "exposures/{night}/{expid}/frame-*",
                "exposures/{night}/{expid}/sframe-*"),
    "fluxcalib": ("exposures/{night}/{expid}/fluxcalib-*", "exposures/{night}/{expid}/cframe-*"),
    "stdstars": ("tiles/{tile}/{night}/stdstars-*",),
}


def _files(root: Path, key: str, cameras: str | None) -> list[tuple[str, list[Path]]]:
    """(what, files found) per expected output of job ``key`` under ``root``; with
    ``cameras``, one per camera for a nightly calibration, else whatever is there."""
    night, kind, *rest = key.split("/")
    if kind in _CALIBS and cameras is None:
        rel = f"calibnight/{night}/{kind}-*-{night}.fits"
        return [(rel, sorted(root.glob(rel)))]
    if kind in _CALIBS:
        cams = parse_cameras(cameras.split(",")) if cameras else []
        rel = [f"calibnight/{night}/{kind}-{c}-{night}.fits" for c in cams]
        return [(r, [root / r] if (root / r).exists() else []) for r in rel]
    fill = {"night": night, "expid": rest[0] if rest else "", "tile": rest[0] if rest else ""}
    out = []
    for pattern in _OUTPUTS.get(kind, ()):
        rel = pattern.format(**fill)
        out.append((rel, sorted(root.glob(rel))))
    return out


def missing(root: Path, key: str, cameras: str) -> str | None:
    """The first expected output of ``key`` not under ``root`` (relative path), else None."""
    for what, found in _files(root, key, cameras):
        if not found:
            return what
    return None


def link(src: Path, dst: Path, inputs: Mapping[str, str]) -> int:
    """Symlink the outputs of the input jobs from ``src`` into ``dst``; returns links made."""
    made = 0
    for key in sorted(inputs):
        for _, found in _files(src, key, None):
            for f in found:
                target = dst / f.relative_to(src)
                if target.exists() or target.is_symlink():
                    continue
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(f.resolve(), target)
                except OSError as e:
                    raise FilesystemError(f"cannot link {f} into {target.parent}: "
                                          f"{e.strerror}") from None
                made += 1
    return made
