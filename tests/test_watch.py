"""Discovery: completeness rule, path mapping, observer modes (inotify and polling)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from desinight import watch
from tests.rawfixture import N, write_exposure


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
