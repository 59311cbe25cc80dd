"""Fault injection on the local backend (the SLURM faults live in test_slurm_faults.py)."""

from __future__ import annotations

import subprocess

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


DISK_FULL = ("tick_failed", "disk is full", "No space left")


# On SQLite the database itself is on the full disk; on PostgreSQL it is not, so the state
# writes succeed while the production's files (scripts, logs) fail: both must catch up.
def test_disk_full_on_state_dir_is_survived_and_caught_up(tmp_path, tmpfs, db_url):
    root = tmpfs
    sqlite = db_url.startswith("sqlite")
    conf = write_config(root, templates=fast_templates(tmp_path / "templates"),
                        db_url=None if sqlite else db_url)
    conf.write_text(conf.read_text().replace('raw_root = "raw"', f'raw_root = "{tmp_path / "raw"}"'))
    cli(conf, "init")
    proc = start_daemon(conf, tmp_path / "daemon.out")
    filler = root / "filler"

    def disk_error_logged():
        logs = [tmp_path / "daemon.out", root / "state" / "daemon-test.log"]
        text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
        return any(w in text for w in DISK_FULL)

    try:
        wait_for(lambda: status_json(conf)["health"]["daemon_running"], 60, what="the daemon up")
        # fill the disk, then let the night arrive
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        write_night(tmp_path / "raw")
        wait_for(disk_error_logged, 60, what="the full disk reported in the log")
        assert proc.poll() is None, "the daemon died of a full disk"
        filler.unlink()
        wait_for(lambda: night_completed(conf, N, 11), 120, what="catch-up after the disk frees")
        assert status_json(conf, N)["health"]["tick_error"] is None
        rc, _ = stop_daemon(proc)
        assert rc == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert set(attempts_per_job(root, None if sqlite else db_url).values()) == {1}


# SQLite only: the fault is in the raw file, not the database; quarantining corrupt raw data
# on PostgreSQL is proven by test_hostile_daemon.py's PostgreSQL run.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_corrupted_raw_file_is_quarantined_and_the_night_goes_on(tmp_path, db_url):
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
