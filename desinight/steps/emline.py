"""[OII] flux at the fitted redshift, and DESI's per-class redshift-quality cuts in ZWARN.

A redshift that rests on one faint line can beat every other redshift by DELTACHI2 > 9 (redrock's
ZWARN threshold) from noise alone: the scan tries thousands of redshifts. DESI therefore selects
its large-scale-structure samples with cuts beyond ZWARN (``class_cut``), published with the
samples: BGS DELTACHI2 > 40 (Hahn et al. 2023, AJ 165, 253), LRG DELTACHI2 > 15 (Zhou et al.
2023, AJ 165, 58), and for ELGs the [OII] flux's S/N against DELTACHI2, log10(S/N) > 0.9 - 0.2
log10(DELTACHI2) (Raichoor et al. 2023, AJ 165, 126). The [OII] flux is measured at the fitted
redshift as DESI's emission-line afterburner (desispec.emlinefit) does: a Gaussian doublet of
one width on a local continuum, here a linear least-squares fit over a grid of widths.

The redshift step applies those cuts to the class each target was targeted as (the
fiberassign's TARGET_TYPE, known before any spectrum, as DESI_TARGET is) and records a failure in
ZWARN (``QUALITY_CUT``, a bit redrock reserves for afterburners), so that ZWARN == 0 alone
selects trusted redshifts. The thresholds are DESI's, not tuned on this project's simulations.
"""

from __future__ import annotations

import numpy as np

#: [OII] 3727.092, 3729.875 A (vacuum)
OII = (3727.092, 3729.875)
C_KMS = 299792.458
#: the fit's half window around the doublet (rest-frame A) and the intrinsic widths it tries
#: (7% apart: a width between two of them costs under 1% of a bright line's flux)
HALF_WINDOW = 40.0
WIDTHS_KMS = tuple(np.geomspace(20.0, 300.0, 40))


def oii_flux(cams: dict[str, tuple], z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(OII_FLUX, OII_FLUX_IVAR) of each target at its redshift z, in the spectra's flux units.

    cams: arm -> (wave (n,), flux (ntarg, n), ivar, lsfsigma (ntarg, n), Angstrom). A target whose
    doublet falls in no camera (or on too few good pixels) gets 0 and 0."""
    z = np.asarray(z, float)
    flux, ivar = np.zeros(z.size), np.zeros(z.size)
    for t in range(z.size):
        best = None
        for w, f, iv, sg in cams.values():
            fit = _fit_one(np.asarray(w, float), np.asarray(f[t], float),
                           np.asarray(iv[t], float), np.asarray(sg[t], float), z[t])
            if fit is not None and (best is None or fit[2] > best[2]):
                best = fit
        if best is not None:
            flux[t], ivar[t] = best[0], best[1]
    return flux, ivar


def _fit_one(w, f, iv, sg, z):
    """(flux, ivar, good pixels) of the doublet in one camera, or None where it does not fit."""
    lines = np.array(OII) * (1 + z)
    half = HALF_WINDOW * (1 + z)
    if not (w[0] + half / 2 < lines[0] and lines[1] < w[-1] - half / 2):
        return None
    win = (np.abs(w - lines.mean()) < half) & (iv > 0)
    if win.sum() < 20:
        return None
    w, f, iv, sg = w[win], f[win], iv[win], sg[win]
    sw = np.sqrt(iv)
    best = None
    for v in WIDTHS_KMS:
        cols = [np.ones_like(w), (w - lines.mean()) / half]
        for lo in lines:
            s = np.sqrt(sg**2 + (v / C_KMS * lo) ** 2)
            cols.append(np.exp(-0.5 * ((w - lo) / s) ** 2) / (np.sqrt(2 * np.pi) * s))
        a = np.array(cols).T * sw[:, None]
        m = a.T @ a
        try:
            cov = np.linalg.inv(m)
        except np.linalg.LinAlgError:
            continue
        coef = cov @ (a.T @ (f * sw))
        chi2 = float(np.sum((f * sw - a @ coef) ** 2))
        var = cov[2, 2] + cov[3, 3] + 2 * cov[2, 3]
        if var > 0 and (best is None or chi2 < best[0]):
            best = (chi2, coef[2] + coef[3], 1.0 / var)
    return None if best is None else (best[1], best[2], int(win.sum()))


#: the ZWARN bit set where a target fails its class's published cut (class_cut). Redrock sets
#: bits 0-11 and reserves 16-23 for an experiment's afterburners: ZWARN & REDROCK_BITS is
#: redrock's own verdict.
QUALITY_CUT = 2**16
REDROCK_BITS = 0xFFFF


def class_cut(cls: np.ndarray, deltachi2: np.ndarray, oii_flux: np.ndarray,
              oii_ivar: np.ndarray) -> np.ndarray:
    """True where a target passes DESI's published redshift-quality criterion of its target
    class: BGS DELTACHI2 > 40, LRG DELTACHI2 > 15, ELG log10(OII S/N) > 0.9 - 0.2
    log10(DELTACHI2); other classes (no published criterion beyond ZWARN) always pass."""
    cls = np.char.strip(np.asarray(cls).astype(str))
    dchi2 = np.maximum(np.asarray(deltachi2, float), 1e-30)
    snr = np.asarray(oii_flux, float) * np.sqrt(np.maximum(np.asarray(oii_ivar, float), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        elg = np.nan_to_num(np.log10(np.where(snr > 0, snr, np.nan))
                            > 0.9 - 0.2 * np.log10(dchi2), nan=0).astype(bool)
    return np.select([cls == "BGS", cls == "LRG", cls == "ELG"], [dchi2 > 40, dchi2 > 15, elg],
                     default=True)


def flag_quality(cls: np.ndarray, zwarn: np.ndarray, deltachi2: np.ndarray,
                 oii_flux: np.ndarray, oii_ivar: np.ndarray) -> np.ndarray:
    """ZWARN with QUALITY_CUT set where the target fails its class's cut (class_cut); redrock's
    bits are kept as they are, so ZWARN == 0 means: redrock found nothing wrong and the
    redshift passes the cut DESI selects that class's sample with."""
    bad = ~class_cut(cls, deltachi2, oii_flux, oii_ivar)
    return np.asarray(zwarn).astype(np.int64) | np.where(bad, QUALITY_CUT, 0)
