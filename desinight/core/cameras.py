"""Camera words: ``a0123`` = all arms of spectrographs 0-3, ``b3`` = one camera.

The survey writes camera sets compactly; the DB and job scripts use this canonical form.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import DesinightError

ARMS = ("b", "r", "z")


def parse_cameras(text: str | Iterable[str]) -> list[str]:
    """Expand ``"a01,b2"`` / ``"b0,r0,z0"`` / ``["B0"]`` into sorted camera names (``["b0", ...]``)."""
    items = text.replace(" ", "").split(",") if isinstance(text, str) else list(text)
    cams: set[str] = set()
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        arm, digits = item[0], item[1:]
        if arm not in ("a", *ARMS) or not digits or not digits.isdigit():
            raise DesinightError(f"bad camera word {item!r}: expected e.g. 'b0', 'a0123'")
        arms = ARMS if arm == "a" else (arm,)
        cams.update(f"{a}{d}" for a in arms for d in digits)
    return sorted(cams, key=camera_sort_key)


def camera_sort_key(cam: str) -> tuple[int, int]:
    return int(cam[1:]), ARMS.index(cam[0])


def camera_word(cams: Iterable[str]) -> str:
    """Compact form: spectrographs with all three arms as ``aNNN``, the rest listed."""
    cams = set(parse_cameras(list(cams)))
    full = sorted({c[1:] for c in cams if all(f"{a}{c[1:]}" in cams for a in ARMS)}, key=int)
    rest = sorted((c for c in cams if c[1:] not in full), key=camera_sort_key)
    parts = (["a" + "".join(full)] if full else []) + rest
    return ",".join(parts)


def subtract(cams: Iterable[str], bad: Iterable[str]) -> list[str]:
    badset = set(parse_cameras(list(bad)))
    return [c for c in parse_cameras(list(cams)) if c not in badset]
