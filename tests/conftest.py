"""Shared fixtures: databases (SQLite always, PostgreSQL when available), configs, contexts."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from desinight.config import Config

try:  # the SLURM cluster fixtures, when their module is present
    from tests.slurm_fixtures import *  # noqa: F401,F403
except ImportError:
    pass


def _pg_url() -> str | None:
    return os.environ.get("DESINIGHT_TEST_PG_URL")


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def db_url(request, tmp_path):
    """A fresh, empty database URL: SQLite file, or a new PostgreSQL schema-per-test database."""
    yield from _fresh_database(request.param, tmp_path)


@pytest.fixture(scope="module", params=DATABASES)
def module_db_url(request, tmp_path_factory):
    """As ``db_url``, shared by one module's tests (for a set-up done once per module)."""
    yield from _fresh_database(request.param, tmp_path_factory.mktemp("db"))


def _fresh_database(kind: str, tmp_path: Path):
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'desinight.db'}"
        return
    base = _pg_url()
    if not base:
        if os.environ.get("DESINIGHT_REQUIRE_PG") == "1":
            pytest.fail("DESINIGHT_REQUIRE_PG=1 but DESINIGHT_TEST_PG_URL is not set")
        pytest.skip("PostgreSQL not available (set DESINIGHT_TEST_PG_URL; scripts/local-postgres up)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    name = f"dn_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def cfg(tmp_path, db_url) -> Config:
    return Config(production="test", raw_root=tmp_path / "raw", redux_root=tmp_path / "redux",
                  state_dir=tmp_path / "state", db_url=db_url)


@pytest.fixture
def fake_backend():
    from tests.fakes import FakeBackend
    return FakeBackend()


@pytest.fixture
def ctx(cfg, fake_backend):
    from desinight.app import open_context
    from desinight.db import repo
    from desinight.db.engine import transaction
    c = open_context(cfg, backend=fake_backend, create=True)
    with transaction(c.sessions) as s:
        repo.ensure_production(s, cfg.production, str(cfg.raw_root), str(cfg.prod_dir))
    yield c
    c.sessions.kw["bind"].dispose()


@pytest.fixture
def raw_night(cfg) -> list[Path]:
    from tests.rawfixture import write_night
    return write_night(cfg.raw_root)


# --- parallel runs (scripts/test runs the suite on two pytest-xdist workers) -----------------
# Everything that touches the one shared SLURM cluster (or stops a service: the fault suite)
# runs on ONE worker, in order, as a serial run would: the fault tests stop slurmctld/slurmdbd
# and would break a SLURM test running beside them. Every other test is grouped by file, so a
# module-scoped fixture (a simulated night, a processed chain) is built once, not once per worker.
# xdist's own `xdist_group` cannot carry this under pytest 9 (it renames node ids through an
# attribute pytest 9 no longer reads), so: the workers write each test's group to a file while
# they collect, and the controller's scheduler (LoadScope with our scopes) reads it.
_CLUSTER_MARKS = ("slurm", "fault")
_GROUPS_ENV = "DESINIGHT_XDIST_GROUPS"


def pytest_configure(config):
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        import tempfile
        fd, path = tempfile.mkstemp(prefix="desinight-xdist-groups-", suffix=".json")
        os.close(fd)
        os.environ[_GROUPS_ENV] = path      # the workers, started after this, inherit it


def pytest_collection_modifyitems(config, items):
    path = os.environ.get(_GROUPS_ENV)
    if not path or not hasattr(config, "workerinput"):
        return
    import json
    groups = {}
    for item in items:
        on_cluster = any(item.get_closest_marker(m) for m in _CLUSTER_MARKS) or \
            "slurm_cluster" in getattr(item, "fixturenames", ())
        groups[item.nodeid] = "cluster" if on_cluster else item.nodeid.split("::")[0]
    tmp = f"{path}.{config.workerinput['workerid']}"
    Path(tmp).write_text(json.dumps(groups))
    os.replace(tmp, path)       # every worker collects the same tests: the same content


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """LoadScope with the scopes above; read once every worker has collected."""
        _groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                import json
                type(self)._groups = json.loads(Path(os.environ[_GROUPS_ENV]).read_text() or "{}")
            return self._groups.get(nodeid) or nodeid.split("::")[0]

    return GroupScheduling(config, log)
