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
    ('[daemon]\ncampaign_tick_s = 0\n', "daemon.campaign_tick_s must be > 0"),
    ('[slurm]\nkill_on_invalid_dep = "yes"\n', "slurm.kill_on_invalid_dep must be true or false"),
    ('[desinight\n', "not valid TOML"),
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
