"""Score a production's redshift catalogues against the simulator's truth table, per class.

Per target class (BGS, LRG, ELG, QSO, STAR; standards and sky fibres are not scored):
- good: |Z - TRUEZ| / (1 + TRUEZ) below the class's limit, whatever ZWARN says: 0.0033
  (1000 km/s) for galaxies and stars; 0.01 (3000 km/s) for quasars, DESI's own convention for
  them (Alexander et al. 2023, AJ 165, 124: "reliable redshifts measured within 3000 km/s"),
  since a quasar's broad lines sit up to thousands of km/s off its systemic redshift. The
  quasars are also scored at 1000 km/s (``QSO@1000``), so nothing is hidden by the wider limit;
- catastrophic unflagged: not good and ZWARN == 0 (the failures a user would trust);
- flagged: ZWARN != 0; failures flagged: flagged among the not-good;
- good unflagged: good and ZWARN == 0, the sample a user keeps;
- catastrophic unflagged by redrock's own bits (``catastrophic_unflagged_rr``: ZWARN & 0xFFFF
  == 0), i.e. without the pipeline's class cut (steps/emline.QUALITY_CUT), so that what the cut
  adds is shown;
each with a binomial 68.27% Wilson interval (scipy.stats.binomtest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from desinight.steps.emline import REDROCK_BITS

DZ_OK = 0.0033
#: per-class limits where DESI's differs from DZ_OK; "QSO@1000" re-scores quasars at DZ_OK
DZ_CLASS = {"QSO": 0.01}
CLASSES = ("BGS", "LRG", "ELG", "QSO", "STAR")
SCORED = CLASSES + ("QSO@1000",)
CONF = 0.6827


def interval(k: int, n: int) -> tuple[float, float]:
    """Wilson 68.27% interval of a binomial fraction k/n; (nan, nan) for n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=CONF, method="wilson")
    return float(ci.low), float(ci.high)


def _frac(k: int, n: int) -> dict:
    lo, hi = interval(k, n)
    return {"k": int(k), "n": int(n), "frac": (k / n) if n else float("nan"), "lo": lo, "hi": hi}


