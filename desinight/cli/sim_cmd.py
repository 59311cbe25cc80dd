"""`desinight sim`: simulate raw nights, score a production against the truth."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import DesinightError


@click.group("sim")
def sim() -> None:
    """Raw-data simulator (DESI-like layout) and accuracy scoring."""


@sim.command("night")
@click.option("--night", required=True, type=int, help="YYYYMMDD")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="raw root (RAWROOT/NIGHT/EXPID/...)")
@click.option("--preset", type=click.Choice(["small", "medium", "full"]), default="small",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--realtime", type=float, default=None,
              help="write with the night's real gaps divided by this speed-up factor")
@click.option("--bad", "bad", multiple=True,
              help="append one extra exposure damaged this way (repeatable): truncated, "
                   "missing-keyword, wrong-obstype, duplicate-expid, missing-camera, "
                   "corrupt-compression")
@click.option("--truth-dir", type=click.Path(file_okay=False), default=None,
              help="where truth-NIGHT.fits goes (default RAWROOT/truth)")
@click.option("--exptime", type=float, default=None,
              help="seconds per science exposure (default: the preset's, 1000)")
@click.option("--efftime", type=float, default=None,
              help="instead of --exptime: the tile's goal of effective time (s); each exposure "
                   "runs as long as its conditions need (an exposure-time calculator)")
@click.option("--seeing", type=float, default=None,
              help="seeing FWHM (arcsec at 6400 A) of every science exposure (default: drawn, ~1.1)")
@click.option("--moon", type=float, default=None,
              help="moon illuminated fraction 0-1 (default 0: dark time)")
@click.option("--airmass", type=float, default=None,
              help="airmass of every science exposure (default: drawn, 1.0-1.5)")
@click.option("--tileid", "tileids", type=int, multiple=True,
              help="observe this TILEID instead of the night's own (repeatable, one per tile of "
                   "the night, in order); reuse an earlier night's TILEID, with the same --seed, "
                   "to spread that tile (the same targets) over several nights")
@click.option("--darks", type=click.IntRange(0, 20), default=0, show_default=True,
              help="DARK exposures (300 s); with any, the CCDs have hot pixels and columns")
@click.option("--narc", type=click.IntRange(1, 20), default=None,
              help="arcs in the night's arc sequence (default: the preset's)")
@click.option("--broken-arcs", type=click.Choice(["incomplete", "corrupt"]), default=None,
              help="an arc sequence before the good one: SEQTOT=5 with 3 taken, or one of 3 "
                   "truncated")
def night_cmd(night: int, out: str, preset: str, seed: int, realtime: float | None,
              bad: tuple[str, ...], truth_dir: str | None, exptime: float | None,
              efftime: float | None, seeing: float | None, moon: float | None,
              airmass: float | None,
              tileids: tuple[int, ...], darks: int, narc: int | None,
              broken_arcs: str | None) -> None:
    """Simulate one night of raw exposures."""
    import sys
    import time

    from ..sim import simulate_night
    t0 = time.perf_counter()
    dirs = simulate_night(night, Path(out), preset=preset, seed=seed, realtime=realtime,
                          bad=bad, truth_dir=Path(truth_dir) if truth_dir else None,
                          progress=sys.stderr.isatty(), exptime=exptime, seeing=seeing,
                          moon=moon, airmass=airmass, efftime=efftime, tileids=tileids,
                          darks=darks, narc=narc,
                          broken_arcs=broken_arcs)
    click.echo(f"wrote {len(dirs)} exposures of night {night} under {out} "
               f"in {time.perf_counter() - t0:.1f} s")


@sim.command("score")
@click.option("--truth", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--redux", required=True, type=click.Path(file_okay=False, exists=True),
              help="production directory ($DESI_SPECTRO_REDUX/$SPECPROD)")
@click.option("--json", "as_json", is_flag=True, help="print the figures as one JSON object")
def score_cmd(truth: str, redux: str, as_json: bool) -> None:
    """Compare redrock catalogues with the truth: per class good, catastrophic unflagged and
    flagged fractions with 68% intervals; the last line holds the overall figures."""
    try:
        from ..sim.score import format_score, score_production
    except ImportError as e:  # pragma: no cover
        raise DesinightError(f"scoring unavailable: {e}") from None
    res = score_production(Path(truth), Path(redux))
    if as_json:
        import json
        click.echo(json.dumps(res, allow_nan=True))
        return
    for line in format_score(res):
        click.echo(line)
