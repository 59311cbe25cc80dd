"""`resubmit --force JOB|EXPID|NIGHT` re-runs completed work and everything downstream of it
(new attempts, dependents re-linked), with `--dry-run` (database unchanged). Local backend."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from desinight.db.models import Attempt, Job
from tests.daemonkit import fast_templates, write_config
from tests.rawfixture import N, write_night
from tests.test_dry_run import _snapshot

E3, E4 = (N - 20000000) * 100 + 3, (N - 20000000) * 100 + 4


def _attempts(root) -> dict[str, tuple[str, int]]:
    engine = create_engine(f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        rows = c.execute(select(Job.key, Job.state, Attempt.number).join(Attempt)).all()
    engine.dispose()
    out: dict[str, tuple[str, int]] = {}
    for key, state, n in rows:
        out[key] = (state, max(n, out.get(key, ("", 0))[1]))
    return out


@pytest.mark.slow
def test_force_reruns_a_completed_exposure_and_its_downstream(tmp_path, capsys):
    from desinight.cli.main import main
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl"))

    def run(*args: str) -> str:     # in-process: one interpreter start-up for the test
        capsys.readouterr()
        main(["--config", str(conf), *args])
        return capsys.readouterr().out

    run("init")
    write_night(tmp_path / "raw")
    run("ingest", str(N), "--wait", "--timeout", "120")
    with pytest.raises(SystemExit) as ex:
        run("resubmit", str(E3))
    assert ex.value.code == 1 and "--force re-runs completed ones" in capsys.readouterr().err

    before = _snapshot(tmp_path)
    dry = run("resubmit", str(E3), "--force", "--dry-run")
    assert _snapshot(tmp_path) == before
    redo = [f"{N}/science/{E3:08d}", f"{N}/stdstars/1000", f"{N}/fluxcalib/{E3:08d}",
            f"{N}/fluxcalib/{E4:08d}", f"{N}/redshift/1000/{E4:08d}"]
    assert dry.strip() == "dry run: would resubmit 5 jobs: " + ", ".join(redo)
    assert "would resubmit 11 jobs" in run("resubmit", str(N), "--force", "--dry-run")

    real = run("resubmit", str(E3), "--force")
    assert real.strip() == "resubmitted 5 jobs (5 submitted now): " + ", ".join(redo)
    run("ingest", str(N), "--wait", "--timeout", "60")    # waits for the night's end
    att = _attempts(tmp_path)
    assert {k: v for k, v in att.items() if v[0] != "completed"} == {}
    assert {k for k, (_, n) in att.items() if n == 2} == set(redo)


def test_force_is_refused_while_a_job_to_rerun_is_queued(ctx, raw_night, fake_backend):
    from desinight import orchestrate as O
    from desinight.core.errors import DesinightError
    from desinight.ingest import ingest_night
    from desinight.retry import resubmit
    ingest_night(ctx, N, O.utc_now())
    O.plan(ctx, N, closed=True)
    O.submit_ready(ctx, O.utc_now())
    bias = fake_backend.by_name("biasnight")[0]
    fake_backend.finish(bias)
    O.poll(ctx, O.utc_now())
    # the completed bias may be forced, but its dependents are queued: refused, nothing moved
    with pytest.raises(DesinightError, match=f"--force: {N}/arc/.* is (pending|submitted); "
                                             "wait for it to end or cancel it first"):
        resubmit(ctx, job=f"{N}/biasnight", force=True)
    assert fake_backend.calls["cancel"] == 0
