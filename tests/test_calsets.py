"""Calibration sets and darks in the planner (pure, fast): the best complete arc/flat
sequence, the open night's wait for a minimum set, and darknight with its dependants."""

from __future__ import annotations

import pytest

from desinight.config import load_config
from desinight.core.errors import ConfigError
from desinight.core.planner import (CalibRule, ExposureInfo, best_calib_set, calib_sequences,
                                    plan_night)

N = 20261124
CAMS = ("b0", "r0", "z0")


def night(*spec, n: int = N):
    """Exposures in EXPID order from (OBSTYPE, SEQNUM, SEQTOT[, cameras[, laststep]])."""
    out = []
    for i, (t, sn, st, *rest) in enumerate(spec):
        cams = rest[0] if rest else CAMS
        out.append(ExposureInfo((n - 20000000) * 100 + i, n, t, 7 if t == "SCIENCE" else None,
                                cams, sn, st, rest[1] if len(rest) > 1 else "all"))
    return out


def job(plan, kind):
    found = [j for j in plan.jobs if j.kind == kind]
    assert len(found) <= 1
    return found[0] if found else None


def ids(exps, *pos):
    return tuple(exps[i].expid for i in pos)


BROKEN_THEN_GOOD = night(("ZERO", 1, 1), ("ARC", 1, 5), ("ARC", 2, 5), ("ARC", 3, 5),
                         ("ARC", 1, 3), ("ARC", 2, 3), ("ARC", 3, 3), ("FLAT", 1, 1),
                         ("SCIENCE", 1, 1))


def test_incomplete_arc_sequence_is_not_in_psfnight():
    """SEQTOT=5 with only SEQNUM 1-3: its arcs get arc jobs, psfnight uses the good set."""
    exps = BROKEN_THEN_GOOD
    assert [[e.seqnum for e in s] for s in calib_sequences(exps, "ARC")] == [[1, 2, 3], [1, 2, 3]]
    plan = plan_night(N, exps, rule=CalibRule(min_arcs=3))
    psf = job(plan, "psfnight")
    assert psf.expids == ids(exps, 4, 5, 6)
    assert psf.deps == tuple(f"{N}/arc/{e:08d}" for e in ids(exps, 4, 5, 6))
    assert len([j for j in plan.jobs if j.kind == "arc"]) == 6


def test_sequence_with_a_missing_exposure_is_not_complete():
    """A corrupt exposure is quarantined by ingest, so its sequence lacks that SEQNUM."""
    exps = night(("ZERO", 1, 1), ("ARC", 1, 3), ("ARC", 3, 3), ("ARC", 1, 3), ("ARC", 2, 3),
                 ("ARC", 3, 3), ("FLAT", 1, 1))
    assert best_calib_set(exps, "ARC", 3) == exps[3:6]
    assert job(plan_night(N, exps, rule=CalibRule(3)), "psfnight").expids == ids(exps, 3, 4, 5)


def test_fewest_bad_cameras_wins_and_ties_combine():
    bad = ("b0", "r0")                         # z0 marked bad on one arc of the first set
    exps = night(("ZERO", 1, 1), ("ARC", 1, 3), ("ARC", 2, 3, bad), ("ARC", 3, 3),
                 ("ARC", 1, 3), ("ARC", 2, 3), ("ARC", 3, 3), ("FLAT", 1, 1))
    assert job(plan_night(N, exps, rule=CalibRule(3)), "psfnight").expids == ids(exps, 4, 5, 6)
    clean = night(*[(e.obstype, e.seqnum, e.seqtot) for e in exps])
    assert job(plan_night(N, clean, rule=CalibRule(3)), "psfnight").expids == \
        ids(clean, *range(1, 7))


def test_open_night_waits_for_a_minimum_set_closed_night_uses_what_it_has():
    exps = night(("ZERO", 1, 1), ("ARC", 1, 5), ("ARC", 2, 5), ("ARC", 3, 5), ("FLAT", 1, 1))
    open_plan = plan_night(N, exps, rule=CalibRule(min_arcs=3))
    assert job(open_plan, "psfnight") is None and job(open_plan, "flat") is None
    assert any("waiting for a complete ARC sequence (SEQNUM 1..SEQTOT) of at least 3"
               in w for w in open_plan.waiting)
    closed = plan_night(N, exps, closed=True, rule=CalibRule(min_arcs=3))
    assert job(closed, "psfnight").expids == ids(exps, 1, 2, 3)


def test_min_arcs_counts_good_arcs_and_ignored_ones_still_complete_a_sequence():
    exps = night(("ZERO", 1, 1), ("ARC", 1, 3), ("ARC", 2, 3, CAMS, "ignore"), ("ARC", 3, 3),
                 ("FLAT", 1, 1))
    assert job(plan_night(N, exps, rule=CalibRule(min_arcs=3)), "psfnight") is None
    assert job(plan_night(N, exps, rule=CalibRule(min_arcs=2)), "psfnight").expids == \
        ids(exps, 1, 3)


def test_min_flats_applies_to_fiberflatnight():
    exps = night(("ZERO", 1, 1), ("ARC", 1, 1), ("FLAT", 1, 3), ("FLAT", 2, 3),
                 ("FLAT", 1, 2), ("FLAT", 2, 2), ("SCIENCE", 1, 1))
    assert job(plan_night(N, exps, rule=CalibRule(min_flats=3)), "fiberflatnight") is None
    assert job(plan_night(N, exps, rule=CalibRule(min_flats=2)), "fiberflatnight").expids == \
        ids(exps, 4, 5)


