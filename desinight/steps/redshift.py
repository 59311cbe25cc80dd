"""coadd + redshift: per tile and spectrograph, combine exposures, then fit with redrock.

Coadd: inverse-variance mean of the cframes of each arm (they share the camera's wavelength
grid), cosmic rays left by preproc rejected against the other exposures, its variance counting
the noise that exposures reduced with the same nightly bias share (steps/calvar.py), written per arm like
DESI's coadds, with each fibre's line-spread width ({ARM}_LSFSIGMA, Angstrom: the
ivar-weighted r.m.s. of the exposures'). Redshift: redrock (steps/rrfit.py) with
DESI's templates fits each target's three arms at once, each on its own grid with its own
resolution matrix; no common-grid resampling, which would blur the spectra a second time and
correlate neighbouring pixels that the fit treats as independent.

The REDSHIFTS table is redrock's: TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE, DELTACHI2, CHI2,
COEFF, NPIXELS; and FIBER, OII_FLUX, OII_FLUX_IVAR (the [OII] doublet at Z, steps/emline.py,
as DESI's emission-line afterburner adds). ZWARN keeps redrock's bits and gains bit 16 where a
target fails DESI's published cut for the class it was targeted as (emline.flag_quality). With
an MPI communicator the targets are spread over its ranks.

Both files carry an EXPOSURES table (NIGHT, EXPID): the exposures whose cframes went into the
coadd, so a per-night and a cumulative result say what they were made of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import calvar, emline, io, rrfit


def coadd(cframes: dict[str, list[Path]]) -> dict[str, tuple]:
    """arm -> (wave, flux (nfib, n), ivar, lsfsigma) inverse-variance mean over exposures."""
    out = {}
    for arm, files in cframes.items():
        if not files:
            continue
        fh = [io.read_hdu(f, "FLUX") for f in files]
        fl = np.array([d for d, _ in fh], float)
        iv = np.array([io.read_hdu(f, "IVAR")[0] for f in files], float)
        sg = np.array([io.read_hdu(f, "LSFSIGMA")[0] for f in files], float)
        cv = np.array([io.read_calvar(f, fl.shape[1:]) for f in files])
        groups = [str(h.get("CALVARID", "")) for _, h in fh]
        iv = iv * ~cosmic_outliers(fl, iv)
        wsum = iv.sum(0)
        wn = np.maximum(wsum, 1e-30)
        lsf = np.where(wsum > 0, np.sqrt((sg**2 * iv).sum(0) / wn), np.sqrt((sg**2).mean(0)))
        var = calvar.coadd_variance(iv, cv, groups)
        out[arm] = (io.read_hdu(files[0], "WAVELENGTH")[0],
                    np.where(wsum > 0, (fl * iv).sum(0) / wn, 0.0),
                    np.where(wsum > 0, 1.0 / np.maximum(var, 1e-30), 0.0), lsf)
    return out


#: an exposure's pixel this many sigma above the other exposures' mean is a cosmic ray left by
#: preproc (as DESI's coadd: nsig 4-5); its neighbours go too when above NSIG_GROW
NSIG_COSMIC, NSIG_GROW = 5.0, 2.5


def cosmic_outliers(fl: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """Mask (nexp, nfib, n) of pixels brighter than the other exposures' mean by NSIG_COSMIC:
    one cosmic ray that survives preproc is a 'line' with a chi2 gain of tens, which redrock
    fits as a confident wrong redshift (seed 3: ~1.5 per fibre and arm). Only excesses count
    (a cosmic adds charge), so with two exposures the one that deviates upwards goes."""
    nexp = fl.shape[0]
    if nexp < 2:
        return np.zeros(fl.shape, bool)
    wsum, fsum = iv.sum(0), (fl * iv).sum(0)
    w_oth = wsum[None] - iv
    m_oth = np.where(w_oth > 0, (fsum[None] - fl * iv) / np.maximum(w_oth, 1e-30), 0.0)
    var = np.where(iv > 0, 1 / np.maximum(iv, 1e-30), np.inf) + \
        np.where(w_oth > 0, 1 / np.maximum(w_oth, 1e-30), np.inf)
    chi = np.where((iv > 0) & (w_oth > 0), (fl - m_oth) / np.sqrt(var), 0.0)
    bad = chi > NSIG_COSMIC
    grow = np.zeros_like(bad)
    grow[..., 1:] |= bad[..., :-1]
    grow[..., :-1] |= bad[..., 1:]
    return bad | (grow & (chi > NSIG_GROW))


def cumulative_path(prefix: str, tileid: int, night: int, spectro: int) -> Path:
    """tiles/cumulative/TILEID/NIGHT/PREFIX-SPECTRO-TILEID-thruNIGHT.fits (DESI's layout)."""
    from desinight.core.kinds import CUMULATIVE_DIR
    return (io.redux_dir() / CUMULATIVE_DIR.format(tileid=tileid, night=night)
            / f"{prefix}-{spectro}-{tileid}-thru{night}.fits")


def exposure_table(inputs: list[Path]) -> np.ndarray:
    """(NIGHT, EXPID) of the cframes exposures/NIGHT/EXPID/cframe-*.fits, sorted, once each."""
    pairs = sorted({(int(p.parent.parent.name), int(p.parent.name)) for p in map(Path, inputs)})
    return np.array(pairs, dtype=[("NIGHT", "i4"), ("EXPID", "i4")])


def write_coadd(co: dict, fam: np.ndarray, inputs: list[Path], out: Path) -> Path:
    hdus = [("FIBERMAP", fam, io.provenance("coadd", inputs))]
    for arm, (w, f, i, s) in co.items():
        a = arm.upper()
        hdus += [(f"{a}_WAVELENGTH", w, None), (f"{a}_FLUX", f.astype(np.float32), None),
                 (f"{a}_IVAR", i.astype(np.float32), None),
                 (f"{a}_MASK", (i <= 0).astype(np.int16), None),
                 (f"{a}_LSFSIGMA", s.astype(np.float32), None)]
    hdus.append(("EXPOSURES", exposure_table(inputs), None))
    return io.write_fits(out, hdus)


def redshift_spectrograph(cframes: dict[str, list[Path]], fa: np.ndarray, spectro: int,
                          coadd_out: Path, redrock_out: Path, comm=None) -> Path:
    """Coadd (rank 0) and fit (every rank of ``comm``); rank 0 writes both files."""
    rank = 0 if comm is None else comm.Get_rank()
    payload, err = None, None
    try:
        if rank == 0:
            payload = _prepare(cframes, fa, spectro, coadd_out)
    except Exception as e:  # noqa: BLE001 - raised on every rank below
        err = e
    if comm is not None:
        payload, msg = comm.bcast((payload, None if err is None else f"{type(err).__name__}: {err}"),
                                  root=0)
        if msg and err is None:
            raise RuntimeError(f"rank 0 of this spectrograph failed: {msg}")
    if err is not None:
        raise err
    tids, fibers, classes, cams, used = payload
    res = rrfit.fit(tids, cams, comm=comm)
    if rank != 0:
        return redrock_out
    cat = np.zeros(len(res), res.dtype.descr + [("FIBER", "i4"), ("OII_FLUX", "f4"),
                                                 ("OII_FLUX_IVAR", "f4")])
    for k in res.dtype.names:
        cat[k] = res[k]
    cat["FIBER"] = fibers
    # DESI's ELG sample is selected on the [OII] S/N at the fitted redshift (emline.class_cut)
    cat["OII_FLUX"], cat["OII_FLUX_IVAR"] = emline.oii_flux(cams, res["Z"])
    cat["ZWARN"] = emline.flag_quality(classes, cat["ZWARN"], cat["DELTACHI2"], cat["OII_FLUX"],
                                       cat["OII_FLUX_IVAR"])
    return io.write_fits(redrock_out, [("REDSHIFTS", cat, io.provenance("redshift", [coadd_out])),
                                       ("EXPOSURES", used, None)])


def _prepare(cframes, fa, spectro, coadd_out):
    """Coadd and write the spectrograph's cframes; (TARGETID, FIBER, TARGET_TYPE, arm -> arrays)
    of targets, and the exposures used."""
    co = coadd(cframes)
    if not co:
        raise FileNotFoundError(f"spectrograph {spectro}: no cframes")
    nfib = next(iter(co.values()))[1].shape[0]
    fam = fa[fa["FIBER"] // nfib == spectro]
    fam = fam[np.argsort(fam["FIBER"])]
    inputs = [f for fs in cframes.values() for f in fs]
    write_coadd(co, fam, inputs, coadd_out)
    targ = np.char.strip(fam["OBJTYPE"].astype(str)) != "SKY"
    fib = (fam["FIBER"] % nfib)[targ]
    cams = {arm: (w, f[fib], i[fib], s[fib]) for arm, (w, f, i, s) in co.items()}
    # the class each target was targeted as; a fiberassign without it gets no class cut
    kind = (fam["TARGET_TYPE"] if "TARGET_TYPE" in fam.dtype.names
            else np.full(len(fam), "", "U1"))[targ]
    return fam["TARGETID"][targ], fam["FIBER"][targ], kind, cams, exposure_table(inputs)