def good_mask(cls: np.ndarray, truez: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Right redshifts, each against its class's limit (DZ_CLASS, else DZ_OK)."""
    cls = np.char.strip(np.asarray(cls).astype(str))
    limit = np.array([DZ_CLASS.get(c, DZ_OK) for c in cls], float)
    return np.abs(np.asarray(z) - truez) / (1 + np.asarray(truez)) < limit


def score_arrays(cls: np.ndarray, truez: np.ndarray, z: np.ndarray, zwarn: np.ndarray) -> dict:
    """The per-class figures from matched arrays (class name, true z, fitted Z, ZWARN)."""
    cls = np.char.strip(np.asarray(cls).astype(str))
    dz = np.abs(np.asarray(z) - truez) / (1 + np.asarray(truez))
    zwarn = np.asarray(zwarn).astype(np.int64)
    flagged = zwarn != 0
    flagged_rr = (zwarn & REDROCK_BITS) != 0
    out = {}
    for c in SCORED:
        base = c.split("@")[0]
        m = cls == base
        good = dz < (DZ_OK if "@" in c else DZ_CLASS.get(c, DZ_OK))
        n = int(m.sum())
        out[c] = {"n": n, "good": _frac(int((good & m).sum()), n),
                  "catastrophic_unflagged": _frac(int((~good & ~flagged & m).sum()), n),
                  "flagged": _frac(int((flagged & m).sum()), n),
                  "failures_flagged": _frac(int((~good & flagged & m).sum()),
                                            int((~good & m).sum())),
                  "good_unflagged": _frac(int((good & ~flagged & m).sum()), n),
                  "catastrophic_unflagged_rr": _frac(int((~good & ~flagged_rr & m).sum()), n)}
    return out


def match(truth: Path, redux: Path) -> dict[str, np.ndarray]:
    """The production's REDSHIFTS rows matched to the truth by TARGETID: arrays CLASS (target
    class), TRUETYPE, TRUEZ, Z, ZWARN, OII_FLUX (the truth's, erg/s/cm^2), MAG_R."""
    import fitsio

    tr = fitsio.read(str(truth), "TRUTH")
    cats = [fitsio.read(str(p), "REDSHIFTS") for p in sorted(Path(redux).glob("tiles/*/*/redrock-*.fits"))]
    if not cats:
        from desinight.core.errors import NotFound
        raise NotFound(f"no redrock-*.fits under {redux}/tiles")
    rr = np.concatenate(cats)
    index = {int(t): i for i, t in enumerate(tr["TARGETID"])}
    keep = np.array([int(t) in index for t in rr["TARGETID"]], dtype=bool)
    rr = rr[keep]
    ti = np.array([index[int(t)] for t in rr["TARGETID"]], dtype=int)
    return {"CLASS": np.char.strip(tr["TRUESUBTYPE"][ti].astype(str)),
            "TRUETYPE": np.char.strip(tr["TRUETYPE"][ti].astype(str)),
            "TRUEZ": tr["TRUEZ"][ti].astype(float), "Z": rr["Z"].astype(float),
            "ZWARN": rr["ZWARN"].astype(np.int64), "OII_FLUX": _col(tr, "OII_FLUX")[ti],
            "MAG_R": tr["MAG_R"][ti].astype(float)}


def _col(table: np.ndarray, name: str) -> np.ndarray:
    # a truth written before the column: 0 (its ELGs fall below every [OII] bin)
    return table[name].astype(float) if name in table.dtype.names else np.zeros(len(table))


def score_production(truth: Path, redux: Path) -> dict:
    m = match(truth, redux)
    good = good_mask(m["CLASS"], m["TRUEZ"], m["Z"])
    n = len(good)
    extragal = np.isin(m["TRUETYPE"], ["GALAXY", "QSO"])
    n_eg = int(extragal.sum())
    return {"ntarget": n, "n_galqso": n_eg,
            "frac_good_galqso": float(good[extragal].mean()) if n_eg else float("nan"),
            "frac_catastrophic_unflagged": float(((~good) & (m["ZWARN"] == 0)).mean()) if n else float("nan"),
            "frac_flagged": float((m["ZWARN"] != 0).mean()) if n else float("nan"),
            "classes": score_arrays(m["CLASS"], m["TRUEZ"], m["Z"], m["ZWARN"])}


def _pct(f: dict) -> str:
    if not f["n"]:
        return "-"
    return f"{100 * f['frac']:.1f} [{100 * f['lo']:.1f}, {100 * f['hi']:.1f}]"


def format_score(res: dict) -> list[str]:
    """A table per class (percent with the 68% interval), then the summary line (last)."""
    lines = [f"{'class':5s} {'n':>4s}  {'good %':22s} {'catastrophic unflagged %':26s} "
             f"{'flagged %':22s} {'failures flagged %':22s} {'good unflagged %':22s} "
             f"{'redrock bits alone: catastrophic unflagged %':22s}"]
    for c, r in res.get("classes", {}).items():
        lines.append(f"{c:5s} {r['n']:4d}  {_pct(r['good']):22s} "
                     f"{_pct(r['catastrophic_unflagged']):26s} {_pct(r['flagged']):22s} "
                     f"{_pct(r['failures_flagged']):22s} {_pct(r['good_unflagged']):22s} "
                     f"{_pct(r['catastrophic_unflagged_rr']):22s}")
    lines += [f"targets scored: {res['ntarget']} ({res['n_galqso']} galaxies/quasars)",
              f"good (gal+qso; QSO within 3000 km/s): {100 * res['frac_good_galqso']:.1f}%  "
              f"catastrophic unflagged: {100 * res['frac_catastrophic_unflagged']:.1f}%  "
              f"flagged: {100 * res['frac_flagged']:.1f}%"]
    return lines
