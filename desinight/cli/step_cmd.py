"""`desinight step run KIND ...`: the one command a job's batch script runs."""

from __future__ import annotations

import sys

import click


@click.group("step")
def step() -> None:
    """Run science steps (what the job scripts call)."""


def _comm():
    """MPI communicator when launched by mpiexec/srun with more than one rank, else None."""
    try:
        from mpi4py import MPI
    except ImportError:  # single-process fallback
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


@step.command("run")
@click.argument("kind")
@click.option("--night", required=True, type=int)
@click.option("--expids", default="", help="comma-separated EXPIDs")
@click.option("--tile", "tileid", type=int, default=None)
@click.option("--cameras", default=None, help="e.g. b0,r0,z0 or a0123")
@click.option("--calib-night", type=int, default=None, help="use this night's calibnight files")
def run_cmd(kind: str, night: int, expids: str, tileid: int | None, cameras: str | None,
            calib_night: int | None) -> None:
    """Run one job of KIND; exit 0 only if every camera succeeded."""
    from ..steps.jobs import run_job

    ids = [int(e) for e in expids.split(",") if e.strip()]
    rc = run_job(kind, night, ids, tileid, cameras, calib_night=calib_night, comm=_comm())
    sys.exit(rc)
