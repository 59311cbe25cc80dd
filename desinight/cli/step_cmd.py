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


def _calib_nights(ctx, param, text: str | None) -> dict[str, int]:
    """``b3=20261123,r3=20261123`` -> {"b3": 20261123, ...} (what the planner writes)."""
    from ..core.cameras import parse_cameras
    from ..core.errors import DesinightError
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        cam, sep, night = item.partition("=")
        try:
            cams = parse_cameras(cam) if sep else []
            out.update({c: int(night) for c in cams})
        except (ValueError, DesinightError):
            cams = []
        if not cams:
            raise click.BadParameter(f"{item!r}: expected CAMERA=YYYYMMDD, e.g. b3=20261123")
    return out


@step.command("run")
@click.argument("kind")
@click.option("--night", required=True, type=int)
@click.option("--expids", default="", help="comma-separated EXPIDs")
@click.option("--tile", "tileid", type=int, default=None)
@click.option("--cameras", default=None, help="e.g. b0,r0,z0 or a0123")
@click.option("--calib-night", type=int, default=None, help="use this night's calibnight files")
@click.option("--calib-nights", callback=_calib_nights, default=None,
              help="cameras whose calibnight files come from another night, e.g. b3=20261123,r3=20261123")
@click.option("--bad-amps", default="", help="amplifiers preproc masks (zero ivar), e.g. b7D,z8A")
def run_cmd(kind: str, night: int, expids: str, tileid: int | None, cameras: str | None,
            calib_night: int | None, calib_nights: dict[str, int], bad_amps: str) -> None:
    """Run one job of KIND; exit 0 only if every camera succeeded."""
    import os

    from ..config import import_kind_modules
    from ..steps.jobs import run_job

    # kinds declared outside desinight (config kind_modules, exported by the job's script)
    import_kind_modules(os.environ.get("DESINIGHT_KIND_MODULES", "").split(","),
                        "$DESINIGHT_KIND_MODULES")
    ids = [int(e) for e in expids.split(",") if e.strip()]
    rc = run_job(kind, night, ids, tileid, cameras, calib_night=calib_night, comm=_comm(),
                 bad_amps=[a for a in bad_amps.split(",") if a], calib_nights=calib_nights)
    sys.exit(rc)


# --- individual steps on explicit files (rerunning one step by hand while debugging) ----------
_IN = click.Path(exists=True, dir_okay=False)
_OUT = click.Path(dir_okay=False)


@step.command("preproc")
@click.option("--raw", "raw", required=True, type=_IN, help="desi-EXPID.fits.fz")
@click.option("--camera", required=True)
@click.option("--bias", type=_IN, default=None, help="biasnight file (else overscan only)")
@click.option("--out", required=True, type=_OUT)
def preproc_cmd(raw: str, camera: str, bias: str | None, out: str) -> None:
    """Overscan/bias/gain/dark, masks and variance of one camera."""
    from pathlib import Path

    from ..steps import preproc
    preproc.preproc_camera(Path(raw), camera, Path(bias) if bias else None, Path(out))


@step.command("psf")
@click.option("--preproc", "pre", required=True, type=_IN, help="preproc of an ARC exposure")
@click.option("--camera", required=True)
@click.option("--out", required=True, type=_OUT)
def psf_cmd(pre: str, camera: str, out: str) -> None:
    """Traces and wavelength solution from one arc."""
    from pathlib import Path

    from ..steps import psf
    psf.psf_from_arc(Path(pre), camera, Path(out))


@step.command("extract")
@click.option("--preproc", "pre", required=True, type=_IN)
@click.option("--psf", "psf_file", required=True, type=_IN)
@click.option("--camera", required=True)
@click.option("--out", required=True, type=_OUT, help="frame file")
def extract_cmd(pre: str, psf_file: str, camera: str, out: str) -> None:
    """Optimal extraction of every bundle (MPI over bundles under mpiexec)."""
    from pathlib import Path

    from ..steps import extract
    extract.extract_camera(Path(pre), Path(psf_file), camera, Path(out), comm=_comm())


@step.command("fiberflat")
@click.option("--frame", required=True, type=_IN, help="frame of a FLAT exposure")
@click.option("--camera", required=True)
@click.option("--out", required=True, type=_OUT)
def fiberflat_cmd(frame: str, camera: str, out: str) -> None:
    """Fibre-to-fibre throughput from one flat frame."""
    from pathlib import Path

    from ..steps import fiberflat
    fiberflat.fiberflat_from_frame(Path(frame), camera, Path(out))


@step.command("sky")
@click.option("--frame", required=True, type=_IN)
@click.option("--fiberflat", "ff", required=True, type=_IN)
@click.option("--fiberassign", "fa", required=True, type=_IN, help="sky fibres: OBJTYPE SKY")
@click.option("--camera", required=True)
@click.option("--out", required=True, type=_OUT, help="sframe file")
def sky_cmd(frame: str, ff: str, fa: str, camera: str, out: str) -> None:
    """Sky model from the sky fibres, subtracted with its variance."""
    from pathlib import Path

    import fitsio
    import numpy as np

    from ..steps import sky
    nfib = fitsio.read_header(frame, "FLUX")["NAXIS2"]
    tab = fitsio.read(fa, "FIBERASSIGN")
    sel = tab["FIBER"] // nfib == int(camera[1:])
    isky = np.zeros(nfib, bool)
    isky[tab["FIBER"][sel] % nfib] = np.char.strip(tab["OBJTYPE"][sel].astype(str)) == "SKY"
    sky.subtract_sky(Path(frame), Path(ff), isky, camera, Path(out))
