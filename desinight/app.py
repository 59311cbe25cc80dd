"""Wiring: from a Config to an open database and a backend (used by the CLI and the daemon)."""

from __future__ import annotations

from .batch.base import Backend
from .config import Config
from .core.errors import DesinightError
from .db.engine import open_database, session_factory
from .orchestrate import Context


def make_backend(cfg: Config, name: str | None = None) -> Backend:
    name = name or cfg.backend
    if name == "local":
        from .batch.local import LocalBackend
        return LocalBackend(cfg.state_dir.resolve() / "local-spool", cpus=cfg.local_cpus)
    if name == "slurm":
        from .batch.slurm import SlurmBackend
        _find_local_cluster()
        return SlurmBackend(kill_on_invalid_dep=cfg.slurm_kill_on_invalid_dep)
    raise DesinightError(f"unknown backend {name!r} (known: local, slurm)")


def _find_local_cluster() -> None:
    """Where the site has no SLURM config of its own (no $SLURM_CONF, no
    /etc/slurm/slurm.conf) but the project's local cluster (scripts/local-slurm) is up,
    point the SLURM clients at it, so `desinight demo --backend slurm` just works."""
    import os
    from pathlib import Path
    if os.environ.get("SLURM_CONF") or Path("/etc/slurm/slurm.conf").exists():
        return
    local = Path(os.environ.get("DESINIGHT_SLURM_DIR", "/tmp/desinight-slurm")) / "etc" / "slurm.conf"
    if local.is_file():
        os.environ["SLURM_CONF"] = str(local)


def open_context(cfg: Config, backend: Backend | None = None, create: bool = False) -> Context:
    engine = open_database(cfg.database_url, create)
    ctx = Context(cfg=cfg, sessions=session_factory(engine),
                  backend=backend or make_backend(cfg), production=cfg.production)
    return _campaign_aware(ctx)


def _campaign_aware(ctx: Context) -> Context:
    """A campaign production renders into its own output dir with its manifest's settings:
    show, resubmit, cancel and rerun on ``--production CAMPAIGN`` then act like `campaign run`."""
    from sqlalchemy import select

    from .db.engine import transaction
    from .db.models import Production
    with transaction(ctx.sessions) as s:
        kind = s.scalar(select(Production.kind).where(Production.name == ctx.production))
    if kind != "campaign":
        return ctx
    from .campaign import campaign_context
    return campaign_context(ctx, ctx.production)
