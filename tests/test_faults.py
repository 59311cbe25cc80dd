"""Fault injection on the local backend (the SLURM faults live in test_slurm_faults.py)."""

from __future__ import annotations

import subprocess
import time

import pytest
from tests.daemonkit import attempts_per_job, cli, night_completed, fast_templates, start_daemon, status_json, stop_daemon, wait_for, write_config
from tests.rawfixture import N, write_exposure, write_night

pytestmark = [pytest.mark.slow, pytest.mark.fault]


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_state_dir_is_survived_and_caught_up(tmp_path, tmpfs):
    root = tmpfs
    conf = write_config(root, templates=fast_templates(tmp_path / "templates"))
    conf.write_text(conf.read_text().replace('raw_root = "raw"', f'raw_root = "{tmp_path / "raw"}"'))
    cli(conf, "init")
    proc = start_daemon(conf, tmp_path / "daemon.out")
    filler = root / "filler"
    try:
        time.sleep(2)
        # fill the disk, then let the night arrive
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        write_night(tmp_path / "raw")
        time.sleep(6)
        assert proc.poll() is None, "the daemon died of a full disk"
        log = (tmp_path / "daemon.out").read_text() + (root / "state" / "daemon-test.log").read_text()
        assert "tick_failed" in log or "disk is full" in log or "No space left" in log
        filler.unlink()
        wait_for(lambda: night_completed(conf, N, 11), 120, what="catch-up after the disk frees")
        assert status_json(conf, N)["health"]["tick_error"] is None
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert set(attempts_per_job(root).values()) == {1}


def test_corrupted_raw_file_is_quarantined_and_the_night_goes_on(tmp_path):
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "templates"))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    bad = write_exposure(tmp_path / "raw", N, 9, "SCIENCE", 2000)
    raw = bad / f"desi-{bad.name}.fits.fz"
    data = bytearray(raw.read_bytes())
    for i in range(5800, len(data) - 100, 7):      # scramble compressed tiles, keep headers
        data[i] ^= 0x5A
    raw.write_bytes(bytes(data))
    assert cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False).returncode == 5
    data = status_json(conf, N)
    bad_row = [e for e in data["exposures"] if e["expid"] == int(bad.name)][0]
    assert bad_row["status"] == "quarantined" and bad_row["reason"]
    assert {j["state"] for j in data["jobs"]} == {"completed"} and len(data["jobs"]) == 11
    assert any(f.get("exposure") == int(bad.name) for f in data["failures"])
