"""Discovery: completeness rule, path mapping, observer modes (inotify and polling)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from desinight import watch
from tests.daemonkit import (cli, fast_templates, start_daemon, status_json, stop_daemon, wait_for,
                             write_config)
from tests.prockit import inotify_watches, rss_mb
from tests.rawfixture import N, write_exposure


def init_production(root: Path, extra: str = "") -> tuple[Path, Path]:
    conf = write_config(root, templates=fast_templates(root / "templates"), extra=extra)
    cli(conf, "init")
    return root, conf


def daemon_log(root: Path) -> str:
    p = root / "state" / "daemon-test.log"
    return p.read_text(errors="replace") if p.exists() else ""


def test_exposure_dir_of(tmp_path):
    assert watch.exposure_dir_of(tmp_path, tmp_path / "20261124" / "26112400" / "desi-26112400.fits.fz") \
        == tmp_path / "20261124" / "26112400"
    assert watch.exposure_dir_of(tmp_path, tmp_path / "truth" / "x.fits") is None
    assert watch.exposure_dir_of(tmp_path, tmp_path / "20261124") is None


def test_complete_only_when_stable_across_two_looks(tmp_path):
    d = write_exposure(tmp_path, N, 0, "ZERO")
    st = watch.Stability()
    assert not st.look(d)          # first look: nothing to compare with
    assert st.look(d)              # unchanged: complete
    raw = d / f"desi-{d.name}.fits.fz"
    with open(raw, "ab") as f:
        f.write(b"\0" * 2880)      # still growing
    assert not st.look(d)
    assert st.look(d)


def test_not_complete_without_request_file(tmp_path):
    d = write_exposure(tmp_path, N, 0, "ZERO")
    (d / f"request-{d.name}.json").unlink()
    st = watch.Stability()
    st.look(d)
    assert not st.look(d)


def test_auto_mode_polls_on_network_filesystems(monkeypatch, tmp_path):
    monkeypatch.setattr(watch, "fs_type", lambda p: "lustre")
    assert watch.choose_mode("auto", tmp_path) == "polling"
    monkeypatch.setattr(watch, "fs_type", lambda p: "ext4")
    assert watch.choose_mode("auto", tmp_path) == "native"
    assert watch.choose_mode("polling", tmp_path) == "polling"


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_observer_reports_new_exposures(tmp_path, mode):
    cands = watch.Candidates()
    obs = watch.start_observer(tmp_path, mode, cands, poll_s=0.2)
    try:
        time.sleep(0.3)
        d = write_exposure(tmp_path, N, 0, "ZERO")
        assert cands.event.wait(5), "no event"
        deadline = time.monotonic() + 5
        got: set[Path] = set()
        while d not in got and time.monotonic() < deadline:
            got |= cands.drain()
            time.sleep(0.1)
        assert d in got
    finally:
        obs.stop()


# --- the window of watched nights (issue 18 item 0) ------------------------------------------

def make_old_nights(raw: Path, nights: int, exposures: int = 2) -> list[int]:
    """``nights`` consecutive nights ending 20261123, each with empty exposure dirs."""
    from datetime import date, timedelta
    last = date(2026, 11, 23)
    out = []
    for i in range(nights):
        night = int((last - timedelta(days=nights - 1 - i)).strftime("%Y%m%d"))
        for j in range(exposures):
            (raw / str(night) / f"{(night - 20000000) * 100 + 90 + j:08d}").mkdir(parents=True)
        out.append(night)
    return out


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_watcher_follows_a_window_of_recent_nights(tmp_path, mode):
    raw = tmp_path / "raw"
    old = make_old_nights(raw, 300)
    cands = watch.Candidates()
    w = watch.start_watcher(raw, mode, cands, poll_s=0.1, back=1)
    try:
        assert w.watched() == [raw, raw / str(old[-2]), raw / str(old[-1])]
        d = write_exposure(raw, N, 0, "ZERO")           # a new night: 20261124
        wait_until(lambda: raw / str(N) in w.watched(), what="the new night watched")
        assert w.watched() == [raw, raw / str(old[-1]), raw / str(N)]    # the oldest dropped
        wait_until(lambda: d in cands.drain(), what="the new night's exposure")
    finally:
        w.stop()


def test_polling_watcher_lists_only_the_watched_nights(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    old = make_old_nights(raw, 300)
    w = watch.PollingWatcher(raw, watch.Candidates(), back=1)
    w.poll_once(initial=True)
    listed: list[str] = []
    real = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202
        listed.append(str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    w.poll_once()
    w.poll_once()
    watched_nights = {str(raw / str(n)) for n in old[-2:]}
    assert listed and all(p in watched_nights or os.path.dirname(p) in watched_nights for p in listed)
    assert str(raw) not in listed       # the root is listed only when its mtime changes


@pytest.mark.slow
def test_daemon_holds_inotify_watches_for_recent_nights_only(tmp_path):
    root, conf = init_production(tmp_path)
    raw = root / "raw"
    make_old_nights(raw, 300, exposures=2)
    proc = start_daemon(conf, root / "daemon.out")
    try:
        # the raw root, the 2 latest nights and their 2 exposure dirs each: 7, not 901
        wait_for(lambda: inotify_watches(proc.pid) == 7, 30, interval=0.2, what="7 inotify watches")
        write_exposure(raw, N, 0, "ZERO")      # a new night: the window moves by one
        # root + 20261123 and its 2 dirs + 20261124 and its 1 dir; 20261122 is dropped
        wait_for(lambda: inotify_watches(proc.pid) == 6, 30, interval=0.2, what="6 inotify watches")
        assert "event=watching nights=20261123,20261124" in daemon_log(root)
    finally:
        stop_daemon(proc)


@pytest.mark.slow
def test_daemon_polls_recent_nights_only(tmp_path):
    """With `watch_nights = 2`: the latest night and 2 before it, polled every 0.5 s."""
    root, conf = init_production(tmp_path, extra='watch = "polling"\nwatch_nights = 2\nwatch_poll_s = 0.5')
    make_old_nights(root / "raw", 300, exposures=2)
    proc = start_daemon(conf, root / "daemon.out")
    try:
        wait_for(lambda: "event=watching nights=20261121,20261122,20261123" in daemon_log(root), 30,
                 interval=0.2, what="the polling watcher on the 3 latest nights")
        assert inotify_watches(proc.pid) == 0
        write_exposure(root / "raw", N, 0, "ZERO")
        wait_for(lambda: "event=watching nights=20261122,20261123,20261124" in daemon_log(root), 30,
                 interval=0.2, what="the window moved")
    finally:
        stop_daemon(proc)


# --- reaction (issue 18 item 1) ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["native", "polling"])
def test_complete_exposure_is_ingested_on_its_marker(tmp_path, mode):
    """The request file (written last) triggers the ingest: one look, no second tick."""
    root, conf = init_production(tmp_path, extra=f'watch = "{mode}"')
    proc = start_daemon(conf, root / "daemon.out")
    try:
        wait_for(lambda: "event=daemon_started" in daemon_log(root), 30, interval=0.1, what="start")
        # the first exposure creates the night (the window moves), the second lands in it
        for seq, obstype in enumerate(["ZERO", "ARC"]):
            t0 = time.time()
            d = write_exposure(root / "raw", N, seq, obstype)
            wait_for(lambda: f"dir={d} via=marker" in daemon_log(root), 20, interval=0.05,
                     what=f"{d.name} taken as complete on its marker")
            exp = wait_for(lambda: [e for e in status_json(conf, N)["exposures"]
                                    if e["expid"] == int(d.name)], 10, what=f"{d.name} recorded")
            arrived = datetime.fromisoformat(exp[0]["arrived_at"])
            arrived = arrived if arrived.tzinfo else arrived.replace(tzinfo=timezone.utc)
            assert arrived.timestamp() - t0 < 5       # loose: the figure is in bench_latency
    finally:
        stop_daemon(proc)


def transfer(staging: Path, raw: Path, seq: int, obstype: str, good_checksum: bool) -> Path:
    """As a transfer does it: raw file, then checksum file, then the request file renamed
    into place last."""
    import hashlib
    src = write_exposure(staging, N, seq, obstype)
    d = raw / str(N) / src.name
    d.mkdir(parents=True, exist_ok=True)
    fits = f"desi-{src.name}.fits.fz"
    (src / fits).rename(d / fits)
    digest = hashlib.sha256((d / fits).read_bytes()).hexdigest() if good_checksum else "0" * 64
    (d / f"checksum-{src.name}.sha256").write_text(f"{digest}  {fits}\n")
    (src / f"request-{src.name}.json").rename(d / f"request-{src.name}.json")
    return d


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["native", "polling"])
def test_request_renamed_into_place_ingests_at_once_and_checksums_are_verified(tmp_path, mode):
    root, conf = init_production(tmp_path, extra=f'watch = "{mode}"')
    (root / "raw" / str(N)).mkdir(parents=True)
    proc = start_daemon(conf, root / "daemon.out")
    try:
        wait_for(lambda: "event=daemon_started" in daemon_log(root), 30, interval=0.1, what="start")
        good = transfer(root / "staging", root / "raw", 0, "ZERO", good_checksum=True)
        bad = transfer(root / "staging", root / "raw", 1, "ARC", good_checksum=False)
        for d in (good, bad):
            wait_for(lambda: f"dir={d} via=marker" in daemon_log(root), 20, interval=0.05,
                     what=f"{d.name} taken as complete on its marker")
        exps = wait_for(lambda: (lambda e: e if len(e) == 2 else None)(status_json(conf, N)["exposures"]),
                        20, what="both exposures recorded")
        by_id = {e["expid"]: e for e in exps}
        assert by_id[int(good.name)]["status"] != "quarantined"
        assert by_id[int(bad.name)]["status"] == "quarantined"
        assert "checksum mismatch" in by_id[int(bad.name)]["reason"]
    finally:
        stop_daemon(proc)


def test_request_file_before_the_raw_file_is_not_complete(tmp_path):
    """Out of order (request first): the marker alone is not enough; once the raw file is
    there the directory is complete, and a marker supersedes a plain change."""
    cands = watch.Candidates()
    st = watch.Stability()
    d = tmp_path / str(N) / "26112400"
    d.mkdir(parents=True)
    (d / "request-26112400.json").write_text("{}")
    assert not st.present(d)
    (d / "desi-26112400.fits.fz").write_bytes(b"x")
    assert st.present(d)
    cands.complete(d)
    cands.add(d)
    assert cands.drain_split() == (set(), {d}) and cands.wake.is_set()


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_marker_close_or_rename_marks_complete_other_changes_do_not(tmp_path, mode):
    raw = tmp_path / "raw"
    d = raw / str(N) / "26112400"
    d.mkdir(parents=True)
    cands = watch.Candidates()
    w = watch.start_watcher(raw, mode, cands, poll_s=0.1)
    try:
        (d / "desi-26112400.fits.fz").write_bytes(b"x" * 100)
        wait_until(lambda: d in cands.drain(), what="the raw file seen")
        assert not cands.wake.is_set()
        (d / ".request.tmp").write_text("{}")
        (d / ".request.tmp").rename(d / "request-26112400.json")
        wait_until(cands.wake.is_set, what="the marker seen")
        assert d in cands.drain_split()[1]
    finally:
        w.stop()


# --- symlink loops (issue 12 item 3) -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["native", "polling"])
def test_symlink_loops_are_not_followed_and_memory_stays_bounded(tmp_path, mode):
    # full scans every 1 s and poller looks every 0.2 s: the 3 s window below holds 3 scans
    # and ~15 looks (the old 12 s window at the default 5 s / 1 s held 2 and 12)
    root, conf = init_production(tmp_path, extra=f'watch = "{mode}"\nwatch_poll_s = 0.2')
    conf.write_text(conf.read_text().replace("full_scan_s = 5.0", "full_scan_s = 1.0"))
    raw = root / "raw"
    loopdir = raw / str(N) / "00000123"
    loopdir.mkdir(parents=True)
    (loopdir / "loop").symlink_to("..")               # RAW/NIGHT/00000123/loop -> ..
    (loopdir / "slash").symlink_to("/")
    (raw / str(N) / "00000124").symlink_to("/")       # an exposure dir that is a link to /
    (raw / "20261125").symlink_to(raw)                # a night that is a link to the root
    proc = start_daemon(conf, root / "daemon.out")
    try:
        wait_for(lambda: "event=daemon_started" in daemon_log(root), 30, interval=0.1, what="start")
        d = write_exposure(raw, N, 0, "ZERO")
        (d / "loop").symlink_to("../..")
        wait_for(lambda: status_json(conf, N)["exposures"], 30, what="the good exposure ingested")
        start_rss = rss_mb(proc.pid)
        # several looks of the poller and full scans: memory must not grow
        peak, deadline = start_rss, time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.5)
        assert peak - start_rss < 30 and peak < 400, (start_rss, peak)
        assert [e["expid"] for e in status_json(conf, N)["exposures"]] == [int(d.name)]
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_scan_and_layout_never_enter_links(tmp_path):
    raw = tmp_path / "raw"
    good = write_exposure(raw, N, 0, "ZERO")
    (good / "loop").symlink_to("..")
    (raw / str(N) / "26112401").symlink_to("/")
    (raw / "20261125").symlink_to(raw)
    assert watch.night_names(raw) == [N]
    assert watch.scan_recent(raw, 2) == [good]


@pytest.mark.parametrize("key,value", [("watch_nights", "-1"), ("watch_nights", "31"),
                                       ("watch_poll_s", "0"), ("watch_nights", '"two"')])
def test_watch_settings_are_range_checked(tmp_path, key, value):
    conf = write_config(tmp_path, extra=f"{key} = {value}")
    r = cli(conf, "status", check=False)
    assert r.returncode != 0 and f"daemon.{key}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
