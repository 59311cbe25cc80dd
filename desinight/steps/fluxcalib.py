"""stdstars + fluxcalib: from electrons per Angstrom to 1e-17 erg/s/cm^2/A, per exposure and camera.

The design throughput (desinight.desimodel) gives a first calibration; the standard stars of the
tile measure how the real one departs from it, in colour as well as in grey:
1. each star's spectrum (all exposures and cameras, nominally calibrated) is fitted by redrock with
   DESI's stellar templates (types A, F, G, K; PCA coefficients and a radial velocity), each camera
   through its own resolution matrix;
2. the star's PCA coefficients are refitted with a free smooth polynomial per camera, so that
   its absorption lines (not the broadband shape, which carries the throughput error) fix them;
   the model is then matched to the star's catalogue fluxes through DECam filter curves
   (speclite): FLUX_R alone fixes the grey level; with FLUX_G and FLUX_Z too, a smooth colour
   factor (quadratic in ln lambda) fixes the colour as well;
3. per exposure and camera, observed / (nominal x scaled model), the median over stars, is fitted
   with a Legendre polynomial in wavelength (CHROMA_DEG; in b fitted red of STAR_MODEL_MIN,
   where the photometry pins the star model, and extrapolated): the chromatic correction. It
   needs the g, r and z fluxes: with FLUX_R alone it is one grey factor per exposure (from the
   r camera, applied to every camera), header CHROMA = F.
Why not chromatic from FLUX_R alone: the stars' colours would then come from the templates'
physics (lines -> type -> continuum); on the simulator's black-body standards that guess is off
by 2-5% per camera, and the resulting tilts and camera-to-camera jumps cost redshifts (seed 3 of
the small night: 93% good instead of 100%).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from numpy.polynomial import legendre as L

from desinight import desimodel as I

from . import io, rrfit

R_PIVOT = 6400.0     # A, where a catalogue r flux is turned into a flux density (tests)
STD_TYPES = ("A", "F", "G", "K")   # standard stars are F-type; neighbours allow for misfits
CHROMA_DEG = 3       # a throughput change is smooth within one camera
#: A, blue limit of the star model's use in the chromatic correction. The catalogue's g band
#: pins the model's colour only down to ~4000 A, and blue of ~4400 A a template's continuum
#: (Balmer jump, line blanketing) is its physics' guess: against the simulator's standards
#: DESI's templates are ~3% low at 4000-4400 A and 8-18% low at 3600-4000 A, and fitting that
#: made the b camera 10% low at 3600 A. The throughput change is smooth, so the b correction is
#: fitted on 4400-5950 A and extrapolated, as a quadratic (EXTRAP_DEG: a cubic's end wanders
#: with the ratio's ~1% wiggles; the simulator's true throughput change, fitted so, is within
#: 1.5% at 3600 A). Seeds 3-5, b: 0.4-0.8% r.m.s. over the full range (limit 4000 A: 0.8-1.9%).
STAR_MODEL_MIN = 4400.0
EXTRAP_DEG = 2
FILTER = "decam2014-r"
#: catalogue fluxes (nanomaggies) a standard star may carry, and their filter curves (speclite)
BANDS = {"FLUX_G": "decam2014-g", "FLUX_R": "decam2014-r", "FLUX_Z": "decam2014-z"}


def nmgy_to_flambda(flux_nmgy: np.ndarray, wave: float) -> np.ndarray:
    """AB nanomaggies -> f_lambda in 1e-17 erg/s/cm^2/A at `wave`."""
    fnu = np.asarray(flux_nmgy, float) * 3.631e-29
    return fnu * 2.99792458e18 / wave**2 / 1e-17


def model_calib(arm: str, wave: np.ndarray, exptime: float) -> np.ndarray:
    """Electrons per A per (1e-17 erg/s/cm^2/A) from the design throughput."""
    return 1e-17 * I.TEL_AREA_CM2 * exptime * wave / I.HC_ERG_A * I.throughput(wave, arm)


def r_maggies(wave: np.ndarray, flam: np.ndarray, filter_name: str = FILTER) -> float:
    """AB maggies through a filter (default DECam r) of a spectrum in 1e-17 erg/s/cm^2/A."""
    import astropy.units as u
    import speclite.filters

    filt = speclite.filters.load_filter(filter_name)
    # the curve's file runs 3330-10990 A (zero far from the band): pad with zeros to cover it
    f, w = filt.pad_spectrum(flam * 1e-17 * u.erg / (u.s * u.cm**2 * u.Angstrom),
                             wave * u.Angstrom, method="zero")
    return float(filt.get_ab_maggies(f, w))


def _read(path: Path) -> dict:
    flux, hdr = io.read_hdu(path, "FLUX")
    return {"flux": flux.astype(float), "ivar": io.read_hdu(path, "IVAR")[0].astype(float),
            "wave": io.read_hdu(path, "WAVELENGTH")[0].astype(float),
            "lsf": io.read_hdu(path, "LSFSIGMA")[0].astype(float),
            "exptime": float(hdr["EXPTIME"]), "expid": int(hdr["EXPID"])}


def _u(arm: str, wave: np.ndarray) -> np.ndarray:
    lo, hi = I.ARM_RANGES[arm]
    return 2 * (wave - lo) / (hi - lo) - 1


def photometric_factor(wave: np.ndarray, model: np.ndarray, phot: dict[str, float]):
    """A smooth factor sum_j a_j x^j (x = ln(lambda/6400), one term per catalogue band) that
    makes the model's synthetic fluxes equal the catalogue's: one band fixes the scale, two a
    colour, three a curvature. Synthetic flux is linear in the spectrum, so it is a small
    linear system."""
    x = np.log(wave / 6400.0)
    names = list(phot)
    A = np.array([[r_maggies(wave, model * x**j, BANDS[b]) for j in range(len(names))]
                  for b in names])
    a = np.linalg.solve(A, np.array([phot[b] * 1e-9 for b in names]))
    return lambda w: np.polyval(a[::-1], np.log(np.asarray(w) / 6400.0))


def fit_standards(frames: dict[int, dict[str, dict]], fibers: np.ndarray, tids, phot) -> list:
    """Per standard star: (fibre, TARGETID, subtype, z, coeff, factor) from redrock's stellar
    fit to the nominally calibrated, exposure-averaged spectra, its coefficients refitted on the
    lines, and the smooth factor that matches its catalogue fluxes (phot: one dict per star)."""
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
        one = {a: (w[k], f[k], i[k], s[k]) for a, (w, f, i, s) in cams.items()}
        coeff = line_driven_coeffs(tpl, float(res["Z"]), one, res["COEFF"][:tpl.nbasis])
        w = np.arange(3200.0, 10500.0, 1.0)      # inside the templates, around the filters
        factor = photometric_factor(w, tpl.eval(coeff, w, res["Z"]), phot[k])
        out.append((int(fib), int(tids[k]), str(res["SUBTYPE"]).strip(), float(res["Z"]),
                    coeff, tpl, factor))
    return out


def line_driven_coeffs(tpl, z: float, cams: dict, coeff0: np.ndarray, niter: int = 6):
    """The star's PCA coefficients from its absorption lines only: data = P_arm(lambda) x sum_k
    c_k B_k, with a free smooth polynomial P per camera (degree CHROMA_DEG), solved by turns.
    The data's broadband shape carries the throughput error, so it must not set the star's
    colour: the lines fix c, and through the templates' physics c fixes the continuum."""
    basis = {}
    for arm, (w, f, iv, sg) in cams.items():
        R = rrfit.resolution_matrix(w, sg)
        basis[arm] = np.array([tpl.eval(np.eye(tpl.nbasis)[j], w, z, R) for j in range(tpl.nbasis)])
    c = np.asarray(coeff0, float)
    for _ in range(niter):
        poly = {}
        for arm, (w, f, iv, sg) in cams.items():
            m = c @ basis[arm]
            ok = (iv > 0) & (np.abs(m) > 1e-6 * np.abs(m).max())
            u = _u(arm, w)
            p = L.legfit(u[ok], f[ok] / m[ok], CHROMA_DEG, w=np.sqrt(iv[ok]) * np.abs(m[ok]))
            poly[arm] = L.legval(u, p)
        A = np.concatenate([(poly[a] * basis[a]).T * np.sqrt(cams[a][2])[:, None] for a in cams])
        b = np.concatenate([cams[a][1] * np.sqrt(cams[a][2]) for a in cams])
        c = np.linalg.lstsq(A, b, rcond=None)[0]
    return c


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
    bands = [b for b in BANDS if b in std.dtype.names]
    if "FLUX_R" not in bands:
        raise ValueError(f"spectrograph {spectro}: the standard stars have no FLUX_R")
    phot = [{b: float(row[b]) for b in bands} for row in std]
    stars = fit_standards(frames, fibers, std["TARGETID"], phot)
    expids = sorted(frames)
    arms = sorted({a for fr in frames.values() for a in fr}, key="brz".index)
    # Colour needs colours: with FLUX_R alone the stars' colours would be the templates' guess,
    # and a wrong guess becomes a tilt and camera-to-camera jumps in every spectrum; then only
    # one grey factor per exposure (from the r camera) is measured and applied to all cameras.
    chromatic = len(bands) == len(BANDS) or "r" not in arms
    base_deg = CHROMA_DEG if chromatic else 0
    hdus = []
    for arm in (arms if chromatic else ["r"]):
        # a camera reaching blue of STAR_MODEL_MIN is extrapolated there: a quadratic at most
        cut = STAR_MODEL_MIN > I.ARM_RANGES[arm][0]
        deg = min(base_deg, EXTRAP_DEG) if cut else base_deg
        coefs = np.zeros((len(expids), CHROMA_DEG + 1))
        for j, e in enumerate(expids):
            if arm not in frames[e]:
                coefs[j, 0] = 1.0          # no such camera in this exposure: never used
                continue
            d = frames[e][arm]
            grid = d["wave"][nfib // 2]
            ratios, weights = [], []
            for fib, _, _, z, coeff, tpl, factor in stars:
                R = rrfit.resolution_matrix(d["wave"][fib], d["lsf"][fib])
                model = tpl.eval(coeff, d["wave"][fib], z, R) * factor(d["wave"][fib]) * \
                    model_calib(arm, d["wave"][fib], d["exptime"])
                ok = (d["ivar"][fib] > 0) & (model > 0)
                ratios.append(np.interp(grid, d["wave"][fib], np.where(ok, d["flux"][fib] /
                                        np.where(ok, model, 1), np.nan)))
                weights.append(np.interp(grid, d["wave"][fib], np.where(ok, d["ivar"][fib] * model**2, 0)))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)    # all-NaN columns at the edges
                rat = np.nanmedian(np.array(ratios), axis=0)
            wt = np.sum(weights, axis=0)
            # the star model is trusted only where the photometry pins it (see STAR_MODEL_MIN)
            good = np.isfinite(rat) & (wt > 0) & (grid >= STAR_MODEL_MIN)
            if good.sum() < 10 * (CHROMA_DEG + 1):
                raise ValueError(f"spectrograph {spectro} exposure {e} {arm}: too few good pixels")
            u = _u(arm, grid[good])
            c = L.legfit(u, rat[good], deg, w=np.sqrt(wt[good]))
            resid = rat[good] - L.legval(u, c)     # one clipping pass: residual sky, bad lines
            mad = 1.4826 * np.median(np.abs(resid)) + 1e-12
            keep = np.abs(resid) < 4 * mad
            coefs[j, :deg + 1] = L.legfit(u[keep], rat[good][keep], deg, w=np.sqrt(wt[good][keep]))
        hdus.append((f"{arm.upper()}_CORR", coefs, [{"name": "DEG", "value": deg}]))
    if not chromatic:           # the r camera's grey factor, for every camera
        hdus = [(f"{a.upper()}_CORR", hdus[0][1], hdus[0][2]) for a in arms]
    table = np.array([(f, t, st, z) for f, t, st, z, *_ in stars],
                     dtype=[("FIBER", "i4"), ("TARGETID", "i8"), ("SUBTYPE", "U4"), ("Z", "f8")])
    cards = [{"name": "NSTD", "value": len(stars)}, {"name": "CHROMA", "value": bool(chromatic)},
             {"name": "BANDS", "value": ",".join(b[-1] for b in bands)}]
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


