"""SQLAlchemy 2 typed models. Everything desinight knows lives here, not in directory listings.

Every table is keyed by production, so nightly processing and reprocessing campaigns share
the same tables and the same `status`/`show`/`resubmit` code.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class Production(Base):
    __tablename__ = "production"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    raw_root: Mapped[str] = mapped_column(Text)
    redux_dir: Mapped[str] = mapped_column(Text)      # $DESI_SPECTRO_REDUX/$SPECPROD
    kind: Mapped[str] = mapped_column(String(16), default="nightly")   # nightly | campaign
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)


class Night(Base):
    __tablename__ = "night"
    __table_args__ = (UniqueConstraint("production_id", "night"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    night: Mapped[int] = mapped_column(Integer)
    closed: Mapped[bool] = mapped_column(default=False)   # no more data expected
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Exposure(Base):
    __tablename__ = "exposure"
    __table_args__ = (UniqueConstraint("production_id", "expid"),
                      # covering: status's exposures per night and OBSTYPE (migration 0007)
                      Index("ix_exposure_prod_night_obstype", "production_id", "night", "obstype"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    expid: Mapped[int] = mapped_column(BigInteger)
    night: Mapped[int] = mapped_column(Integer)
    obstype: Mapped[str] = mapped_column(String(16))
    tileid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exptime: Mapped[float | None] = mapped_column(nullable=True)
    program: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seqnum: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seqtot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cameras: Mapped[str] = mapped_column(String(512), default="")      # present, comma list
    bad_cameras: Mapped[str] = mapped_column(String(512), default="")  # excluded from processing
    #: how far it is processed (ignore | skysub | fluxcal | all), set by an operator's
    #: `desinight exposure` edit or by the [laststep] rules at ingest (laststep_reason says which)
    laststep: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    laststep_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    bad_amps: Mapped[str] = mapped_column(String(512), default="", server_default="")   # b7D,z8A
    flags: Mapped[str] = mapped_column(String(128), default="", server_default="")     # short,test
    raw_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))                    # ExposureStatus
    quarantine_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    arrived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rejection(Base):
    """A raw file that cannot be an exposure row: a duplicate EXPID (the EXPID is already
    taken by another file) or a directory whose EXPID cannot be read. Shown by `status`."""

    __tablename__ = "rejection"
    __table_args__ = (UniqueConstraint("production_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    night: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sighting(Base):
    """A directory of the raw tree seen but not ingested (yet): incomplete, an odd name, a
    symlink loop, a special file. Written by ingest and the daemon's scan, removed when the
    directory is ingested or goes away; `status` lists them so nothing stays invisible."""

    __tablename__ = "sighting"
    __table_args__ = (UniqueConstraint("production_id", "path"),
                      Index("ix_sighting_prod_night", "production_id", "night"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    night: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))     # incomplete, unreadable-name, loop, ...
    reason: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobExposure(Base):
    __tablename__ = "job_exposure"
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"), primary_key=True)
    expid: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)


class JobEdge(Base):
    """parent must complete before child runs (mirrored as SLURM afterok)."""

    __tablename__ = "job_edge"
    parent_id: Mapped[int] = mapped_column(ForeignKey("job.id"), primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("job.id"), primary_key=True, index=True)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (UniqueConstraint("production_id", "key"),
                      # covering (migration 0007): status's jobs per night and state,
                      # campaign status's per kind and state
                      Index("ix_job_prod_state_kind", "production_id", "state", "kind"),
                      Index("ix_job_prod_night_state", "production_id", "night", "state"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    key: Mapped[str] = mapped_column(String(128))          # deterministic, e.g. 20261124/arc/26112401
    kind: Mapped[str] = mapped_column(String(32))
    night: Mapped[int] = mapped_column(Integer)
    tileid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cameras: Mapped[str] = mapped_column(String(512), default="")
    calib_night: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: cameras whose psfnight/fiberflatnight come from another night than calib_night (or the
    #: job's own night): ``b3=20261123,r3=20261123`` (`calib use --cameras`)
    calib_nights: Mapped[str | None] = mapped_column(String(512), nullable=True)
    state: Mapped[str] = mapped_column(String(16))          # JobState
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)   # why it failed / dep_failed
    resources: Mapped[dict] = mapped_column(JSON, default=dict)
    campaign: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    attempts: Mapped[list["Attempt"]] = relationship(
        back_populates="job", order_by="Attempt.number", cascade="all, delete-orphan")
    exposures: Mapped[list[JobExposure]] = relationship(cascade="all, delete-orphan")

    @property
    def expids(self) -> list[int]:
        return sorted(e.expid for e in self.exposures)

    @property
    def last_attempt(self) -> "Attempt | None":
        return self.attempts[-1] if self.attempts else None


class Attempt(Base):
    """One submission of a job. Written *before* the backend call (outbox intent, no
    backend_id), completed with the id right after; a crash in between is reconciled by tag."""

    __tablename__ = "attempt"
    __table_args__ = (UniqueConstraint("job_id", "number"),
                      Index("ix_attempt_backend_id", "backend_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id"))
    number: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(16))
    backend_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    comment: Mapped[str] = mapped_column(String(200))      # tag the backend can be searched by
    attempt_dir: Mapped[str] = mapped_column(Text)
    script_path: Mapped[str] = mapped_column(Text)
    log_path: Mapped[str] = mapped_column(Text)
    command: Mapped[str] = mapped_column(Text)              # the step command line it runs
    depends_on: Mapped[str] = mapped_column(Text, default="")   # backend ids passed as afterok
    state: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    node: Mapped[str | None] = mapped_column(String(128), nullable=True)
    intent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    job: Mapped[Job] = relationship(back_populates="attempts")


class ExposureEdit(Base):
    """One operator edit of an exposure (`desinight exposure`): what changed (field ->
    [old, new]), what it did to the jobs (cancelled / re-planned keys), who, when and why."""

    __tablename__ = "exposure_edit"
    __table_args__ = (Index("ix_exposure_edit_exposure", "exposure_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    exposure_id: Mapped[int] = mapped_column(ForeignKey("exposure.id"))
    changes: Mapped[dict] = mapped_column(JSON, default=dict)
    effects: Mapped[dict] = mapped_column(JSON, default=dict)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServiceState(Base):
    """Health of the daemon per production: shown in `status`' footer."""

    __tablename__ = "service_state"
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)   # last_poll, last_ingest, ...
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class StateEvent(Base):
    """One move of a job's state or an exposure's status, appended by ``transitions`` (the
    only writer of either): who moved it, why, from where, on which host and when. Read by
    `show job`, `history` and the HTML report."""

    __tablename__ = "state_event"
    __table_args__ = (Index("ix_state_event_job", "job_id"),
                      Index("ix_state_event_exposure", "exposure_id"),
                      Index("ix_state_event_prod_at", "production_id", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id"), nullable=True)
    exposure_id: Mapped[int | None] = mapped_column(ForeignKey("exposure.id"), nullable=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)   # attempt number
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))    # daemon | operator:LOGIN | campaign:NAME
    host: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CalibChoice(Base):
    """An operator's choice of calibrations for one night (`desinight calib use`): psfnight
    and fiberflatnight both from ``ref_night``. One row per night; a new choice replaces it."""

    __tablename__ = "calib_choice"
    __table_args__ = (UniqueConstraint("production_id", "night"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    night: Mapped[int] = mapped_column(Integer)
    ref_night: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))    # operator:LOGIN
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CalibCameraChoice(Base):
    """An operator's choice of one camera's calibrations for one night (`desinight calib use
    --cameras`): that camera's psfnight and fiberflatnight both from ``ref_night``, over the
    night's own choice. One row per night and camera; a new choice replaces it."""

    __tablename__ = "calib_camera_choice"
    __table_args__ = (UniqueConstraint("production_id", "night", "camera"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    production_id: Mapped[int] = mapped_column(ForeignKey("production.id"))
    night: Mapped[int] = mapped_column(Integer)
    camera: Mapped[str] = mapped_column(String(8))
    ref_night: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128))    # operator:LOGIN
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
