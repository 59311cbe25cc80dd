"""Configuration: precedence, relative paths, one clear error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from desinight.config import load_config
from desinight.core.errors import ConfigError


def test_defaults_are_embedded(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.backend == "local" and cfg.production == "daily"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'state' / 'desinight.db'}"


def test_survey_environment_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={"DESI_SPECTRO_DATA": "/raw", "DESI_SPECTRO_REDUX": "/redux",
                           "SPECPROD": "loa"})
    assert cfg.raw_root == Path("/raw") and cfg.prod_dir == Path("/redux/loa")


def test_file_found_by_env_and_relative_to_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "etc" / "desinight.toml"
    conf.parent.mkdir()
    conf.write_text('[desinight]\nraw_root = "raw"\nbackend = "slurm"\n[kinds.science]\nntasks = 8\n')
    cfg = load_config(env={"DESINIGHT_CONFIG": str(conf), "DESI_SPECTRO_DATA": "/ignored"})
    assert cfg.raw_root == tmp_path / "etc" / "raw"
    assert cfg.backend == "slurm" and cfg.kinds == {"science": {"ntasks": 8}}


@pytest.mark.parametrize("body,needle", [
    ('[desinight]\nbackend = "pbs"\n', "desinight.backend must be one of local, slurm"),
    ('[desinight]\nmax_attempts = "3"\n', "desinight.max_attempts must be int"),
    ('[desinight]\nraw_rooot = "x"\n', "unknown key desinight.raw_rooot"),
    ('[dameon]\nwatch = "auto"\n', "unknown section [dameon]"),
    ('[daemon]\nwatch = "inotify"\n', "daemon.watch must be one of auto, native, polling"),
    ('[kinds.sciense]\nntasks = 2\n', "unknown job kind [kinds.sciense]"),
    ('[kinds.science]\nntasks = 0\n', "kinds.science.ntasks"),
    ('[desinight]\nproduction = "a/b"\n', "desinight.production must be a plain name"),
    ('[daemon]\ncampaign_tick_s = 0.001\n', "daemon.campaign_tick_s must be between 0.5 and 86400, got 0.001"),
    ('[slurm]\nkill_on_invalid_dep = "yes"\n', "slurm.kill_on_invalid_dep must be true or false"),
    ('[readers]\nworkers = 0\n', "readers.workers must be between 1 and 64, got 0"),
    ('[readers]\ntimeout_s = 0\n', "readers.timeout_s must be between 0.1 and 3600, got 0"),
    ('[readers]\nmemory_mb = 100\n', "readers.memory_mb must be between 256 and 1048576, got 100"),
    ('[readers]\nmemory_mb = "2G"\n', "readers.memory_mb must be int"),
    ('[desinight\n', "not valid TOML"),
    ('[daemon]\nfull_scan_s = 0\n', "daemon.full_scan_s must be between 1 and 86400, got 0"),
    ('[daemon]\nsettle_s = -1\n', "daemon.settle_s must be between 0 and 86400, got -1"),
    ('[daemon]\npoll_min_s = 0\n', "daemon.poll_min_s must be between 0.1 and 3600, got 0"),
    ('[daemon]\npoll_min_s = 10\npoll_max_s = 5\n', "daemon.poll_min_s must be <= daemon.poll_max_s"),
    ('[desinight]\nmax_attempts = 0\n', "desinight.max_attempts must be between 1 and 100, got 0"),
    ('[local]\ncpus = 0\n', "local.cpus must be between 1 and 4096, got 0"),
    ('[desinight]\ntemplates_dir = "no-such-dir"\n', "holds no base.sh.j2"),
    ('[desinight]\nstate_dir = "desinight.toml/state"\n', "desinight.toml is not a directory"),
    ('[desinight]\nredux_root = "desinight.toml"\n', "exists and is not a directory"),
])
def test_invalid_config_names_the_key(tmp_path, body, needle):
    conf = tmp_path / "desinight.toml"
    conf.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_config(conf, env={})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_non_utf8_config_is_one_line(tmp_path):
    conf = tmp_path / "desinight.toml"
    conf.write_bytes(b'[desinight]\nproduction = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text") as e:
        load_config(conf, env={})
    assert "\n" not in str(e.value)


def test_reader_limits_from_the_file(tmp_path):
    conf = tmp_path / "desinight.toml"
    conf.write_text("[readers]\nworkers = 3\ntimeout_s = 12\nmemory_mb = 1024\n")
    cfg = load_config(conf, env={})
    assert (cfg.reader_workers, cfg.reader_timeout_s, cfg.reader_memory_mb) == (3, 12.0, 1024)