def resample(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, grid: np.ndarray,
             cvar: np.ndarray):
    """Linear interpolation of each fibre onto grid, propagating the variance and its CALVAR
    part (steps/calvar.py): (flux, ivar, cvar) on the grid."""
    nf = flux.shape[0]
    out_f = np.zeros((nf, grid.size), np.float32)
    out_i = np.zeros((nf, grid.size), np.float32)
    out_c = np.zeros((nf, grid.size), np.float32)
    for f in range(nf):
        w = wave[f]
        j = np.clip(np.searchsorted(w, grid) - 1, 0, w.size - 2)
        t = (grid - w[j]) / (w[j + 1] - w[j])
        ok = (t >= 0) & (t <= 1) & (ivar[f, j] > 0) & (ivar[f, j + 1] > 0)
        v = (1 - t) ** 2 / np.maximum(ivar[f, j], 1e-30) + t**2 / np.maximum(ivar[f, j + 1], 1e-30)
        out_f[f] = np.where(ok, (1 - t) * flux[f, j] + t * flux[f, j + 1], 0.0)
        out_i[f] = np.where(ok, 1.0 / v, 0.0)
        out_c[f] = np.where(ok, (1 - t) ** 2 * cvar[f, j] + t**2 * cvar[f, j + 1], 0.0)
    return out_f, out_i, out_c


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
    cf, ci, cc = resample(wave, flux / cal, ivar * cal**2, grid,
                          io.read_calvar(sframe, flux.shape) / cal**2)
    lsf = resample_lsf(wave, io.read_hdu(sframe, "LSFSIGMA")[0], grid)
    cards = [{"name": k, "value": hdr[k]} for k in ("EXPID", "NIGHT", "TILEID", "EXPTIME",
                                                    "CALVARID") if k in hdr]
    cards += [{"name": "CAMERA", "value": cam}, {"name": "BUNIT", "value": "1e-17 erg/(s cm2 Angstrom)"}]
    cards += io.provenance("fluxcalib", [sframe, stdstars])
    return io.write_fits(cframe_out, [("FLUX", cf, cards), ("IVAR", ci, None),
                                      ("MASK", (ci == 0).astype(np.int16), None),
                                      ("WAVELENGTH", grid, None),
                                      ("LSFSIGMA", lsf.astype(np.float32), None),
                                      ("CALVAR", cc, None)])


def _nx_for(nfib: int, ny: int) -> int:
    for p in I.PRESETS.values():
        if p.nfiber == nfib and p.ny == ny:
            return p.nx
    raise ValueError(f"no preset with {nfib} fibres and {ny} rows")
