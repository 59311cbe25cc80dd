"""What the planner gets from the config and the database besides the night itself: the
calibration-set rule ([calib] min_arcs / min_flats) and the DARK exposures of the nights
around it ([calib] dark_window_nights) that its darknight combines with its own."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Config
from .core.planner import CalibRule, ExposureInfo
from .core.states import ExposureStatus, ObsType
from .db.models import Exposure, Production
from .db.repo import info_of


def shift_night(night: int, days: int) -> int:
    """``night`` moved by ``days`` calendar days (YYYYMMDD arithmetic)."""
    d = date(night // 10000, night // 100 % 100, night % 100) + timedelta(days=days)
    return d.year * 10000 + d.month * 100 + d.day


def dark_neighbours(s: Session, prod: Production, night: int, window: int) -> list[ExposureInfo]:
    """The DARK exposures (not quarantined) of the nights within ``window`` of ``night``,
    other than ``night`` itself: one query."""
    if window <= 0:
        return []
    rows = s.scalars(select(Exposure).where(
        Exposure.production_id == prod.id, Exposure.obstype == ObsType.DARK.value,
        Exposure.night.between(shift_night(night, -window), shift_night(night, window)),
        Exposure.night != night,
        Exposure.status != ExposureStatus.QUARANTINED.value).order_by(Exposure.expid)).all()
    return [info_of(e) for e in rows]


def plan_extras(s: Session, cfg: Config, prod: Production, night: int) -> dict[str, Any]:
    """Keyword arguments of ``plan_night``: ``rule`` and ``dark_neighbours``."""
    return {"rule": CalibRule(cfg.min_arcs, cfg.min_flats),
            "dark_neighbours": dark_neighbours(s, prod, night, cfg.dark_window_nights)}
