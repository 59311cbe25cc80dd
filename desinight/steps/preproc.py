"""preproc: raw ADU -> calibrated electrons image with inverse variance and mask; nightly bias.

Per amplifier (sections from the camera header): subtract the overscan level and measure the
read noise there (a clipped mean and r.m.s.), multiply by the gain; then subtract the nightly
bias (the fixed 2-D bias pattern the overscan cannot see) and, when the night has a measured
dark (darknight, e-/s per pixel), the dark current; flag saturated pixels and cosmic rays.
Without a measured dark the dark current stays in the image (no design value is assumed): it is
smooth and additive, so the sky fit removes it with the sky, and its shot noise is in the
variance through the signal term.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from desinight import desimodel as I

from . import io

MASK_SATURATED = 1
MASK_COSMIC = 2
MASK_BADIVAR = 4
#: A pixel is a cosmic hit when it beats both pairs of neighbours by this ratio: a real trace or
#: line (Gaussian PSF, sigma ~1 pixel) never exceeds about 1.8x its neighbours' mean.
COSMIC_SHARPNESS = 2.5
COSMIC_NSIGMA = 6.0


def read_raw(raw: Path, cam: str) -> tuple[np.ndarray, dict, dict]:
    """(raw image, camera header, primary header) of one camera."""
    import fitsio

    with io.reading(raw), fitsio.FITS(str(raw)) as f:
        prim = dict(f[0].read_header())
        hdu = f[cam.upper()]
        return hdu.read().astype(np.float32), dict(hdu.read_header()), prim


def overscan_correct(raw: np.ndarray, hdr: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(electrons image, read-noise image (e), saturated mask) in trimmed CCD coordinates."""
    ny, nx = (int(v) for v in str(hdr["CCDSIZE"]).split(","))
    img = np.zeros((ny, nx), np.float32)
    rdn = np.zeros((ny, nx), np.float32)
    sat = np.zeros((ny, nx), bool)
    for amp in I.AMPS:
        dy0, dy1, dx0, dx1 = I.parse_section(hdr[f"DATASEC{amp}"])
        by0, by1, bx0, bx1 = I.parse_section(hdr[f"BIASSEC{amp}"])
        cy0, cy1, cx0, cx1 = I.parse_section(hdr[f"CCDSEC{amp}"])
        # One level per amp: the bias level is flat along the amp, and a per-row median would
        # add correlated noise of ~rn/sqrt(32) to every row.
        level, rn_adu = overscan_level_noise(raw[by0:by1, bx0:bx1])
        gain = float(hdr[f"GAIN{amp}"])
        data = raw[dy0:dy1, dx0:dx1]
        img[cy0:cy1, cx0:cx1] = (data - level) * gain
        rdn[cy0:cy1, cx0:cx1] = rn_adu * gain
        sat[cy0:cy1, cx0:cx1] = data >= float(hdr.get("SATURATE", I.SATURATION_ADU))
    return img, rdn, sat


def overscan_level_noise(over: np.ndarray) -> tuple[float, float]:
    """(level, read noise) of one amplifier's overscan, in ADU: the mean and standard deviation
    of the pixels within 5 sigma of the median.

    Raw pixels are integers and the read noise is 1.5-3.5 ADU, so the median and the MAD are
    quantised: 1.4826 x MAD read noises 20-40% off per amplifier, and the extracted pulls of
    a camera swung from 0.8 to 1.5 between its halves. Here the MAD only sets the clip. The
    standard deviation keeps the rounding's 1/12 ADU^2, which every data pixel carries too."""
    x = np.asarray(over, np.float64).ravel()
    med = float(np.median(x))
    clip = 5.0 * max(1.4826 * float(np.median(np.abs(x - med))), 1.0)
    keep = x[np.abs(x - med) < clip]
    return float(keep.mean()), float(keep.std())


