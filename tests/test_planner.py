"""Planner unit tests: pure function, no database."""

from desinight.core.planner import CalibRef, ExposureInfo, plan_night

N = 20261124
CAMS = ("b0", "r0", "z0")


def exp(seq, obstype, tile=None, seqnum=1, seqtot=1, night=N, cams=CAMS):
    return ExposureInfo((night - 20000000) * 100 + seq, night, obstype, tile, cams, seqnum, seqtot)


def full_night():
    return [exp(0, "ZERO"), exp(1, "ARC"), exp(2, "FLAT"),
            exp(3, "SCIENCE", 1000, 1, 2), exp(4, "SCIENCE", 1000, 2, 2)]


def keys(plan):
    return {j.key: j for j in plan.jobs}


def test_full_night_graph():
    jobs = keys(plan_night(N, full_night()))
    assert sorted(j.kind for j in jobs.values()) == sorted(
        ["biasnight", "arc", "psfnight", "flat", "fiberflatnight", "science", "science",
         "stdstars", "fluxcalib", "fluxcalib", "redshift"])
    assert jobs[f"{N}/psfnight"].deps == (f"{N}/arc/26112401",)
    assert jobs[f"{N}/flat/26112402"].deps == (f"{N}/biasnight", f"{N}/psfnight")
    sci = jobs[f"{N}/science/26112403"]
    assert set(sci.deps) == {f"{N}/biasnight", f"{N}/psfnight", f"{N}/fiberflatnight"}
    assert sci.calib_night is None and sci.hold_reason is None
    assert set(jobs[f"{N}/stdstars/1000"].deps) == {f"{N}/science/26112403", f"{N}/science/26112404"}
    assert set(jobs[f"{N}/fluxcalib/26112404"].deps) == {f"{N}/science/26112404", f"{N}/stdstars/1000"}
    z = jobs[f"{N}/redshift/1000/26112404"]
    assert z.expids == (26112403, 26112404)
    assert set(z.deps) == {f"{N}/fluxcalib/26112403", f"{N}/fluxcalib/26112404"}
    # every dependency is a job of the plan: the graph is closed
    assert all(d in jobs for j in jobs.values() for d in j.deps)


def test_replanning_is_idempotent():
    first = plan_night(N, full_night())
    again = plan_night(N, full_night(), existing=[j.key for j in first.jobs])
    assert again.jobs == [] and again.quarantine == {}


def test_sequences_wait_for_their_last_exposure_not_the_clock():
    arcs = [exp(0, "ZERO"), exp(1, "ARC", seqnum=1, seqtot=3), exp(2, "ARC", seqnum=2, seqtot=3)]
    p = plan_night(N, arcs)
    assert f"{N}/psfnight" not in keys(p)
    assert any("psfnight" in w for w in p.waiting)
    p2 = plan_night(N, arcs + [exp(3, "ARC", seqnum=3, seqtot=3)], existing=[j.key for j in p.jobs])
    assert set(keys(p2)) == {f"{N}/arc/26112403", f"{N}/psfnight"}
    assert len(keys(p2)[f"{N}/psfnight"].deps) == 3


def test_tile_closes_on_last_exposure_or_next_tile():
    ex = full_night()[:4]   # exposure 1 of 2 on tile 1000
    assert not any(j.kind == "redshift" for j in plan_night(N, ex).jobs)
    nxt = ex + [exp(5, "SCIENCE", 2000, 1, 1)]
    kinds = [j.key for j in plan_night(N, nxt).jobs]
    assert f"{N}/redshift/1000/26112403" in kinds and f"{N}/redshift/2000/26112405" in kinds
    # closing the night closes the open tile too
    assert any(j.kind == "redshift" for j in plan_night(N, ex, closed=True).jobs)


def test_late_exposure_adds_only_its_jobs():
    first = plan_night(N, full_night())
    late = full_night() + [exp(9, "SCIENCE", 1000, 3, 3)]
    p = plan_night(N, late, existing=[j.key for j in first.jobs])
    got = keys(p)
    assert set(got) == {f"{N}/science/26112409", f"{N}/fluxcalib/26112409",
                        f"{N}/redshift/1000/26112409"}
    z = got[f"{N}/redshift/1000/26112409"]
    assert z.expids == (26112403, 26112404, 26112409)
    # the new tile redshift waits for the previous one: they write the same files
    assert f"{N}/redshift/1000/26112404" in z.deps
    assert f"{N}/stdstars/1000" in got[f"{N}/fluxcalib/26112409"].deps


