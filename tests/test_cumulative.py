"""Cumulative redshifts: a tile's every good exposure through night N, after the earlier
nights' jobs (docs/science.md "Per-night and cumulative redshifts").

Planner rules (pure), then the cross-night dependency rules through ingest -> plan -> submit
-> poll with the fake backend: live earlier jobs become afterok ids, completed ones add none,
failed ones make the cumulative job dep_failed naming them, and `resubmit` brings it back.
The end-to-end run with the simulator and the science is tests/test_cumulative_e2e.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from desinight import orchestrate as O
from desinight.config import Config
from desinight.core.planner import Earlier, ExposureInfo, plan_night
from desinight.db.engine import transaction
from desinight.db.models import Job
from desinight.ingest import ingest_night
from desinight.retry import resubmit
from tests.rawfixture import write_night
from tests.test_orchestrate import run_all

N1, N3 = 20261101, 20261103
T = 1000
CAMS = ("b0", "r0", "z0")


def sci(night, seq, laststep="all", tile=T, seqnum=1, seqtot=1):
    return ExposureInfo((night - 20000000) * 100 + seq, night, "SCIENCE", tile, CAMS, seqnum,
                        seqtot, laststep)


def night3():
    return [ExposureInfo(26110300 + i, N3, t, None, CAMS, 1, 1)
            for i, t in enumerate(("ZERO", "ARC", "FLAT"))] + [sci(N3, 3, seqnum=1, seqtot=2),
                                                              sci(N3, 4, seqnum=2, seqtot=2)]


# --- planner --------------------------------------------------------------------------------
def test_cumulative_reads_every_good_exposure_through_the_night_and_waits_on_their_jobs():
    hist = {T: [Earlier(sci(N1, 3), f"{N1}/fluxcalib/26110103"),
                Earlier(sci(N1, 4, laststep="fluxcal"), f"{N1}/fluxcalib/26110104"),
                Earlier(sci(N1, 5, laststep="skysub"), None)]}   # neither goes into a redshift
    jobs = {j.key: j for j in plan_night(N3, night3(), closed=True, history=hist).jobs}
    cum = jobs[f"{N3}/cumulative/{T}/26110304"]
    assert cum.expids == (26110103, 26110303, 26110304) and cum.hold_reason is None
    assert set(cum.deps) == {f"{N1}/fluxcalib/26110103", f"{N3}/fluxcalib/26110303",
                             f"{N3}/fluxcalib/26110304"}
    # the per-night redshift keeps to the night's own exposures
    assert jobs[f"{N3}/redshift/{T}/26110304"].expids == (26110303, 26110304)
    # no history known (a campaign): no cumulative job, rather than one over fewer exposures
    assert not any(j.kind == "cumulative" for j in plan_night(N3, night3(), closed=True).jobs)


def test_an_earlier_exposure_without_its_job_holds_the_cumulative_until_it_exists():
    early = sci(N1, 3)
    p = plan_night(N3, night3(), closed=True, history={T: [Earlier(early, None)]})
    cum = next(j for j in p.jobs if j.kind == "cumulative")
    assert "26110103 (night 20261101)" in cum.hold_reason and 26110103 in cum.expids
    again = plan_night(N3, night3(), existing=[j.key for j in p.jobs], closed=True,
                       held=[cum.key], history={T: [Earlier(early, f"{N1}/fluxcalib/26110103")]})
    assert again.jobs == [] and [j.key for j in again.released] == [cum.key]
    assert f"{N1}/fluxcalib/26110103" in again.released[0].deps


def test_a_late_exposure_gets_a_new_version_after_the_previous_one():
    first = plan_night(N3, night3()[:4], closed=True, history={})
    assert [j.key for j in first.jobs if j.kind == "cumulative"] == [f"{N3}/cumulative/{T}/26110303"]
    late = plan_night(N3, night3(), existing=[j.key for j in first.jobs], closed=True, history={})
    cum = next(j for j in late.jobs if j.kind == "cumulative")
    assert cum.key == f"{N3}/cumulative/{T}/26110304"
    assert f"{N3}/cumulative/{T}/26110303" in cum.deps     # never two writers of one file


# --- the dependency rules through the database and the submitter ------------------------------
@pytest.fixture
def cfg(tmp_path, db_url) -> Config:
    return Config(production="test", raw_root=tmp_path / "raw", redux_root=tmp_path / "redux",
                  state_dir=tmp_path / "state", db_url=db_url, cumulative_redshifts=True)


def snapshot(ctx) -> dict[str, dict]:
    with transaction(ctx.sessions) as s:
        out = {}
        for j in s.scalars(select(Job)):
            out[j.key] = {"state": j.state, "expids": j.expids, "reason": j.reason,
                          "bid": j.last_attempt.backend_id if j.last_attempt else None}
        return out


def process(ctx, backend, night, fail=frozenset(), finish=True):
    """Ingest, plan and submit the night; with ``finish``, run the fake backend's jobs to the
    end (afterok: a job runs once its parents completed; ``fail``: kinds that fail)."""
    ingest_night(ctx, night, O.utc_now())
    O.plan(ctx, night, closed=True)
    if finish:
        run_all(ctx, backend, fail, night)
    else:
        O.submit_ready(ctx, O.utc_now())


def earlier_flux(jobs):
    return {k: v for k, v in jobs.items() if k.startswith(f"{N1}/fluxcalib/")}


def test_live_earlier_jobs_are_afterok_ids(ctx, cfg, fake_backend):
    write_night(cfg.raw_root, N1, tile=T)
    write_night(cfg.raw_root, N3, tile=T)
    process(ctx, fake_backend, N1, finish=False)        # night 1 queued, nothing ran yet
    process(ctx, fake_backend, N3, finish=False)
    jobs = snapshot(ctx)
    cum = jobs[f"{N3}/cumulative/{T}/26110304"]
    assert cum["expids"] == [26110103, 26110104, 26110303, 26110304]
    flux1 = {v["bid"] for v in earlier_flux(jobs).values()}
    assert len(flux1) == 2 and flux1 <= set(fake_backend.requests[cum["bid"]].depends_on)
    assert jobs[f"{N1}/cumulative/{T}/26110104"]["expids"] == [26110103, 26110104]


def test_completed_earlier_jobs_add_no_afterok_and_night_1_result_is_kept(ctx, cfg, fake_backend):
    write_night(cfg.raw_root, N1, tile=T)
    process(ctx, fake_backend, N1)
    write_night(cfg.raw_root, N3, tile=T)
    process(ctx, fake_backend, N3)
    jobs = snapshot(ctx)
    cum = jobs[f"{N3}/cumulative/{T}/26110304"]
    assert cum["state"] == "completed"
    flux1 = {v["bid"] for v in earlier_flux(jobs).values()}
    assert not flux1 & set(fake_backend.requests[cum["bid"]].depends_on)   # verified: completed
    with transaction(ctx.sessions) as s:
        from desinight.db import repo
        job = s.scalar(select(Job).where(Job.key == f"{N3}/cumulative/{T}/26110304"))
        assert set(earlier_flux(jobs)) <= {p.key for p in repo.parents_of(s, [job.id])[job.id]}
    night1 = jobs[f"{N1}/cumulative/{T}/26110104"]
    assert night1["state"] == "completed" and fake_backend.requests[night1["bid"]]   # not re-run
    assert sum(k.startswith(f"{N1}/cumulative/") for k in jobs) == 1


def test_a_failed_earlier_job_makes_the_cumulative_dep_failed_until_resubmitted(ctx, cfg, fake_backend):
    write_night(cfg.raw_root, N1, tile=T)
    process(ctx, fake_backend, N1, fail={"fluxcalib"})
    assert snapshot(ctx)[f"{N1}/cumulative/{T}/26110104"]["state"] == "dep_failed"
    write_night(cfg.raw_root, N3, tile=T)
    process(ctx, fake_backend, N3, finish=False)
    O.submit_ready(ctx, O.utc_now())
    jobs = snapshot(ctx)
    cum = jobs[f"{N3}/cumulative/{T}/26110304"]
    assert cum["state"] == "dep_failed" and cum["bid"] is None           # never fits fewer
    assert cum["reason"].startswith(f"upstream {N1}/fluxcalib/")
    assert jobs[f"{N3}/redshift/{T}/26110304"]["state"] == "submitted"  # the night goes on
    # resubmitting the failed night-1 job re-plans everything downstream, night 3's too
    out = resubmit(ctx, job=f"{N1}/fluxcalib/26110103")
    assert f"{N3}/cumulative/{T}/26110304" in out.replanned
    assert snapshot(ctx)[f"{N3}/cumulative/{T}/26110304"]["state"] == "planned"


# --- the simulator ------------------------------------------------------------------------------
def test_sim_tileid_puts_a_tile_on_a_later_night(tmp_path):
    """`sim night --tileid`: the night observes that TILEID (an earlier night's) instead of its
    own (the e2e test checks the targets are the same); a bad value: one line, exit code 1."""
    from desinight.sim import instrument as I
    from desinight.sim import night as SN
    p = I.PRESETS["small"]
    own = {e.tileid for e in SN.schedule(p, N1, 1) if e.obstype == "SCIENCE"}
    assert own == {11010}                                         # the default is unchanged
    again = [e for e in SN.schedule(p, N3, 1, tileids=[11010]) if e.obstype == "SCIENCE"]
    assert {e.tileid for e in again} == {11010} and len(again) == p.nscience
    assert {e.expid for e in again}.isdisjoint(e.expid for e in SN.schedule(p, N1, 1))
    r = subprocess.run([sys.executable, "-m", "desinight", "sim", "night", "--night", str(N3),
                        "--out", str(tmp_path), "--tileid", "5", "--tileid", "6"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "at most 1 distinct positive TILEID" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / str(N3)).exists()