def test_default_rule_keeps_every_arc_without_sequence_keys():
    exps = night(("ZERO", None, None), ("ARC", None, None), ("ARC", None, None),
                 ("FLAT", None, None))
    assert job(plan_night(N, exps, closed=True), "psfnight").expids == ids(exps, 1, 2)


def test_darknight_from_the_night_and_its_neighbours_and_preprocs_wait_for_it():
    exps = night(("ZERO", 1, 1), ("DARK", 1, 2), ("DARK", 2, 2), ("ARC", 1, 1), ("FLAT", 1, 1),
                 ("SCIENCE", 1, 1))
    before = night(("DARK", 1, 1), n=N - 1)
    plan = plan_night(N, exps, closed=True, dark_neighbours=before)
    dark, bias = job(plan, "darknight"), job(plan, "biasnight")
    assert bias.expids == ids(exps, 0)                     # darks stay out of the bias
    assert dark.expids == (before[0].expid, *ids(exps, 1, 2)) and dark.deps == (bias.key,)
    for kind in ("arc", "flat", "science"):
        assert dark.key in job(plan, kind).deps, kind
    # a night without darks of its own takes its neighbours'; without any, no darknight
    no_darks = [e for e in exps if e.obstype != "DARK"]
    assert job(plan_night(N, no_darks, closed=True, dark_neighbours=before),
               "darknight").expids == (before[0].expid,)
    plain = plan_night(N, no_darks, closed=True)
    assert job(plain, "darknight") is None
    assert job(plain, "science").deps == (f"{N}/biasnight", f"{N}/psfnight", f"{N}/fiberflatnight")


def test_calib_keys_from_the_config(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[calib]\nmin_arcs = 3\nmin_flats = 2\ndark_window_nights = 4\n")
    cfg = load_config(conf, env={})
    assert (cfg.min_arcs, cfg.min_flats, cfg.dark_window_nights) == (3, 2, 4)
    assert (load_config(env={}).min_arcs, load_config(env={}).dark_window_nights) == (1, 2)
    conf.write_text("[calib]\nmin_arcs = 0\n")
    with pytest.raises(ConfigError, match="calib.min_arcs"):
        load_config(conf, env={})


def test_simulated_broken_sequences_and_darks_in_the_schedule():
    from desinight.core.errors import DesinightError
    from desinight.sim import instrument as I
    from desinight.sim import night as SN
    p = I.PRESETS["small"]
    corrupt = SN.schedule(p, N, 0, broken_arcs="corrupt")
    arcs = [(e.seqnum, e.seqtot, e.bad) for e in corrupt if e.obstype == "ARC"]
    assert arcs == [(1, 3, None), (2, 3, "truncated"), (3, 3, None), (1, 1, None)]
    assert not any(e.defects for e in corrupt)
    dark = SN.schedule(p, N, 0, darks=2)
    assert [e.obstype for e in dark[:3]] == ["ZERO", "DARK", "DARK"]
    assert all(e.defects for e in dark)
    # the default night is the same night without them
    assert [(e.obstype, e.seqnum, e.seqtot) for e in SN.schedule(p, N, 0)] == \
        [(e.obstype, e.seqnum, e.seqtot) for e in corrupt[:1] + corrupt[4:]]
    with pytest.raises(DesinightError, match="unknown broken arc sequence 'nope'"):
        SN.schedule(p, N, 0, broken_arcs="nope")


def test_darknight_takes_the_darks_of_nights_within_the_window(ctx, cfg):
    """calib.dark_window_nights = 2: night N's darknight reads the ingested darks of N-1,
    not those of N+3; the daemon's planning pass gets them from the database."""
    from sqlalchemy import select

    from desinight import orchestrate as O
    from desinight.db.engine import transaction
    from desinight.db.models import Job
    from desinight.ingest import ingest_night
    from tests.rawfixture import write_exposure
    before, after = 20261123, 20261127
    write_exposure(cfg.raw_root, before, 0, "DARK")
    write_exposure(cfg.raw_root, after, 0, "DARK")
    for seq, kind in enumerate(("ZERO", "DARK", "ARC", "FLAT")):
        write_exposure(cfg.raw_root, N, seq, kind)
    for night in (before, after, N):
        ingest_night(ctx, night, O.utc_now())
    O.plan(ctx, N, closed=True)
    with transaction(ctx.sessions) as s:
        dark = s.scalar(select(Job).where(Job.key == f"{N}/darknight"))
        assert dark.expids == [(before - 20000000) * 100, (N - 20000000) * 100 + 1]


def test_campaign_nights_share_their_darks(ctx, cfg):
    """A campaign plans with the same rule: night N (no darks) takes night N+1's dark."""
    from desinight import campaign as C
    from desinight import orchestrate as O
    from desinight.core.manifest import parse_manifest
    from desinight.db.engine import transaction
    from desinight.ingest import ingest_night
    from tests.rawfixture import write_exposure, write_night
    n2 = 20261125
    write_night(cfg.raw_root, N)
    write_night(cfg.raw_root, n2, science=1, tile=2000)
    write_exposure(cfg.raw_root, n2, 9, "DARK")
    for night in (N, n2):
        ingest_night(ctx, night, O.utc_now())
    m = parse_manifest(f'[campaign]\nname = "re"\nsource = "test"\n[selection]\n'
                       f"nights = [{N}, {n2}]\n", "c.toml")
    with transaction(ctx.sessions) as s:
        pv = C.preview(s, ctx.cfg, m)
    jobs = {j.key: j for j in pv.jobs}
    dark = (n2 - 20000000) * 100 + 9
    assert jobs[f"{N}/darknight"].expids == (dark,) == jobs[f"{n2}/darknight"].expids
    sci = next(j for j in pv.jobs if j.kind == "science" and j.night == N)
    assert f"{N}/darknight" in sci.deps
