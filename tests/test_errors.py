"""Database, filesystem and config trouble reaches the operator as one line with a documented
exit code (docs/operator-guide.md "Exit codes"), never a traceback, never a password."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from desinight.core.errors import EXIT_CODES
from desinight.errtext import filesystem_error, mask_secrets
from tests.daemonkit import cli, write_config

SECRET = "s3cretpw"


def _one_line_error(res, code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1, res.stderr
    assert err.startswith("desinight: error: ")
    assert SECRET not in res.stderr + res.stdout
    return err


@pytest.mark.parametrize("url,needle", [
    (f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db", "refused"),
    (f"postgresql+psycopg://u:{SECRET}@no-such-host.invalid/db", "no-such-host.invalid"),
    (f"nosuchdialect://u:{SECRET}@host/db", "cannot use database URL"),
])
def test_unusable_database_url_is_one_line_with_password_masked(tmp_path, url, needle):
    conf = write_config(tmp_path, db_url=url)
    err = _one_line_error(cli(conf, "status", check=False), 6)
    assert needle in err and "u:***@" in err


@pytest.mark.postgres
def test_postgres_database_that_does_not_exist(tmp_path):
    from sqlalchemy.engine import make_url
    base = os.environ.get("DESINIGHT_TEST_PG_URL")
    if not base:
        pytest.skip("PostgreSQL not available")
    url = make_url(base).set(password=SECRET, database="no_such_db_for_desinight")
    conf = write_config(tmp_path, db_url=url.render_as_string(hide_password=False))
    err = _one_line_error(cli(conf, "status", check=False), 6)
    assert 'database "no_such_db_for_desinight" does not exist' in err


def test_read_only_sqlite_database(tmp_path):
    conf = write_config(tmp_path)
    cli(conf, "init")
    db = tmp_path / "state" / "desinight.db"
    ro = f"sqlite:///file:{db}?mode=ro&uri=true"
    conf.write_text(conf.read_text().replace('backend = "local"', f'backend = "local"\ndb_url = "{ro}"'))
    (tmp_path / "raw" / "20261124").mkdir(parents=True)
    err = _one_line_error(cli(conf, "ingest", "20261124", "--no-wait", check=False), 6)
    assert "readonly database" in err


def test_unwritable_report_output(tmp_path):
    conf = write_config(tmp_path)
    cli(conf, "init")
    cli(conf, "sim", "night", "--night", "20261124", "--out", str(tmp_path / "raw"))
    cli(conf, "ingest", "20261124", "--no-wait")
    err = _one_line_error(cli(conf, "report", "20261124", "-o", str(conf / "night.html"),
                              check=False), 7)
    assert str(conf) in err


def test_state_dir_that_cannot_exist_is_a_config_error(tmp_path):
    conf = write_config(tmp_path)
    conf.write_text(conf.read_text().replace('state_dir = "state"',
                                             'state_dir = "desinight.toml/state"'))
    err = _one_line_error(cli(conf, "status", check=False), 2)
    assert "desinight.state_dir" in err


def test_non_utf8_config_via_cli(tmp_path):
    conf = tmp_path / "desinight.toml"
    conf.write_bytes(b'[desinight]\nproduction = "caf\xe9"\n')
    _one_line_error(cli(conf, "status", check=False), 2)


def test_full_disk_reads_as_such():
    e = filesystem_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/state/x.db"))
    assert str(e) == "no space left on device: /state/x.db" and e.exit_code == 7


@pytest.mark.parametrize("text,masked", [
    ("postgresql://desi:hunter2@db.nersc.gov/prod", "postgresql://desi:***@db.nersc.gov/prod"),
    ("connect: host=db password=hunter2 user=desi", "connect: host=db password=*** user=desi"),
    ("sqlite:////a/b.db", "sqlite:////a/b.db"),
])
def test_mask_secrets(text, masked):
    assert mask_secrets(text) == masked


def test_exit_code_table_is_documented():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md").read_text()
    section = guide.split("## Exit codes", 1)[1]
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in section, code


def test_status_of_an_unknown_night_exits_3(tmp_path):
    conf = write_config(tmp_path)
    cli(conf, "init")
    err = _one_line_error(cli(conf, "status", "--night", "20261124", check=False), 3)
    assert "night 20261124 is not in production test (no nights yet)" in err
