"""The raw-data simulator: layout, headers, determinism, bad-data modes, CLI."""

from __future__ import annotations

import json

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desinight.core.errors import BadExposure, DesinightError
from desinight.rawdata import inspect_exposure
from desinight.sim import simulate_night
from desinight.sim.badmodes import BAD_MODES

NIGHT = 20261124


@pytest.fixture(scope="module")
def night_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    dirs = simulate_night(NIGHT, root, preset="small", seed=3, bad=BAD_MODES)
    return root, dirs


def test_layout_and_headers(night_dir):
    root, dirs = night_dir
    good = dirs[:6]
    assert [d.name for d in good] == [f"{26112400 + i:08d}" for i in range(6)]
    types = []
    for d in good:
        expid = int(d.name)
        raw = d / f"desi-{expid:08d}.fits.fz"
        assert (d / f"request-{expid:08d}.json").exists()
        assert not [p for p in d.iterdir() if p.name.startswith(".")]
        hdr = fitsio.read_header(str(raw), 0)
        for key in ("EXPID", "NIGHT", "OBSTYPE", "TILEID", "EXPTIME", "PROGRAM", "DATE-OBS",
                    "MJD-OBS", "CAMERAS", "SEQNUM", "SEQTOT"):
            assert key in hdr, key
        assert hdr["EXPID"] == expid and hdr["NIGHT"] == NIGHT and hdr["CAMERAS"] == "b0,r0,z0"
        types.append(hdr["OBSTYPE"])
        with fits.open(raw) as hd:       # astropy reads the compressed images too
            assert [h.name for h in hd[1:]] == ["B0", "R0", "Z0"]
            assert hd["B0"].header["EXPID"] == expid
            assert hd["B0"].data.dtype == np.int16
        exp = inspect_exposure(d)
        assert exp.cameras == ("b0", "r0", "z0") and not exp.bad_cameras
        req = json.loads((d / f"request-{expid:08d}.json").read_text())
        assert req["OBSTYPE"] == hdr["OBSTYPE"]
    assert types == ["ZERO", "ARC", "FLAT", "SCIENCE", "SCIENCE", "SCIENCE"]
    last = inspect_exposure(good[-1])
    assert last.seqnum == last.seqtot == 3 and last.tileid is not None
    fa = fitsio.read(str(good[3] / f"fiberassign-{last.tileid}.fits"), ext="FIBERASSIGN")
    assert len(fa) == 50 and {"SKY", "TGT"} == set(fa["OBJTYPE"])
    assert {"SKY", "STD", "ELG", "LRG", "QSO", "STAR"} == set(fa["TARGET_TYPE"])
    truth = fitsio.read(str(root / "truth" / f"truth-{NIGHT}.fits"))
    assert set(truth["TARGETID"]) == set(fa["TARGETID"])
    assert truth["TRUEZ"].max() > 1.0


def test_bad_modes_are_rejected(night_dir):
    _, dirs = night_dir
    extra = dict(zip(BAD_MODES, dirs[6:]))
    for mode, d in extra.items():
        if mode == "missing-camera":
            exp = inspect_exposure(d)
            assert exp.bad_cameras == ("z0",), mode
            continue
        with pytest.raises(BadExposure):
            inspect_exposure(d)


def test_deterministic_by_seed(tmp_path):
    a = simulate_night(NIGHT, tmp_path / "a", seed=7)
    b = simulate_night(NIGHT, tmp_path / "b", seed=7)
    c = simulate_night(NIGHT, tmp_path / "c", seed=8)
    for x, y, z in zip(a, b, c):
        name = f"desi-{x.name}.fits.fz"
        ia = fitsio.read(str(x / name), ext="R0")
        assert np.array_equal(ia, fitsio.read(str(y / name), ext="R0"))
        if x.name.endswith("03"):
            assert not np.array_equal(ia, fitsio.read(str(z / name), ext="R0"))


def test_errors():
    with pytest.raises(DesinightError):
        simulate_night(NIGHT, "/tmp/never", preset="huge")
    with pytest.raises(DesinightError):
        simulate_night(NIGHT, "/tmp/never", bad=["nope"])


def test_cli(tmp_path):
    from click.testing import CliRunner

    from desinight.cli.sim_cmd import sim
    r = CliRunner().invoke(sim, ["night", "--night", str(NIGHT), "--out", str(tmp_path),
                                 "--seed", "2", "--bad", "wrong-obstype",
                                 "--truth-dir", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t" / f"truth-{NIGHT}.fits").exists()
    assert len(list((tmp_path / str(NIGHT)).iterdir())) == 7


def test_realtime_partial_file_then_request(tmp_path):
    """In realtime mode the raw file is visible half-written before it completes, and the
    request file (what marks an exposure complete) only appears after it."""
    import threading
    import time

    from desinight.rawdata import Incomplete
    from desinight.sim import instrument as I
    from desinight.sim import night as N
    p = I.PRESETS["small"]
    e = N.schedule(p, NIGHT, 0)[0]
    images = dict(N.render_camera((p, c, e, 0)) for c in e.cameras)
    t = threading.Thread(target=N.write_exposure, args=(tmp_path, p, e, images, None, e.expid, 1.5))
    t.start()
    expdir = tmp_path / str(NIGHT) / f"{e.expid:08d}"
    raw = expdir / f"desi-{e.expid:08d}.fits.fz"
    deadline = time.time() + 10
    # the first bytes written (the writer paces the rest over 1.5 s)
    while not (raw.exists() and raw.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.02)
    partial = raw.stat().st_size
    assert not (expdir / f"request-{e.expid:08d}.json").exists()
    with pytest.raises(Incomplete):
        inspect_exposure(expdir)
    t.join()
    assert raw.stat().st_size > partial
    assert inspect_exposure(expdir).obstype == "ZERO"


def test_realtime_night_in_order(tmp_path):
    dirs = simulate_night(NIGHT, tmp_path, realtime=1e6)
    mtimes = [(d / f"request-{d.name}.json").stat().st_mtime for d in dirs]
    assert mtimes == sorted(mtimes)
