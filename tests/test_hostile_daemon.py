"""Issue 12, the daemon: a realtime simulated night with every bad-data mode, plus every
hostile class (segfaulting and hanging readers, special files, values beyond a column,
path escapes, symlink loops, odd directories), in both watch modes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from desinight import readers
from desinight.sim import simulate_night
from desinight.sim.badmodes import BAD_MODES
from tests import hostiledata as H
from tests.daemonkit import cli, fast_templates, status_json, stop_daemon, wait_for, write_config
from tests.rawfixture import N

pytestmark = pytest.mark.slow

#: the simulated night's 5.7 hours in about 10 s
REALTIME = 2000.0
#: what the daemon's resident memory must stay under (it holds state, not data)
MAX_RSS_MB = 400
#: kinds a directory the daemon never hands to a reader is listed with
NEVER_READY = {"special-file", "escape", "loop"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def maps_fitsio(pid: int) -> bool:
    return "fitsio" in Path(f"/proc/{pid}/maps").read_text()


#: both watch modes and both databases, each once (four combinations proved nothing the two
#: don't: the watch mode and the database meet only through the ingest tick)
MODE_DB = [("native", "sqlite"), pytest.param("polling", "postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("mode,db_url", MODE_DB, indirect=["db_url"])
def test_daemon_survives_a_hostile_realtime_night(tmp_path, mode, db_url):
    """On SQLite and PostgreSQL (where TILEID/SEQNUM = 2**40 would abort a transaction)."""
    root = tmp_path
    conf = write_config(root, templates=fast_templates(root / "templates"), db_url=db_url,
                        extra=f'watch = "{mode}"\nsettle_s = 2.0\n'
                              f"[readers]\ntimeout_s = {H.READER_TIMEOUT_S}\nmemory_mb = 1024")
    cli(conf, "init")
    raw = root / "raw"
    # the hostile exposures are built aside, their reader faults known before the daemon starts
    stage = root / "stage"
    bad = H.every_class(stage, N, root / "elsewhere", first_seq=40)
    env = {**os.environ, readers.FAULT_ENV: H.fault_env(bad)}
    with open(root / "daemon.out", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    rss: list[float] = []
    try:
        sim = threading.Thread(target=simulate_night, args=(N, raw), daemon=True,
                               kwargs=dict(preset="small", seed=1, realtime=REALTIME, bad=BAD_MODES,
                                           truth_dir=root / "truth"))
        sim.start()
        (raw / str(N)).mkdir(parents=True, exist_ok=True)
        time.sleep(1)
        # hostile exposures arrive whole (rename), odd directories appear in place
        for d in sorted(bad):
            os.rename(d, raw / str(N) / d.name)
        os.rename(stage / str(N) / "outside.txt", raw / str(N) / "outside.txt")
        bad = {raw / str(N) / d.name: reason for d, reason in bad.items()}
        odd = H.odd_dirs(raw, N)
        sim.join(timeout=180)
        assert not sim.is_alive()
        expids = sorted(int(p.name) for p in (raw / str(N)).iterdir()
                        if p.name.isdigit() and p.is_dir() and not p.is_symlink() and p not in odd)

        def settled():
            rss.append(rss_mb(proc.pid))
            assert proc.poll() is None, "daemon died"
            data = status_json(conf, N)
            rows = {e["expid"]: e for e in data["exposures"]}
            listed = {u["path"]: u for u in data["unfinished"]}
            rejected = {r["path"] for r in data["rejections"]}
            for e in expids:
                path = str(raw / str(N) / f"{e:08d}")
                waiting = path not in listed or listed[path]["kind"] == "incomplete"
                if e not in rows and waiting and path not in rejected:
                    return None
            states = {j["state"] for j in data["jobs"]}
            if not data["jobs"] or states != {"completed"}:
                return None
            if any(str(p) not in listed for p in odd):
                return None
            return data
        data = wait_for(settled, 240, interval=1.0, what="every exposure settled and every job completed")
        rows = {e["expid"]: e for e in data["exposures"]}
        listed = {u["path"]: u for u in data["unfinished"]}
        # the simulator's bad modes: quarantined (duplicate rejected, missing camera excluded)
        by_mode = dict(zip(BAD_MODES, range(26112406, 26112412)))
        for mode_name, e in by_mode.items():
            if mode_name == "duplicate-expid":   # header EXPID of another directory
                assert rows[e]["status"] == "quarantined" and "does not match" in rows[e]["reason"]
            elif mode_name == "missing-camera":
                assert rows[e]["status"] != "quarantined" and rows[e]["bad_cameras"]
            else:
                assert rows[e]["status"] == "quarantined" and rows[e]["reason"], mode_name
        # every hostile class: quarantined with its reason, or listed with why
        for d, reason in bad.items():
            row = rows.get(int(d.name))
            if row is not None:
                assert row["status"] == "quarantined" and reason in row["reason"], (d.name, row)
            else:
                assert listed[str(d)]["kind"] in NEVER_READY, (d.name, listed.get(str(d)))
        for sign in ("reader crashed (SIGSEGV)", f"reader timed out after {H.READER_TIMEOUT_S} s",
                     "beyond the database column's range"):
            assert any(sign in (r["reason"] or "") for r in rows.values()), sign
        for path, kind in odd.items():
            assert listed[str(path)]["kind"] == kind
        assert data["health"]["tick_errors"] == {}
        # good data all processed
        good = [r for e, r in rows.items() if e < 26112406]
        assert len(good) == 6 and all(r["progress"] == "done" for r in good)
        # alive, bounded, and fitsio never loaded into the daemon
        assert proc.poll() is None
        assert max(rss) < MAX_RSS_MB, rss
        assert not maps_fitsio(proc.pid)
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_sigterm_stops_the_daemon_while_a_reader_hangs(tmp_path):
    """Reader time limit of 10 minutes, a reader hanging on an exposure: SIGTERM still
    stops the daemon within 10 s (the readers are stopped first), and no reader is left."""
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "templates"),
                        extra="[readers]\ntimeout_s = 600")
    cli(conf, "init")
    d = H.write_exposure(tmp_path / "raw", N, 0, "ZERO")
    env = {**os.environ, readers.FAULT_ENV: f"{d.name}:hang"}
    with open(tmp_path / "daemon.out", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def hanging_reader():
            for c in children(proc.pid):
                try:
                    if "nanosleep" in Path(f"/proc/{c}/wchan").read_text() or \
                            "hrtimer" in Path(f"/proc/{c}/wchan").read_text():
                        return c
                except OSError:
                    pass
            return None
        reader = wait_for(hanging_reader, 60, interval=0.2, what="a reader hanging on the exposure")
        rc, _ = stop_daemon(proc)
        assert rc == 0
        assert not Path(f"/proc/{reader}").exists() or "Z" in Path(f"/proc/{reader}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
