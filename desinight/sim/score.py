"""Score a production's redshift catalogues against the simulator's truth table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DZ_OK = 0.0033


def score_production(truth: Path, redux: Path) -> dict:
    import fitsio

    tr = fitsio.read(str(truth))
    cats = [fitsio.read(str(p), "REDSHIFTS") for p in sorted(Path(redux).glob("tiles/*/*/redrock-*.fits"))]
    if not cats:
        from desinight.core.errors import NotFound
        raise NotFound(f"no redrock-*.fits under {redux}/tiles")
    rr = np.concatenate(cats)
    index = {int(t): i for i, t in enumerate(tr["TARGETID"])}
    rows = [(index[int(r["TARGETID"])], r) for r in rr if int(r["TARGETID"]) in index]
    ttype = np.array([str(tr["TRUETYPE"][i]).strip() for i, _ in rows])
    truez = np.array([tr["TRUEZ"][i] for i, _ in rows])
    z = np.array([r["Z"] for _, r in rows])
    zwarn = np.array([r["ZWARN"] for _, r in rows])
    good = np.abs(z - truez) / (1 + truez) < DZ_OK
    extragal = np.isin(ttype, ["GALAXY", "QSO"])
    n_eg = int(extragal.sum())
    return {"ntarget": len(rows), "n_galqso": n_eg,
            "frac_good_galqso": float(good[extragal].mean()) if n_eg else float("nan"),
            "frac_catastrophic_unflagged": float(((~good) & (zwarn == 0)).mean()) if rows else float("nan"),
            "frac_flagged": float((zwarn != 0).mean()) if rows else float("nan")}


def format_score(res: dict) -> list[str]:
    return [f"targets scored: {res['ntarget']} ({res['n_galqso']} galaxies/quasars)",
            f"good |dz|/(1+z)<{DZ_OK} (gal+qso): {100 * res['frac_good_galqso']:.1f}%  "
            f"catastrophic unflagged: {100 * res['frac_catastrophic_unflagged']:.1f}%  "
            f"flagged: {100 * res['frac_flagged']:.1f}%"]
