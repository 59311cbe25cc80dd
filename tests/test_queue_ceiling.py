"""The ceiling on all of the user's queued jobs (desinight.max_user_jobs) on the real SLURM
cluster: the daemon (a night arriving) and `campaign run` (a reprocessing) submit at once,
and `squeue --me`, sampled while they run, never shows more than the ceiling; the campaign
never takes the slots reserved for the night."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from desinight import orchestrate as O
from desinight.config import Config
from tests.daemonkit import cli, fast_templates, start_daemon, stop_daemon, write_config
from tests.rawfixture import N, write_night


CEILING, RESERVE = 5, 2
N2 = N + 1


def test_user_room_leaves_the_nightly_reserve_to_nightly_work():
    cfg = Config(max_user_jobs=10, nightly_reserve=3)
    nightly = O.Context(cfg=cfg, sessions=None, backend=None, production="p")   # type: ignore[arg-type]
    camp = O.Context(cfg=cfg, sessions=None, backend=None, production="c", campaign=True)  # type: ignore[arg-type]
    assert [O.user_room(nightly, n) for n in (0, 7, 10, 12)] == [10, 3, 0, 0]
    assert [O.user_room(camp, n) for n in (0, 7, 10)] == [7, 0, 0]
    # no reserve named: a tenth of the ceiling
    assert O.user_room(O.Context(cfg=Config(max_user_jobs=50), sessions=None, backend=None,  # type: ignore[arg-type]
                                 production="c", campaign=True), 0) == 45


def _queue() -> list[str]:
    """Comments (desinight:PRODUCTION:JOB:ATTEMPT) of every job of this user in slurmctld."""
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%k"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_local_backend_counts_its_live_jobs(tmp_path):
    from desinight.batch.local import LocalBackend
    from tests.backend_contract import Jobs, wait_for
    be = LocalBackend(tmp_path / "spool", cpus=1)
    jobs = Jobs(be, tmp_path, tag="count")
    ids = [jobs.submit(f"j{i}", "sleep 30") for i in range(3)]
    assert be.count_user_jobs() == 3           # one running, two pending on the one CPU
    be.cancel(ids)
    wait_for(be, ids, timeout=30)
    assert be.count_user_jobs() == 0


@pytest.mark.slurm
@pytest.mark.slow
def test_daemon_and_campaign_never_exceed_the_ceiling(tmp_path, slurm_cluster):
    if len(_queue()) >= CEILING - RESERVE:
        pytest.skip("the cluster already holds other jobs of this user")
    conf = write_config(tmp_path, backend="slurm",
                        templates=fast_templates(tmp_path / "templates", run="sleep 2"),
                        extra="watch_nights = 0")
    conf.write_text(conf.read_text().replace(
        "[daemon]", f"max_user_jobs = {CEILING}\nnightly_reserve = {RESERVE}\n[daemon]", 1))
    cli(conf, "init")
    write_night(tmp_path / "raw", N, science=1)          # the campaign's (never ingested)
    (tmp_path / "c.toml").write_text(f'[campaign]\nname = "reproc"\nsource = "test"\n'
                                     f'throttle = 50\n[selection]\nnights = [{N}]\n')
    cli(conf, "campaign", "submit", str(tmp_path / "c.toml"))
    daemon = start_daemon(conf, tmp_path / "daemon.out")
    camp = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "campaign",
                             "run", "reproc", "--poll", "1", "--timeout", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    write_night(tmp_path / "raw", N2, science=1, tile=2000)   # the night arrives meanwhile
    most = most_campaign = 0
    try:
        deadline, look = time.monotonic() + 300, 0
        while True:
            assert time.monotonic() < deadline, "daemon + campaign did not finish in 300 s"
            q = _queue()
            most = max(most, len(q))
            most_campaign = max(most_campaign, sum(c.startswith("desinight:reproc:") for c in q))
            assert len(q) <= CEILING, q
            look += 1     # the night's state (a CLI call, ~1 s) every 10th sample only
            if camp.poll() is not None and look % 10 == 0 and not _night_open(conf):
                break
            time.sleep(0.2)      # sampling interval, not synchronisation
        rc, _ = stop_daemon(daemon)
    finally:
        for p in (daemon, camp):
            if p.poll() is None:
                p.kill()
    out = camp.stdout.read()
    assert camp.returncode == 0 and "9/9 completed" in out, out
    assert most_campaign <= CEILING - RESERVE
    # the ceiling was reached: the limit, not the work available, held the queue down
    assert most >= CEILING - 1, most
    print(f"most queued {most}, of the campaign {most_campaign}")


def _night_open(conf) -> bool:
    r = cli(conf, "status", "--night", str(N2), "--json", check=False)
    if r.returncode != 0:
        return True
    jobs = json.loads(r.stdout)["jobs"]
    return len(jobs) < 9 or any(j["state"] != "completed" for j in jobs)