def test_night_without_arcs_uses_earlier_calibrations():
    """psfnight and fiberflatnight come from one night: tonight's flats (extracted through an
    earlier night's traces) give way to that night's pair; without the pair, science is held."""
    ex = [exp(0, "ZERO"), exp(2, "FLAT"), exp(3, "SCIENCE", 1000, 1, 1)]
    fb = {"psfnight": CalibRef("20261120/psfnight", 20261120),
          "fiberflatnight": CalibRef("20261120/fiberflatnight", 20261120)}
    jobs = keys(plan_night(N, ex, fallback=fb))
    sci = jobs[f"{N}/science/26112403"]
    assert {"20261120/psfnight", "20261120/fiberflatnight"} <= set(sci.deps)
    assert sci.calib_night == 20261120 and sci.hold_reason is None
    assert "20261120/psfnight" in jobs[f"{N}/flat/26112402"].deps
    half = keys(plan_night(N, ex, fallback={"psfnight": fb["psfnight"]}))[f"{N}/science/26112403"]
    assert "psfnight of 20261120 and fiberflatnight of 20261124 are never mixed" in half.hold_reason
    # arcs but no flats: not tonight's psfnight with 20261120's fiberflat, both from 20261120
    arcs_only = [exp(0, "ZERO"), exp(1, "ARC"), exp(3, "SCIENCE", 1000, 1, 1)]
    sci = keys(plan_night(N, arcs_only, fallback=fb))[f"{N}/science/26112403"]
    assert sci.calib_night == 20261120 and f"{N}/psfnight" not in sci.deps


def test_chosen_calibrations_win_over_tonights():
    chosen = {"psfnight": CalibRef("20261120/psfnight", 20261120),
              "fiberflatnight": CalibRef("20261120/fiberflatnight", 20261120)}
    sci = keys(plan_night(N, full_night(), chosen=chosen))[f"{N}/science/26112403"]
    assert {"20261120/psfnight", "20261120/fiberflatnight"} <= set(sci.deps)
    assert f"{N}/psfnight" not in sci.deps and sci.calib_night == 20261120
    held = keys(plan_night(N, full_night(), chosen={}, no_fallback="the chosen night has none"))
    assert held[f"{N}/science/26112403"].hold_reason.endswith("; the chosen night has none")


def test_night_without_any_calibrations_holds_science_with_reason():
    p = plan_night(N, [exp(3, "SCIENCE", 1000, 1, 1)])
    sci = keys(p)[f"{N}/science/26112403"]
    assert sci.hold_reason and "psfnight" in sci.hold_reason and "fiberflatnight" in sci.hold_reason
    assert all(j.hold_reason for j in p.jobs)


def test_held_science_is_released_by_late_calibrations_tonight():
    first = plan_night(N, [exp(0, "ZERO"), exp(3, "SCIENCE", 1000, 1, 1)])
    held = {j.key for j in first.jobs if j.hold_reason}
    assert f"{N}/science/26112403" in held and f"{N}/biasnight" not in held
    late = [exp(0, "ZERO"), exp(3, "SCIENCE", 1000, 1, 1), exp(5, "ARC"), exp(6, "FLAT")]
    p = plan_night(N, late, existing=[j.key for j in first.jobs], held=held)
    assert set(keys(p)) == {f"{N}/arc/26112405", f"{N}/psfnight", f"{N}/flat/26112406",
                            f"{N}/fiberflatnight"}
    rel = {j.key: j for j in p.released}
    assert set(rel) == held        # science, stdstars, fluxcalib, redshift: none held any more
    assert all(j.hold_reason is None for j in rel.values())
    assert set(rel[f"{N}/science/26112403"].deps) == {f"{N}/biasnight", f"{N}/psfnight",
                                                      f"{N}/fiberflatnight"}
    # planning again with nothing held releases nothing and adds nothing
    again = plan_night(N, late, existing=[*(j.key for j in first.jobs), *keys(p)])
    assert again.jobs == [] and again.released == []


def test_held_science_is_released_by_an_earlier_nights_calibrations():
    first = plan_night(N, [exp(3, "SCIENCE", 1000, 1, 1)])
    held = {j.key for j in first.jobs}
    fb = {"biasnight": CalibRef("20261120/biasnight", 20261120),
          "psfnight": CalibRef("20261120/psfnight", 20261120),
          "fiberflatnight": CalibRef("20261120/fiberflatnight", 20261120)}
    p = plan_night(N, [exp(3, "SCIENCE", 1000, 1, 1)], existing=held, fallback=fb, held=held)
    assert p.jobs == [] and {j.key for j in p.released} == held
    sci = next(j for j in p.released if j.kind == "science")
    assert sci.calib_night == 20261120 and "20261120/psfnight" in sci.deps


def test_duplicate_expid_and_unknown_obstype_are_quarantined():
    ex = full_night() + [exp(4, "SCIENCE", 1000, 2, 2), exp(7, "TWILIGHT")]
    p = plan_night(N, ex)
    assert p.quarantine[26112404].startswith("duplicate EXPID")
    assert "unknown OBSTYPE 'TWILIGHT'" in p.quarantine[26112407]
    assert sum(1 for j in p.jobs if j.kind == "science") == 2


def test_cameras_follow_the_exposures():
    ex = full_night()
    ex[3] = exp(3, "SCIENCE", 1000, 1, 2, cams=("b0", "r0"))
    jobs = keys(plan_night(N, ex))
    assert jobs[f"{N}/science/26112403"].cameras == ("b0", "r0")
    assert jobs[f"{N}/stdstars/1000"].cameras == ("b0", "r0", "z0")
