"""CALVAR: the part of a spectrum's variance that every exposure reduced with the same nightly
calibrations shares.

The nightly bias is one noisy image (the median of the night's zeros) subtracted from every
exposure: its noise is the same realisation in all of them. Each exposure's IVAR counts it
rightly, but a coadd that sums the exposures' IVARs treats it as independent and averages it
down by the number of exposures; with one zero it is as large as the read noise itself, and a
three-exposure coadd then claimed ~1.5 times too little variance (sky fibres of the small
night: chi2 per pixel 1.44-1.55 in the coadd against 1.0-1.1 per exposure), which made wrong
redshifts look confident. The same holds for the nightly fibre flat's noise, which scales
with each exposure's flux.

So frames, sframes and cframes carry CALVAR (same units as 1/IVAR, and part of it) and the
header card CALVARID naming the bias; the coadd counts CALVAR as fully correlated between
exposures with the same CALVARID (coadd_variance).
"""

from __future__ import annotations

import numpy as np

from desinight import desimodel as I


def bias_var_image(hdr: dict, shape: tuple[int, int]) -> np.ndarray | None:
    """Per-pixel variance (e^2) of the nightly bias that preproc subtracted, from its header
    (BIASVARA-D over CCDSECA-D); None when no bias was subtracted."""
    if "CALVARID" not in hdr:
        return None
    out = np.zeros(shape)
    for amp in I.AMPS:
        if f"BIASVAR{amp}" in hdr:
            cy0, cy1, cx0, cx1 = I.parse_section(hdr[f"CCDSEC{amp}"])
            out[cy0:cy1, cx0:cx1] = float(hdr[f"BIASVAR{amp}"])
    return out


def coadd_variance(iv: np.ndarray, cv: np.ndarray, groups: list[str]) -> np.ndarray:
    """Variance of the inverse-variance weighted mean of exposures (axis 0).

    iv: each exposure's ivar (its CALVAR included as if independent); cv: each exposure's
    CALVAR; groups: each exposure's CALVARID (exposures with the same one share the noise,
    others do not; '' shares with nobody). With weights w_i = iv_i / sum(iv), the shared
    part adds its covariances: (sum_g w_i sqrt(cv_i))^2 - sum_g w_i^2 cv_i per group g.
    """
    wsum = iv.sum(0)
    wn = np.maximum(wsum, 1e-30)
    var = np.where(wsum > 0, 1.0 / wn, 0.0)
    w = iv / wn
    sd = np.sqrt(np.maximum(cv, 0.0)) * (iv > 0)
    for g in set(groups):
        if not g:
            continue
        idx = [i for i, k in enumerate(groups) if k == g]
        if len(idx) < 2:
            continue
        s = (w[idx] * sd[idx]).sum(0)
        var = var + s**2 - (w[idx] ** 2 * sd[idx] ** 2).sum(0)
    return var
