"""Darks and calibration sets on a simulated night (small preset, 3 darks, a broken arc
sequence before a good one of 3): the measured dark against the truth, and the broken
sequence kept out of psfnight by the planner on ingested data."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from desinight import orchestrate as O
from desinight.app import open_context
from desinight.config import Config
from desinight.db import repo
from desinight.db.engine import transaction
from desinight.db.models import Job
from desinight.ingest import ingest_night
from desinight.cli.main import cli
from desinight.steps import io, jobs, preproc
from desinight.steps.jobs import run_job

pytestmark = pytest.mark.slow
NIGHT = 20261124
SEED = 5
CAM = "r0"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibdata")
    res = CliRunner().invoke(cli, ["sim", "night", "--night", str(NIGHT), "--out",
                                   str(root / "raw"), "--seed", str(SEED), "--darks", "3",
                                   "--narc", "3", "--broken-arcs", "incomplete"])
    assert res.exit_code == 0, res.output
    by_type: dict[str, list[int]] = {}
    seq: dict[str, list[tuple[int, int]]] = {}
    for d in sorted((root / "raw" / str(NIGHT)).iterdir()):
        h = fitsio.read_header(str(d / f"desi-{d.name}.fits.fz"), 0)
        by_type.setdefault(h["OBSTYPE"].strip(), []).append(int(h["EXPID"]))
        seq.setdefault(h["OBSTYPE"].strip(), []).append((h["SEQNUM"], h["SEQTOT"]))
    assert seq["DARK"] == [(1, 3), (2, 3), (3, 3)]
    assert seq["ARC"] == [(1, 5), (2, 5), (3, 5), (1, 3), (2, 3), (3, 3)]
    return root, by_type


def test_measured_dark_beats_the_constant_dark(sim, monkeypatch):
    """darknight recovers the simulator's hot pixels, and a science preproc that subtracts it
    is closer to the noiseless image than one that does not, by a factor in hot pixels."""
    from desinight.sim import instrument as I
    from desinight.sim import night as SN
    from desinight.sim import targets as TG
    root, by_type = sim
    monkeypatch.setenv("DESI_SPECTRO_DATA", str(root / "raw"))
    monkeypatch.setenv("DESI_SPECTRO_REDUX", str(root / "redux"))
    monkeypatch.setenv("SPECPROD", "test")
    assert run_job("biasnight", NIGHT, by_type["ZERO"], None, [CAM]) == 0
    assert run_job("darknight", NIGHT, by_type["DARK"], None, [CAM]) == 0
    measured, hdr = io.read_hdu(io.calibnight_path("darknight", NIGHT, CAM), "IMAGE")
    truth = fitsio.read(str(root / "raw" / "truth" / f"truth-{NIGHT}.fits"), f"DARK-{CAM.upper()}")
    hot = truth > 0.04
    assert hdr["NDARK"] == 3 and 0.001 < hot.mean() < 0.01
    # hot pixels measured to their shot noise (3 x 300 s: ~0.02 e/s typical), dark elsewhere
    # consistent with the design value
    err = float(np.median(np.abs(measured[hot] - truth[hot])))
    print(f"darknight vs truth in hot pixels: median |error| {err:.4f} e/s")
    assert err < 0.03
    assert abs(np.median(measured[~hot])) < 0.005

    sci = by_type["SCIENCE"][0]
    jobs._task_preproc_each(NIGHT, [sci], None, CAM, None)        # finds the night's darknight
    with_dark = fitsio.read(str(io.preproc_path(NIGHT, sci, CAM)), "IMAGE")
    hdr_pre = fitsio.read_header(str(io.preproc_path(NIGHT, sci, CAM)), "IMAGE")
    const = root / "const.fits"
    preproc.preproc_camera(io.raw_path(NIGHT, sci), CAM,
                           io.calibnight_path("biasnight", NIGHT, CAM), const)
    without, mask = fitsio.read(str(const), "IMAGE"), fitsio.read(str(const), "MASK")
    # provenance names the dark it subtracted
    assert any(str(hdr_pre[k]).startswith("darknight-r0") for k in hdr_pre.keys()
               if k.startswith("INPUT"))

    p = I.PRESETS["small"]
    exp = next(e for e in SN.schedule(p, NIGHT, SEED, darks=3, narc=3, broken_arcs="incomplete")
               if e.expid == sci)
    tile = TG.make_tile(p, exp.tileid, np.random.default_rng([SEED, exp.tileid, 5]))
    noiseless = SN.camera_electrons(p, CAM, exp, tile, SEED)
    keep = hot & (fitsio.read(str(io.preproc_path(NIGHT, sci, CAM)), "MASK") == 0) & (mask == 0)
    rms = lambda img: float(np.sqrt(np.mean((img - noiseless)[keep] ** 2)))  # noqa: E731
    r_meas, r_const = rms(with_dark), rms(without)
    print(f"hot-pixel residual r.m.s.: measured dark {r_meas:.1f} e, constant {r_const:.1f} e "
          f"({keep.sum()} pixels)")
    assert keep.sum() > 100
    assert not np.allclose(with_dark, without)
    assert r_const > 5 * r_meas
    # and no worse anywhere else
    cold = ~hot & (mask == 0)
    assert np.std((with_dark - noiseless)[cold]) < 1.05 * np.std((without - noiseless)[cold])


@pytest.fixture
def night_ctx(sim, tmp_path, db_url, fake_backend):
    root, _ = sim
    cfg = Config(production="test", raw_root=root / "raw", redux_root=tmp_path / "redux",
                 state_dir=tmp_path / "state", db_url=db_url)
    ctx = open_context(dataclasses.replace(cfg, min_arcs=3), backend=fake_backend, create=True)
    with transaction(ctx.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    yield ctx
    ctx.sessions.kw["bind"].dispose()


def test_broken_arc_sequence_is_not_in_psfnight(sim, night_ctx):
    """Ingested and planned while the night is open (calib.min_arcs = 3): psfnight waits while
    only the broken sequence is in, then reads the good sequence only; every preproc waits
    for the night's darknight."""
    root, by_type = sim
    arcs = by_type["ARC"]
    broken, good = arcs[:3], arcs[3:]
    # the broken sequence and a flat have arrived: psfnight waits for a complete set of 3
    first = [*by_type["ZERO"], *by_type["DARK"], *broken, by_type["FLAT"][0]]
    ingest_night(night_ctx, NIGHT, datetime.now(timezone.utc),
                 only=[root / "raw" / str(NIGHT) / f"{e:08d}" for e in first])
    O.plan(night_ctx, NIGHT)
    with transaction(night_ctx.sessions) as s:
        kinds = {j.kind for j in s.scalars(select(Job))}
    assert "arc" in kinds and not kinds & {"psfnight", "flat"}
    ingest_night(night_ctx, NIGHT, datetime.now(timezone.utc))
    O.plan(night_ctx, NIGHT)
    with transaction(night_ctx.sessions) as s:
        rows = list(s.scalars(select(Job)))
        parents = repo.parents_of(s, [j.id for j in rows])
        planned = {j.key: (j.kind, j.expids, sorted(p.key for p in parents.get(j.id, [])))
                   for j in rows}
    psf = planned[f"{NIGHT}/psfnight"]
    assert psf[1] == good and not set(broken) & set(psf[1])
    assert sum(kind == "arc" for kind, _, _ in planned.values()) == 6
    assert planned[f"{NIGHT}/darknight"][1:] == (by_type["DARK"], [f"{NIGHT}/biasnight"])
    assert f"{NIGHT}/darknight" in planned[f"{NIGHT}/arc/{good[0]:08d}"][2]
    assert planned[f"{NIGHT}/biasnight"][1] == by_type["ZERO"]
    sci = f"{NIGHT}/science/{by_type['SCIENCE'][0]:08d}"
    assert f"{NIGHT}/darknight" in planned[sci][2]
