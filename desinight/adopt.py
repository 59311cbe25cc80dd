"""Adopting outputs already on disk: a planned job whose declared outputs (core/kinds.py) all
exist and match the sha256 its step recorded when it wrote them is recorded completed instead
of being run again (opt-in: `resubmit --adopt`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .core import kinds as K
from .core.cameras import parse_cameras

REASON = "adopted: its outputs exist and match the checksums recorded when they were written"


def _recorded(prod_dir: Path, kind: str, night: int, expids: list[int], tileid) -> dict[str, str]:
    """{output: sha256} of every successful task in the job's step records (all ranks); an
    output two records disagree on is left out (it cannot be trusted)."""
    sums: dict[str, str] = {}
    bad: set[str] = set()
    pattern = f"{kind}-{K.record_ident(kind, expids, tileid)}-rank*.json"
    for rec in sorted((prod_dir / "run" / "steps" / str(night)).glob(pattern)):
        try:
            tasks = json.loads(rec.read_text()).get("tasks", [])
        except (OSError, ValueError):
            continue
        for t in tasks:
            for rel, digest in (t.get("outputs") or {}).items() if t.get("ok") else ():
                if sums.setdefault(rel, digest) != digest:
                    bad.add(rel)
    return {k: v for k, v in sums.items() if k not in bad}


def adoptable(prod_dir: Path, job) -> bool:  # noqa: ANN001 - a db.models.Job
    """Every declared output of every task of ``job`` exists with its recorded checksum."""
    if job.kind not in K.names() or not K.get(job.kind).outputs or not job.cameras:
        return False
    expids = job.expids
    cams = parse_cameras(job.cameras)
    units = sorted({c[1:] for c in cams}, key=int) if K.get(job.kind).unit == "spectrograph" else cams
    sums = _recorded(prod_dir, job.kind, job.night, expids, job.tileid)
    for unit in units:
        for rel in K.output_paths(job.kind, job.night, expids, job.tileid, unit):
            path = prod_dir / rel
            if rel not in sums or not path.is_file():
                return False
            with open(path, "rb") as f:
                if hashlib.file_digest(f, "sha256").hexdigest() != sums[rel]:
                    return False
    return True
