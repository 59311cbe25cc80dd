"""`sim score` arithmetic on hand-made catalogues: per-class fractions and Wilson intervals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import fitsio
import numpy as np
import pytest
from click.testing import CliRunner

from desinight.cli.sim_cmd import sim
from desinight.sim.score import score_arrays, score_production
from desinight.sim.targets import TRUTH_DTYPE

Z68 = 1.0000217               # normal quantile of (1 + 0.6827) / 2


def wilson(k: int, n: int) -> tuple[float, float]:
    p, z2 = k / n, Z68**2
    mid = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z68 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return mid - half, mid + half


# (class, true z, fitted z, ZWARN): ELG: 6 good (one flagged), 2 wrong unflagged, 2 wrong flagged
ROWS = ([("ELG", 1.0, 1.0 + 0.001, 0)] * 5 + [("ELG", 1.0, 1.0, 4)]
        + [("ELG", 1.0, 1.5, 0)] * 2 + [("ELG", 1.2, 0.3, 4)] * 2
        # LRG: 3 good, dz/(1+z) just above the limit once (unflagged)
        + [("LRG", 0.5, 0.5, 0)] * 3 + [("LRG", 0.5, 0.5 + 0.0034 * 1.5, 0)]
        # QSO: one exact, one 2000 km/s off (good by DESI's 3000 km/s, not at 1000), one 4000 off
        + [("QSO", 2.0, 2.0, 0), ("QSO", 2.0, 2.0 + 3 * 2000 / 299792.458, 0),
           ("QSO", 2.0, 2.0 - 3 * 4000 / 299792.458, 0)]
        + [("STD", 0.0, 0.0, 0), ("SKY", 0.0, 0.0, 0)])


def test_fractions_per_class_exact():
    cls, tz, z, zw = (np.array(c) for c in zip(*ROWS))
    res = score_arrays(cls, tz.astype(float), z.astype(float), zw.astype(int))
    elg = res["ELG"]
    assert elg["n"] == 10
    assert (elg["good"]["k"], elg["catastrophic_unflagged"]["k"], elg["flagged"]["k"]) == (6, 2, 3)
    assert (elg["failures_flagged"]["k"], elg["failures_flagged"]["n"]) == (2, 4)
    assert elg["good"]["frac"] == 0.6
    assert (elg["good"]["lo"], elg["good"]["hi"]) == pytest.approx(wilson(6, 10), abs=1e-5)
    assert (elg["failures_flagged"]["lo"], elg["failures_flagged"]["hi"]) == \
        pytest.approx(wilson(2, 4), abs=1e-5)
    lrg = res["LRG"]
    assert (lrg["n"], lrg["good"]["k"], lrg["catastrophic_unflagged"]["k"]) == (4, 3, 1)
    qso, strict = res["QSO"], res["QSO@1000"]
    assert (qso["n"], qso["good"]["k"], qso["catastrophic_unflagged"]["k"]) == (3, 2, 1)
    assert (strict["n"], strict["good"]["k"], strict["catastrophic_unflagged"]["k"]) == (3, 1, 2)
    assert (qso["good"]["lo"], qso["good"]["hi"]) == pytest.approx(wilson(2, 3), abs=1e-5)
    assert res["BGS"]["n"] == 0 and math.isnan(res["BGS"]["good"]["frac"])
    # STD and SKY are not scored; quasars are scored twice
    assert set(res) == {"BGS", "LRG", "ELG", "QSO", "STAR", "QSO@1000"}


def _production(tmp_path):
    truth = np.zeros(len(ROWS), TRUTH_DTYPE)
    cat = np.zeros(len(ROWS), [("TARGETID", "i8"), ("Z", "f8"), ("ZWARN", "i8"),
                               ("SPECTYPE", "U6")])
    for i, (c, tz, z, zw) in enumerate(ROWS):
        ttype = {"QSO": "QSO", "STD": "STAR", "SKY": "SKY"}.get(c, "GALAXY")
        truth[i]["TARGETID"], truth[i]["TRUETYPE"], truth[i]["TRUESUBTYPE"] = 100 + i, ttype, c
        truth[i]["TRUEZ"] = tz
        cat[i] = (100 + i, z, zw, ttype)
    tp = tmp_path / "truth.fits"
    fitsio.write(str(tp), truth, extname="TRUTH")
    out = tmp_path / "prod" / "tiles" / "1000" / "20261124"
    out.mkdir(parents=True)
    half = len(ROWS) // 2                                   # two spectrograph files, merged
    fitsio.write(str(out / "redrock-0-1000-20261124.fits"), cat[:half], extname="REDSHIFTS")
    fitsio.write(str(out / "redrock-1-1000-20261124.fits"), cat[half:], extname="REDSHIFTS")
    return tp, tmp_path / "prod"


def test_cli_text_and_json(tmp_path):
    tp, prod = _production(tmp_path)
    res = score_production(tp, prod)
    assert res["classes"]["ELG"]["good"]["k"] == 6 and res["ntarget"] == len(ROWS)
    r = CliRunner().invoke(sim, ["score", "--truth", str(tp), "--redux", str(prod), "--json"])
    assert r.exit_code == 0, r.output
    js = json.loads(r.output)
    assert js["classes"]["ELG"]["catastrophic_unflagged"]["frac"] == 0.2
    assert js["classes"]["LRG"]["good"]["k"] == 3
    r = CliRunner().invoke(sim, ["score", "--truth", str(tp), "--redux", str(prod)])
    lines = r.output.strip().splitlines()
    elg = next(line for line in lines if line.startswith("ELG"))
    lo, hi = wilson(6, 10)
    assert f"60.0 [{100 * lo:.1f}, {100 * hi:.1f}]" in elg
    assert "catastrophic unflagged" in lines[-1]
    # quasars: DESI's 3000 km/s row, and the same quasars at 1000 km/s beside it
    assert next(x for x in lines if x.startswith("QSO ")).split()[2] == "66.7"
    assert next(x for x in lines if x.startswith("QSO@1000")).split()[2] == "33.3"
    assert js["classes"]["QSO@1000"]["catastrophic_unflagged"]["k"] == 2


def test_good_unflagged_and_redrocks_own_bits(tmp_path):
    """ZWARN's afterburner bits count as flags; the score also gives the sample a user keeps
    (good, ZWARN == 0) and, beside it, the catastrophic failures redrock's own bits (0-15)
    leave unflagged, so what the class cut adds is visible; the text output names both."""
    from desinight.steps.emline import QUALITY_CUT
    cls, tz, z, zw = (np.array(c) for c in zip(*ROWS))
    zw = zw.astype(np.int64)
    elg = np.flatnonzero(cls == "ELG")
    zw[elg[6]] |= QUALITY_CUT        # one wrong unflagged ELG caught by the class cut
    zw[elg[0]] |= QUALITY_CUT        # and one right ELG cut (a weak [OII])
    res = score_arrays(cls, tz.astype(float), z.astype(float), zw)["ELG"]
    assert res["catastrophic_unflagged"]["k"] == 1 and res["catastrophic_unflagged_rr"]["k"] == 2
    assert (res["good_unflagged"]["k"], res["flagged"]["k"]) == (4, 5)
    assert (res["failures_flagged"]["k"], res["failures_flagged"]["n"]) == (3, 4)
    tp, prod = _production(tmp_path)
    head = CliRunner().invoke(sim, ["score", "--truth", str(tp), "--redux", str(prod)]).output
    assert "good unflagged %" in head and "redrock bits alone" in head.splitlines()[0]


def test_no_catalogue_is_one_line_not_found(tmp_path):
    tp, _ = _production(tmp_path)
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "desinight", "sim", "score", "--truth", str(tp),
                        "--redux", str(tmp_path / "empty")], capture_output=True, text=True)
    assert r.returncode == 3
    assert len(r.stderr.strip().splitlines()) == 1 and "redrock" in r.stderr
