"""stdstars + fluxcalib: from electrons per Angstrom to 1e-17 erg/s/cm^2/A, per exposure and camera.

The design throughput (desinight.desimodel) gives a first calibration; the standard stars of the
tile measure how the real one departs from it, in colour as well as in grey:
1. each star's spectrum (all exposures and cameras, nominally calibrated) is fitted by redrock with
   DESI's stellar templates (types A, F, G, K; PCA coefficients and a radial velocity), each camera
   through its own resolution matrix;
2. the fitted model is scaled to the star's catalogue r flux through the DECam r filter curve
   (speclite), which fixes the grey level the nominal calibration cannot know;
3. per exposure and camera, observed / (nominal x scaled model), the median over stars, is fitted
   with a Legendre polynomial in wavelength (CHROMA_DEG): the chromatic correction.
A star's template fit has freedom of its own (PCA shape), so the part of a throughput change that
looks like a change of stellar colour is shared between the star and the correction; with one
catalogue band that degeneracy is broken only by the templates' physics (their absorption lines
pin the type).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.polynomial import legendre as L

from desinight import desimodel as I

from . import io, rrfit

R_PIVOT = 6400.0     # A, where a catalogue r flux is turned into a flux density (tests)
STD_TYPES = ("A", "F", "G", "K")   # standard stars are F-type; neighbours allow for misfits
CHROMA_DEG = 3       # a throughput change is smooth within one camera
FILTER = "decam2014-r"


def nmgy_to_flambda(flux_nmgy: np.ndarray, wave: float) -> np.ndarray:
    """AB nanomaggies -> f_lambda in 1e-17 erg/s/cm^2/A at `wave`."""
    fnu = np.asarray(flux_nmgy, float) * 3.631e-29
    return fnu * 2.99792458e18 / wave**2 / 1e-17


def model_calib(arm: str, wave: np.ndarray, exptime: float) -> np.ndarray:
    """Electrons per A per (1e-17 erg/s/cm^2/A) from the design throughput."""
    return 1e-17 * I.TEL_AREA_CM2 * exptime * wave / I.HC_ERG_A * I.throughput(wave, arm)


def r_maggies(wave: np.ndarray, flam: np.ndarray) -> float:
    """AB maggies through the r filter of a spectrum in 1e-17 erg/s/cm^2/A."""
    import astropy.units as u
    import speclite.filters

    filt = speclite.filters.load_filter(FILTER)
    return float(filt.get_ab_maggies(flam * 1e-17 * u.erg / (u.s * u.cm**2 * u.Angstrom),
                                     wave * u.Angstrom))


def _read(path: Path) -> dict:
    flux, hdr = io.read_hdu(path, "FLUX")
    return {"flux": flux.astype(float), "ivar": io.read_hdu(path, "IVAR")[0].astype(float),
            "wave": io.read_hdu(path, "WAVELENGTH")[0].astype(float),
            "lsf": io.read_hdu(path, "LSFSIGMA")[0].astype(float),
            "exptime": float(hdr["EXPTIME"]), "expid": int(hdr["EXPID"])}


def _u(arm: str, wave: np.ndarray) -> np.ndarray:
    lo, hi = I.ARM_RANGES[arm]
    return 2 * (wave - lo) / (hi - lo) - 1


def fit_standards(frames: dict[int, dict[str, dict]], fibers: np.ndarray, tids, fluxr) -> list:
    """Per standard star: (fibre, TARGETID, subtype, z, coeff, r scale) from redrock's stellar
    fit to the nominally calibrated, exposure-averaged spectra."""
    arms = sorted({a for fr in frames.values() for a in fr}, key="brz".index)
    cams = {}
    for arm in arms:
        num = den = 0.0
        for fr in (fr for fr in frames.values() if arm in fr):
            d = fr[arm]
            cal = model_calib(arm, d["wave"][fibers], d["exptime"])
            iv = d["ivar"][fibers] * cal**2
            num = num + d["flux"][fibers] / cal * iv
            den = den + iv
        d0 = next(fr[arm] for fr in frames.values() if arm in fr)
        # each star keeps its fibre's own wavelength grid (no resampling): redrock rebins the
        # templates onto each of them
        cams[arm] = (d0["wave"][fibers], np.where(den > 0, num / np.maximum(den, 1e-30), 0.0),
                     den, d0["lsf"][fibers])
    fits = rrfit.fit([int(t) for t in tids], cams, files=rrfit.star_files(STD_TYPES))
    out = []
    for k, fib in enumerate(fibers):
        res = fits[k]
        tpl = rrfit.load_template("STAR", str(res["SUBTYPE"]).strip())
        coeff = res["COEFF"][:tpl.nbasis]
        w = np.arange(3000.0, 11000.0, 1.0)
        scale = float(fluxr[k]) * 1e-9 / max(r_maggies(w, tpl.eval(coeff, w, res["Z"])), 1e-30)
        out.append((int(fib), int(tids[k]), str(res["SUBTYPE"]).strip(), float(res["Z"]),
                    coeff * scale, tpl))
    return out


def stdstars_calib(sframes: dict[int, dict[str, Path]], fa: np.ndarray, spectro: int,
                   out: Path) -> Path:
    """Chromatic calibration of one spectrograph: per exposure and arm, the Legendre coefficients
    of observed / (nominal x standard-star model). sframes: expid -> arm -> sframe."""
    frames = {e: {a: _read(p) for a, p in fr.items()} for e, fr in sframes.items() if fr}
    if not frames:
        raise FileNotFoundError(f"spectrograph {spectro}: no sframes")
    first = next(iter(frames.values()))
    nfib = next(iter(first.values()))["flux"].shape[0]
    sel = (fa["FIBER"] // nfib == spectro) & (np.char.strip(fa["TARGET_TYPE"].astype(str)) == "STD")
    std = fa[sel]
    if len(std) < 2:
        raise ValueError(f"spectrograph {spectro}: {len(std)} standard stars")
    fibers = (std["FIBER"] % nfib).astype(int)
    stars = fit_standards(frames, fibers, std["TARGETID"], std["FLUX_R"])
    expids = sorted(frames)
    arms = sorted({a for fr in frames.values() for a in fr}, key="brz".index)
    hdus = []
    for arm in arms:
        coefs = np.zeros((len(expids), CHROMA_DEG + 1))
        for j, e in enumerate(expids):
            if arm not in frames[e]:
                coefs[j, 0] = 1.0          # no such camera in this exposure: never used
                continue
            d = frames[e][arm]
            grid = d["wave"][nfib // 2]
            ratios, weights = [], []
            for fib, _, _, z, coeff, tpl in stars:
                R = rrfit.resolution_matrix(d["wave"][fib], d["lsf"][fib])
                model = tpl.eval(coeff, d["wave"][fib], z, R) * \
                    model_calib(arm, d["wave"][fib], d["exptime"])
                ok = (d["ivar"][fib] > 0) & (model > 0)
                ratios.append(np.interp(grid, d["wave"][fib], np.where(ok, d["flux"][fib] /
                                        np.where(ok, model, 1), np.nan)))
                weights.append(np.interp(grid, d["wave"][fib], np.where(ok, d["ivar"][fib] * model**2, 0)))
            rat = np.nanmedian(np.array(ratios), axis=0)
            wt = np.sum(weights, axis=0)
            good = np.isfinite(rat) & (wt > 0)
            if good.sum() < 10 * (CHROMA_DEG + 1):
                raise ValueError(f"spectrograph {spectro} exposure {e} {arm}: too few good pixels")
            u = _u(arm, grid[good])
            c = L.legfit(u, rat[good], CHROMA_DEG, w=np.sqrt(wt[good]))
            resid = rat[good] - L.legval(u, c)     # one clipping pass: residual sky, bad lines
            mad = 1.4826 * np.median(np.abs(resid)) + 1e-12
            keep = np.abs(resid) < 4 * mad
            coefs[j] = L.legfit(u[keep], rat[good][keep], CHROMA_DEG, w=np.sqrt(wt[good][keep]))
        hdus.append((f"{arm.upper()}_CORR", coefs, [{"name": "DEG", "value": CHROMA_DEG}]))
    table = np.array([(f, t, st, z) for f, t, st, z, _, _ in stars],
                     dtype=[("FIBER", "i4"), ("TARGETID", "i8"), ("SUBTYPE", "U4"), ("Z", "f8")])
    cards = [{"name": "NSTD", "value": len(stars)}, {"name": "FILTER", "value": FILTER}]
    cards += io.provenance("stdstars", [p for fr in sframes.values() for p in fr.values()])
    return io.write_fits(out, [("STDSTARS", table, cards),
                               ("EXPIDS", np.array(expids, np.int64), None)] + hdus)


def correction(stdstars: Path, expid: int, arm: str, wave: np.ndarray) -> np.ndarray:
    """The chromatic correction to the nominal calibration of one exposure's camera at wave."""
    expids = list(io.read_hdu(stdstars, "EXPIDS")[0])
    if expid not in expids:
        raise ValueError(f"exposure {expid} has no calibration in {Path(stdstars).name}")
    c = io.read_hdu(stdstars, f"{arm.upper()}_CORR")[0][expids.index(expid)]
    return L.legval(_u(arm, wave), c)


