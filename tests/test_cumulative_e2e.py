"""Issue 16 item 2, done when: three simulated nights where tile T gets exposures on nights 1
and 3 (`sim night --tileid`). Night 3's cumulative redshift reads all of them (its coadd's
EXPOSURES table says so) and depends on night 1's jobs; night 1's cumulative result is kept.

Real: the simulator's raw data, `ingest --wait` on the local backend (planner, database,
cross-night edges, submission), the cumulative job's own step (coadd + redrock) and its
output files, `status` and `show job`. Stubbed, to keep this near 60 s: every other job runs
a trivial script, and the cframes the cumulative step reads are written by this test (two
fibres each, so redrock fits two targets, not fifty). The science of the chain is proven by
tests/test_steps_chain.py and tests/test_demo.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.daemonkit import cli, fast_templates, status_json

pytestmark = pytest.mark.slow
sim = pytest.importorskip("desinight.sim")

N1, N2, N3 = 20261101, 20261102, 20261103
T = 11010                    # night 1's own tile (the simulator numbers tiles by night)
ARMS = {"b": (3600.0, 5800.0), "r": (5760.0, 7620.0), "z": (7520.0, 9824.0)}


def fake_cframes(prod, night: int, expids) -> None:
    """cframe-{b,r,z}0 of each exposure: 2 fibres, flat spectra with noise, 2.4 A pixels."""
    from desinight.steps import io
    rng = np.random.default_rng(night)
    for e in expids:
        for arm, (lo, hi) in ARMS.items():
            w = np.arange(lo, hi, 2.4)
            flux = 1.0 + 0.1 * rng.standard_normal((2, w.size))
            path = prod / "exposures" / str(night) / f"{e:08d}" / f"cframe-{arm}0-{e:08d}.fits"
            io.write_fits(path, [("FLUX", flux, None), ("IVAR", np.full_like(flux, 100.0), None),
                                 ("LSFSIGMA", np.full_like(flux, 1.0), None),
                                 ("WAVELENGTH", w, None)])


def exposures_of(path) -> list[tuple[int, int]]:
    import fitsio
    return [(int(n), int(e)) for n, e in fitsio.read(str(path), "EXPOSURES")[["NIGHT", "EXPID"]]]


def test_tile_over_three_nights_cumulative_reads_all_and_keeps_night_1(tmp_path):
    import fitsio

    from desinight.sim import simulate_night
    raw, prod = tmp_path / "raw", tmp_path / "redux" / "test"
    templates = fast_templates(tmp_path / "templates", run="true")
    # the real cumulative step for tile T (night 2's tile: a trivial script, like the rest)
    (templates / "cumulative.sh.j2").write_text(
        '{% extends "base.sh.j2" %}{% block run %}'
        f'{{% if "{T}" in command %}}{{{{ command | join_argv }}}}{{% else %}}true{{% endif %}}'
        '\n{% endblock %}\n')
    conf = tmp_path / "desinight.toml"
    conf.write_text('[desinight]\nproduction = "test"\nraw_root = "raw"\nredux_root = "redux"\n'
                    f'state_dir = "state"\nbackend = "local"\ntemplates_dir = "{templates}"\n'
                    "cumulative_redshifts = true\n"
                    "[daemon]\npoll_min_s = 0.5\npoll_max_s = 2.0\n")
    cli(conf, "init")
    sci = {}
    for night in (N1, N2, N3):
        if night == N3:      # the flag under test: tile T again, the same targets (same seed)
            r = subprocess.run([sys.executable, "-m", "desinight", "sim", "night", "--night",
                                str(night), "--out", str(raw), "--seed", "1", "--tileid", str(T)],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        else:
            simulate_night(night, raw, preset="small", seed=1)
        sci[night] = sorted(int(d.name) for d in (raw / str(night)).iterdir()
                            if list(d.glob("fiberassign-*.fits")))
        tile = int(next((raw / str(night)).glob("*/fiberassign-*.fits")).stem.split("-")[1])
        assert (tile == T) == (night != N2)
        fa = fitsio.read(str(next((raw / str(night)).glob("*/fiberassign-*.fits"))), "FIBERASSIGN")
        if night == N1:
            targets = list(fa["TARGETID"])
        elif night == N3:                   # the same targets observed again
            assert list(fa["TARGETID"]) == targets
        fake_cframes(prod, night, sci[night])
        r = cli(conf, "ingest", str(night), "--wait", "--timeout", "300", check=False, timeout=400)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    jobs = {j["key"]: j for j in status_json(conf, N3)["jobs"]}
    cum = next(j for j in jobs.values() if j["kind"] == "cumulative")
    assert cum["key"].startswith(f"{N3}/cumulative/{T}/") and cum["state"] == "completed"
    assert cum["expids"] == sci[N1] + sci[N3]
    coadd = prod / "tiles" / "cumulative" / str(T) / str(N3) / f"coadd-0-{T}-thru{N3}.fits"
    zcat = coadd.with_name(f"redrock-0-{T}-thru{N3}.fits")
    want = [(N1, e) for e in sci[N1]] + [(N3, e) for e in sci[N3]]
    assert exposures_of(coadd) == want and exposures_of(zcat) == want
    # it waited on night 1's flux calibrations (its cframes), recorded as its parents
    show = json.loads(cli(conf, "show", "job", cum["key"], "--json").stdout)
    assert {f"{N1}/fluxcalib/{e:08d}" for e in sci[N1]} <= {p["key"] for p in show["parents"]}
    # night 1's cumulative result is kept, as it was: night 1's exposures only, one attempt
    old = prod / "tiles" / "cumulative" / str(T) / str(N1) / f"coadd-0-{T}-thru{N1}.fits"
    assert exposures_of(old) == [(N1, e) for e in sci[N1]]
    n1 = [j for j in status_json(conf, N1)["jobs"] if j["kind"] == "cumulative"]
    assert len(n1) == 1 and n1[0]["attempts"] == 1 and n1[0]["expids"] == sci[N1]
    # the per-night redshift of night 3 keeps to night 3; the status table labels the kind
    assert next(j for j in jobs.values() if j["kind"] == "redshift")["expids"] == sci[N3]
    assert "zc" in cli(conf, "status", "--night", str(N3)).stdout
