"""Score a production's redshift catalogues against the simulator's truth table.

Figures (SCIENCE-NOTES.md convention): a redshift is good when |dz|/(1+z) < 0.0033; a target
whose redshift is not good and whose ZWARN is 0 is an unflagged catastrophic failure. Sky
fibres are not targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DZ_GOOD = 0.0033


@dataclass
class Score:
    ntargets: int            # matched non-sky targets
    ngalqso: int             # matched galaxies + quasars
    ngood_galqso: int
    ncatastrophic: int       # not good and ZWARN == 0 (all targets)
    nflagged: int            # ZWARN != 0 (all targets)
    nmissing: int            # truth targets with no catalogue entry
    by_type: dict

    @property
    def good_frac(self) -> float:
        return self.ngood_galqso / self.ngalqso if self.ngalqso else 0.0

    @property
    def cata_frac(self) -> float:
        return self.ncatastrophic / self.ntargets if self.ntargets else 0.0


def read_catalogues(redux: Path) -> np.ndarray:
    import fitsio
    files = sorted(Path(redux).glob("tiles/*/*/redrock-*.fits"))
    if not files:
        from ..core.errors import DesinightError
        raise DesinightError(f"no redrock-*.fits under {redux}/tiles")
    cats = [fitsio.read(str(f), ext="REDSHIFTS") for f in files]
    return np.concatenate(cats)


def score_arrays(truth: np.ndarray, cat: np.ndarray) -> Score:
    ttype = np.char.strip(truth["TRUETYPE"].astype(str))
    truth = truth[ttype != "SKY"]
    ttype = ttype[ttype != "SKY"]
    # latest entry per TARGETID wins (a tile refit after a late exposure)
    pos = {int(t): i for i, t in enumerate(cat["TARGETID"])}
    idx = np.array([pos.get(int(t), -1) for t in truth["TARGETID"]])
    found = idx >= 0
    c = cat[idx[found]]
    tz, tt = truth["TRUEZ"][found], ttype[found]
    good = np.abs(c["Z"] - tz) / (1 + tz) < DZ_GOOD
    flagged = c["ZWARN"] != 0
    gq = np.isin(tt, ["GALAXY", "QSO"])
    sub = np.char.strip(truth["TRUESUBTYPE"].astype(str))[found]
    by_type = {k: (int(np.sum(good & (sub == k))), int(np.sum(sub == k)))
               for k in sorted(set(sub))}
    return Score(int(found.sum()), int(gq.sum()), int(np.sum(good & gq)),
                 int(np.sum(~good & ~flagged)), int(flagged.sum()), int((~found).sum()), by_type)


def score_production(truth: Path, redux: Path) -> Score:
    import fitsio
    return score_arrays(fitsio.read(str(truth), ext="TRUTH"), read_catalogues(redux))


def format_score(s: Score) -> list[str]:
    lines = [f"{k}: {g}/{n} good" for k, (g, n) in s.by_type.items()]
    if s.nmissing:
        lines.append(f"{s.nmissing} truth targets have no redshift")
    lines.append(f"{s.ntargets} targets: {100 * s.good_frac:.1f}% of galaxies+QSOs good "
                 f"({s.ngood_galqso}/{s.ngalqso}, |dz|/(1+z)<{DZ_GOOD}); "
                 f"{100 * s.cata_frac:.1f}% catastrophic not flagged "
                 f"({s.ncatastrophic}/{s.ntargets}); {s.nflagged} flagged ZWARN!=0")
    return lines