def resample(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, grid: np.ndarray):
    """Linear interpolation of each fibre onto grid, propagating the variance."""
    nf = flux.shape[0]
    out_f = np.zeros((nf, grid.size), np.float32)
    out_i = np.zeros((nf, grid.size), np.float32)
    for f in range(nf):
        w = wave[f]
        j = np.clip(np.searchsorted(w, grid) - 1, 0, w.size - 2)
        t = (grid - w[j]) / (w[j + 1] - w[j])
        ok = (t >= 0) & (t <= 1) & (ivar[f, j] > 0) & (ivar[f, j + 1] > 0)
        v = (1 - t) ** 2 / np.maximum(ivar[f, j], 1e-30) + t**2 / np.maximum(ivar[f, j + 1], 1e-30)
        out_f[f] = np.where(ok, (1 - t) * flux[f, j] + t * flux[f, j + 1], 0.0)
        out_i[f] = np.where(ok, 1.0 / v, 0.0)
    return out_f, out_i


def resample_lsf(wave: np.ndarray, lsf: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """LSF sigma (A) of each fibre on ``grid``. Linear interpolation between two rows j, j+1 at
    fraction t is itself a 2-point kernel of variance t(1-t) row^2: it is added in quadrature."""
    out = np.empty((lsf.shape[0], grid.size))
    for f in range(lsf.shape[0]):
        w = wave[f]
        j = np.clip(np.searchsorted(w, grid) - 1, 0, w.size - 2)
        step = w[j + 1] - w[j]
        t = np.clip((grid - w[j]) / step, 0, 1)
        out[f] = np.sqrt(np.interp(grid, w, lsf[f]) ** 2 + t * (1 - t) * step**2)
    return out


def fluxcalib_camera(sframe: Path, stdstars: Path, cam: str, calib_out: Path, cframe_out: Path):
    flux, hdr = io.read_hdu(sframe, "FLUX")
    ivar = io.read_hdu(sframe, "IVAR")[0]
    wave = io.read_hdu(sframe, "WAVELENGTH")[0]
    cal = model_calib(cam[0], wave, float(hdr["EXPTIME"])) * \
        correction(stdstars, int(hdr["EXPID"]), cam[0], wave)
    io.write_fits(calib_out, [("CALIB", cal.astype(np.float32),
                               io.provenance("fluxcalib", [sframe, stdstars])),
                              ("WAVELENGTH", wave, None)])
    nfib, ny = flux.shape
    grid = I.camera_wave_grid(I.preset_for_shape(ny, _nx_for(nfib, ny)), cam[0])
    cf, ci = resample(wave, flux / cal, ivar * cal**2, grid)
    lsf = resample_lsf(wave, io.read_hdu(sframe, "LSFSIGMA")[0], grid)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "1e-17 erg/(s cm2 Angstrom)"}]
    cards += io.provenance("fluxcalib", [sframe, stdstars])
    return io.write_fits(cframe_out, [("FLUX", cf, cards), ("IVAR", ci, None),
                                      ("MASK", (ci == 0).astype(np.int16), None),
                                      ("WAVELENGTH", grid, None),
                                      ("LSFSIGMA", lsf.astype(np.float32), None)])


def _nx_for(nfib: int, ny: int) -> int:
    for p in I.PRESETS.values():
        if p.nfiber == nfib and p.ny == ny:
            return p.nx
    raise ValueError(f"no preset with {nfib} fibres and {ny} rows")
