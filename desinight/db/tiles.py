"""A tile's exposures on earlier nights: what the planner's cumulative redshift needs.

Two queries per planned night, whatever the number of tiles: the earlier exposures of
tonight's tiles, then the keys of their fluxcalib jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..core.planner import Earlier, ExposureInfo, job_key
from ..core.states import ExposureStatus, ObsType
from .models import Exposure, Job, Production


def history_for(cfg, s: Session, prod: Production, night: int,  # noqa: ANN001 - Config
                tonight: list[ExposureInfo]) -> dict[int, list[Earlier]] | None:
    """``plan_night``'s ``history``: None (no cumulative redshifts) unless the production
    asks for them (``desinight.cumulative_redshifts``)."""
    return tile_history(s, prod, night, tonight) if cfg.cumulative_redshifts else None


def tile_history(s: Session, prod: Production, night: int,
                 tonight: Iterable[ExposureInfo]) -> dict[int, list[Earlier]]:
    """{tileid: [Earlier]} for every tile observed tonight: its science exposures of earlier
    nights (not quarantined), each with the key of its fluxcalib job if one exists."""
    from .repo import info_of

    tiles = sorted({e.tileid for e in tonight
                    if e.obstype == ObsType.SCIENCE.value and e.tileid not in (None, -1)})
    if not tiles:
        return {}
    rows = s.scalars(select(Exposure).where(
        Exposure.production_id == prod.id, Exposure.night < night,
        Exposure.obstype == ObsType.SCIENCE.value, Exposure.tileid.in_(tiles),
        Exposure.status != ExposureStatus.QUARANTINED.value)
        .order_by(Exposure.night, Exposure.expid)).all()
    if not rows:
        return {}
    want = [job_key(e.night, "fluxcalib", e.expid) for e in rows]
    have = set(s.scalars(select(Job.key).where(Job.production_id == prod.id, Job.key.in_(want))))
    out: dict[int, list[Earlier]] = defaultdict(list)
    for e, key in zip(rows, want):
        out[e.tileid].append(Earlier(info_of(e), key if key in have else None))
    return dict(out)
