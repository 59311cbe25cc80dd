"""Issue 12: nothing in the raw data can stop, hang or kill the night (in-process and CLI).

The daemon under the same data is in tests/test_hostile_daemon.py; a hand run on the real
SLURM cluster in tests/test_hostile_slurm.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from desinight import readers
from desinight.batch.exitfile import read_exits
from desinight.ingest import ingest_night
from desinight.orchestrate import utc_now
from tests import hostiledata as H
from tests.daemonkit import cli, init_production, status_json
from tests.rawfixture import N, write_night


@pytest.fixture
def hostile_env(monkeypatch):
    """Reader workers started from here on see the fault hook (and the small limits)."""
    readers.close_shared()
    yield monkeypatch
    readers.close_shared()


def test_pool_survives_crash_hang_and_memory_and_replaces_workers(hostile_env, tmp_path):
    hostile_env.setenv(readers.FAULT_ENV, "00000001:segv,00000002:hang,00000003:oom")
    pool = readers.ReaderPool(workers=2, timeout_s=5, memory_mb=768)
    try:
        reqs = [{"op": "inspect", "expdir": str(tmp_path / "20261124" / f"{i:08d}"),
                 "raw_root": str(tmp_path)} for i in range(1, 6)]
        got = [(r.kind, r.message) for r in pool.run(reqs)]
        assert got[0] == ("crashed", "reader crashed (SIGSEGV)")
        assert got[1] == ("timeout", "reader timed out after 5 s")
        assert got[2] == ("memory", "reader out of memory (limit 768 MB)")
        assert got[3][0] == got[4][0] == "incomplete"      # the others answered
        # at most 2 + one replacement per killed reader (the out-of-memory one lives on)
        assert pool.started <= 4
        started = pool.started
        for _ in range(3):      # persistent: no start-up per request
            assert pool.run(reqs[3:4])[0].kind == "incomplete"
        assert pool.started == started
    finally:
        pool.close()


def test_close_wakes_a_caller_waiting_on_a_hanging_reader(hostile_env, tmp_path):
    import threading
    hostile_env.setenv(readers.FAULT_ENV, "00000001:hang")
    pool = readers.ReaderPool(workers=1, timeout_s=600, memory_mb=768)
    out: list = []

    def call() -> None:
        try:
            pool.run([{"op": "inspect", "expdir": str(tmp_path / "20261124" / "00000001")}])
        except readers.ReadersClosed as e:
            out.append(e)
    t = threading.Thread(target=call)
    t.start()
    pool.close()
    t.join(timeout=10)
    assert not t.is_alive() and isinstance(out[0], readers.ReadersClosed)


def test_every_hostile_class_is_quarantined_and_the_good_night_ingested(hostile_env, ctx, tmp_path):
    """Good night + each class, through ingest_night on SQLite and PostgreSQL (there the
    integers beyond int32 would otherwise abort the whole transaction)."""
    ctx.cfg = dataclasses.replace(ctx.cfg, reader_timeout_s=H.READER_TIMEOUT_S, reader_memory_mb=1024)
    good = write_night(ctx.cfg.raw_root)
    bad = H.every_class(ctx.cfg.raw_root, N, tmp_path / "elsewhere")
    hostile_env.setenv(readers.FAULT_ENV, H.fault_env(bad))
    problems: list = []
    counts = ingest_night(ctx, N, utc_now(), problems=problems)
    assert counts == {"ingested": len(good), "quarantined": len(bad)}, problems
    from tests.daemonkit import status_json as _  # noqa: F401 - (CLI view tested below)
    from desinight import status as S
    from desinight.db import repo
    from desinight.db.engine import transaction
    with transaction(ctx.sessions) as s:
        data = S.collect(s, repo.get_production(s, ctx.production), night=N)
    rows = {e["expid"]: e for e in data["exposures"]}
    for d in good:
        assert rows[int(d.name)]["status"] == "ingested"
    for d, reason in bad.items():
        row = rows[int(d.name)]
        assert row["status"] == "quarantined" and reason in row["reason"], (d.name, row["reason"])
    assert len(problems) == len(bad) and all("\n" not in line for _, line in problems)


def test_an_error_recording_one_exposure_quarantines_only_that_one(hostile_env, ctx, raw_night, monkeypatch):
    from desinight.db import repo
    real = repo.add_exposure
    victim = int(raw_night[1].name)

    def add(s, prod, **fields):
        if fields["expid"] == victim and fields["status"] == "ingested":
            raise RuntimeError("disk on fire\nsecond line")
        return real(s, prod, **fields)
    monkeypatch.setattr(repo, "add_exposure", add)
    counts = ingest_night(ctx, N, utc_now())
    assert counts == {"ingested": len(raw_night) - 1, "quarantined": 1}
    from desinight import status as S
    from desinight.db.engine import transaction
    with transaction(ctx.sessions) as s:
        rows = {e["expid"]: e for e in S.collect(s, repo.get_production(s, ctx.production), night=N)["exposures"]}
    assert rows[victim]["status"] == "quarantined"
    assert rows[victim]["reason"] == "RuntimeError: disk on fire"


@pytest.mark.slow
def test_one_shot_ingest_reports_each_class_on_one_line_and_lists_odd_dirs(hostile_env, tmp_path):
    root, conf = init_production(tmp_path)
    conf.write_text(conf.read_text() + f"[readers]\ntimeout_s = {H.READER_TIMEOUT_S}\nmemory_mb = 1024\n")
    good = write_night(root / "raw")
    bad = H.every_class(root / "raw", N, tmp_path / "elsewhere")
    odd = H.odd_dirs(root / "raw", N)
    env = {**os.environ, readers.FAULT_ENV: H.fault_env(bad)}
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "ingest", str(N)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 5, r.stderr
    assert "Traceback" not in r.stderr
    assert f"{len(good)} exposures ingested, {len(bad)} quarantined" in r.stdout
    lines = r.stderr.splitlines()
    for d, reason in bad.items():
        assert sum(1 for ln in lines if ln.startswith(f"desinight: ingest: {d}: quarantined: ")
                   and reason in ln) == 1, (d, reason)
    for path, kind in odd.items():
        assert any(ln.startswith(f"desinight: ingest: {path}: {kind}") for ln in lines), (path, kind)
    data = status_json(conf, N)
    listed = {u["path"]: u for u in data["unfinished"]}
    assert {p: u["kind"] for p, u in listed.items()} == {str(p): k for p, k in odd.items()}
    assert "waiting for request" in listed[str(root / "raw" / str(N) / f"{(N - 20000000) * 100 + 90:08d}")]["reason"]
    text = cli(conf, "status").stdout
    assert "seen but not ingested" in text and "0000abcd" in text and "incomplete for" in text


def test_exit_records_count_only_for_their_attempt(hostile_env, cfg, tmp_path):
    from types import SimpleNamespace as A

    def att(i, tag, bid, rec=None, fifo=False):
        d = tmp_path / f"a{i}"
        d.mkdir()
        if fifo:
            os.mkfifo(d / "exit.json")
        elif rec is not None:
            (d / "exit.json").write_text(rec if isinstance(rec, str) else json.dumps(rec))
        return A(id=i, attempt_dir=str(d), comment=tag, backend_id=bid)
    t = "desinight:test:1:1"
    atts = [att(1, t, "11", {"exit_code": 0, "tag": t, "backend_id": "11"}),
            att(2, t, "12", {"exit_code": 1, "tag": "hand", "backend_id": ""}),
            att(3, t, "13", {"exit_code": 1, "tag": t, "backend_id": "99"}),
            att(4, t, "14", fifo=True), att(5, t, "15", "{not json"),
            att(6, t, "16", {"exit_code": 3, "tag": t, "backend_id": "16"})]
    got = read_exits(cfg, atts)
    assert sorted(got) == [1, 6] and got[6]["exit_code"] == 3 and got[1]["state"].value == "completed"


def test_a_tick_error_stays_until_that_tick_succeeds(ctx):
    from desinight.db import repo
    from desinight.db.engine import transaction
    from desinight.service import Daemon
    from desinight import status as S
    d = Daemon(ctx)

    def health():
        with transaction(ctx.sessions) as s:
            return S.collect(s, repo.get_production(s, ctx.production))["health"]

    def boom():
        raise RuntimeError("ingest broke")
    d._guard(boom, "ingest")()
    d._guard(lambda: None, "poll")()         # another tick succeeding clears nothing
    h = health()
    assert h["tick_errors"] == {"ingest": "RuntimeError: ingest broke"}
    assert h["tick_error"] == "ingest: RuntimeError: ingest broke"
    d2 = Daemon(ctx)          # a restart: the error stays until ingest succeeds there
    d2._record_start()
    assert health()["tick_errors"] == {"ingest": "RuntimeError: ingest broke"}
    d2._guard(lambda: None, "ingest")()
    h = health()
    assert h["tick_errors"] == {} and not h["tick_error"]


def test_sightings_are_listed_until_the_directory_is_ingested(hostile_env, ctx):
    """Recorded by the daemon's scan even for a night with nothing ingested (status with no
    night lists them all; --range lists the range's); dropped once ingested."""
    from desinight import rawdata
    from desinight import status as S
    from desinight.db import repo
    from desinight.db.engine import transaction
    from desinight.ingest import note_sightings
    from tests.rawfixture import write_exposure
    odd = H.odd_dirs(ctx.cfg.raw_root, N)
    inc = next(p for p, k in odd.items() if k == "incomplete")
    t0 = utc_now()
    note_sightings(ctx, rawdata.list_exposure_dirs(ctx.cfg.raw_root, N), t0, [N])

    def listed(now, **kw):
        with transaction(ctx.sessions) as s:
            data = S.collect(s, repo.get_production(s, ctx.production), now=now, **kw)
        return {u["path"]: u for u in data["unfinished"]}
    later = t0 + timedelta(minutes=7)
    assert {p: u["kind"] for p, u in listed(later).items()} == {str(p): k for p, k in odd.items()}
    assert listed(later)[str(inc)]["minutes"] == 7
    assert set(listed(later, night_range=(N, N))) == {str(p) for p in odd}
    # the transfer finishes: ingested, no longer listed
    for f in inc.iterdir():
        f.unlink()
    write_exposure(ctx.cfg.raw_root, N, 90, "ZERO")
    assert ingest_night(ctx, N, later)["ingested"] == 1
    assert str(inc) not in listed(later, night=N) and str(odd_key(odd, "unreadable-name")) in listed(later, night=N)


def odd_key(odd, kind):
    return next(p for p, k in odd.items() if k == kind)


@pytest.mark.slow
def test_open_night_with_only_transfers_under_way_exits_zero(hostile_env, tmp_path):
    root, conf = init_production(tmp_path)
    write_night(root / "raw")
    inc = root / "raw" / str(N) / f"{(N - 20000000) * 100 + 90:08d}"
    inc.mkdir()
    r = cli(conf, "ingest", str(N), "--open", check=False)
    assert r.returncode == 0 and f"desinight: ingest: {inc}: incomplete:" in r.stderr
    r = cli(conf, "ingest", str(N), check=False)         # closed: it will never complete
    assert r.returncode == 5 and f"desinight: ingest: {inc}: incomplete:" in r.stderr