def find_cosmics(img: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Pixels much sharper than the PSF allows, dilated by one pixel."""
    pad = np.pad(img, 1, mode="edge")
    xn = 0.5 * (pad[1:-1, :-2] + pad[1:-1, 2:])
    yn = 0.5 * (pad[:-2, 1:-1] + pad[2:, 1:-1])
    sig = np.sqrt(np.maximum(var, 1e-6))
    excess = img - COSMIC_NSIGMA * sig
    hit = (excess > COSMIC_SHARPNESS * np.maximum(xn, 0)) & \
          (excess > COSMIC_SHARPNESS * np.maximum(yn, 0)) & (img > COSMIC_NSIGMA * sig)
    if hit.any():
        h = np.pad(hit, 1)
        hit = h[1:-1, 1:-1] | h[:-2, 1:-1] | h[2:, 1:-1] | h[1:-1, :-2] | h[1:-1, 2:]
    return hit


def preproc_camera(raw: Path, cam: str, bias: Path | None, out: Path,
                   dark: Path | None = None, bad_amps: Sequence[str] = ()) -> Path:
    """dark: a measured dark (e-/s per pixel) to subtract; bad_amps: amplifiers (A-D) an
    operator marked bad: their quadrant gets zero ivar."""
    data, hdr, prim = read_raw(raw, cam)
    img, rdn, sat = overscan_correct(data, hdr)
    var_bias = np.zeros_like(img)
    inputs = [raw]
    if bias is not None:
        b, bh = io.read_hdu(bias, "IMAGE")
        img -= b
        var_bias = rdn**2 * bias_noise_factor(int(bh.get("NZERO", 1)))
        inputs.append(bias)
    exptime = float(prim.get("EXPTIME", 0.0))
    dark_e = np.zeros_like(img)
    if dark is not None:
        dark_e = io.read_hdu(dark, "IMAGE")[0].astype(np.float32) * exptime
        img -= dark_e
        inputs.append(dark)
    # Variance from the signal model, not from noisy pixel values where it matters least:
    # shot noise of the (non-negative) signal and dark + read noise + the bias's own noise.
    var = rdn**2 + np.maximum(img + dark_e, 0) + var_bias
    mask = np.zeros(img.shape, np.int16)
    mask[sat] |= MASK_SATURATED
    mask[find_cosmics(img, var)] |= MASK_COSMIC
    for amp in bad_amps:
        cy0, cy1, cx0, cx1 = I.parse_section(hdr[f"CCDSEC{amp}"])
        mask[cy0:cy1, cx0:cx1] |= MASK_BADIVAR
    ivar = np.where(mask == 0, 1.0 / var, 0.0).astype(np.float32)
    keep = {k: prim[k] for k in ("EXPID", "NIGHT", "OBSTYPE", "TILEID", "EXPTIME", "PROGRAM",
                                 "MJD-OBS", "SEQNUM", "SEQTOT") if k in prim}
    hcards = [{"name": k, "value": v} for k, v in keep.items()]
    hcards += [{"name": "CAMERA", "value": cam}, {"name": "CCDSIZE", "value": hdr["CCDSIZE"]},
               {"name": "PRESET", "value": hdr.get("PRESET", "")}]
    if bias is not None:
        # the bias's noise is the same in every exposure it corrects: extraction carries it as
        # CALVAR, and the coadd counts it once instead of averaging it down (steps/calvar.py)
        hcards += [{"name": "CALVARID", "value": Path(bias).name[:68],
                    "comment": "exposures sharing it share CALVAR's noise"}]
        for amp in I.AMPS:
            cy0, cy1, cx0, cx1 = I.parse_section(hdr[f"CCDSEC{amp}"])
            hcards += [{"name": f"CCDSEC{amp}", "value": hdr[f"CCDSEC{amp}"]},
                       {"name": f"BIASVAR{amp}", "value": float(var_bias[cy0, cx0]),
                        "comment": "e2 per pixel: the nightly bias's noise"}]
    hcards += io.provenance("preproc", inputs)
    return io.write_fits(out, [("IMAGE", img.astype(np.float32), hcards),
                               ("IVAR", ivar, None), ("MASK", mask, None)])


def bias_noise_factor(nzero: int) -> float:
    """Variance of the nightly bias (the median of nzero zeros) in units of one zero's read-noise
    variance: one zero is itself, two are their mean; the median of more tends to pi/(2 N),
    closer for few zeros as pi/(2N + 1) (odd N) and pi/(2N + 2.5) (even N, the mean of the
    middle two): within 1% of Gaussian draws from N = 3 on (tests/test_science_fixes.py)."""
    n = max(int(nzero), 1)
    if n <= 2:
        return 1.0 / n
    return np.pi / (2 * n + (1.0 if n % 2 else 2.5))


def biasnight_camera(raws: list[Path], cam: str, out: Path) -> Path:
    """Median of the overscan-corrected zeros: the fixed bias pattern, in electrons."""
    stack = []
    for r in raws:
        data, hdr, _ = read_raw(r, cam)
        stack.append(overscan_correct(data, hdr)[0])
    if not stack:
        raise ValueError(f"no zero exposures for {cam}")
    bias = np.median(np.array(stack), axis=0).astype(np.float32)
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NZERO", "value": len(stack)}]
    cards += io.provenance("biasnight", raws)
    return io.write_fits(out, [("IMAGE", bias, cards)])


def darknight_camera(raws: list[Path], cam: str, bias: Path | None, out: Path) -> Path:
    """Median of the bias-subtracted darks, each divided by its exposure time: the dark
    current in e-/s per pixel (hot pixels, hot columns). The median over three or more darks
    drops the cosmic rays; one dark keeps them."""
    b = io.read_hdu(bias, "IMAGE")[0] if bias is not None else None
    stack = []
    for r in raws:
        data, hdr, prim = read_raw(r, cam)
        exptime = float(prim.get("EXPTIME", 0.0))
        if exptime <= 0:
            raise ValueError(f"{r.name}: a dark needs EXPTIME > 0 (got {exptime})")
        img = overscan_correct(data, hdr)[0]
        stack.append(((img - b) if b is not None else img) / exptime)
    if not stack:
        raise ValueError(f"no dark exposures for {cam}")
    dark = np.median(np.array(stack), axis=0).astype(np.float32)
    cards = [{"name": "CAMERA", "value": cam}, {"name": "NDARK", "value": len(stack)},
             {"name": "BUNIT", "value": "electron/s"}]
    cards += io.provenance("darknight", raws + ([bias] if bias is not None else []))
    return io.write_fits(out, [("IMAGE", dark, cards)])
