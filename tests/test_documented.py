"""Documented behaviour the audit found untested (issue 19): `show night`, `show job --lines`,
`resubmit --night N --failed`, and config precedence (--config over $DESINIGHT_CONFIG over
./desinight.toml; flags over the file)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

FIVE_LINES = "for i in 1 2 3 4 5; do echo line-$i; done; exit 3"


def test_show_night_show_job_lines_and_resubmit_night_failed(tmp_path):
    conf = write_config(tmp_path, templates=fast_templates(tmp_path / "tpl",
                                                          overrides={"stdstars": FIVE_LINES}))
    cli(conf, "init")
    write_night(tmp_path / "raw")
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)
    night = cli(conf, "show", "night", str(N)).stdout
    assert f"night {N}" in night and "26112403" in night and "stdstars/1000" in night
    r = cli(conf, "show", "night", "20261201", check=False)
    assert r.returncode == 3 and "not in production test" in r.stderr
    shown = cli(conf, "show", "job", f"{N}/stdstars/1000", "--lines", "2").stdout
    assert "last 2 lines of the log" in shown
    assert "line-4" in shown and "line-5" in shown and "line-3" not in shown
    r = cli(conf, "resubmit", "--night", str(N), check=False)
    assert r.returncode == 1 and "--night needs --failed" in r.stderr
    out = cli(conf, "resubmit", "--night", str(N), "--failed").stdout
    # the failed job and everything broken below it, nothing that completed
    assert out.startswith("resubmitted 4 jobs") and f"{N}/stdstars/1000" in out
    assert f"{N}/psfnight" not in out


def test_config_precedence(tmp_path):
    def config(where, production: str):
        where.mkdir(parents=True, exist_ok=True)
        (where / "desinight.toml").write_text(
            f'[desinight]\nproduction = "{production}"\nstate_dir = "state"\n')
        return where / "desinight.toml"

    local, named, explicit = config(tmp_path, "local"), config(tmp_path / "env", "named"), \
        config(tmp_path / "flag", "explicit")

    def init(*args: str, env_config: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("DESINIGHT_CONFIG", "SPECPROD")}
        if env_config:
            env["DESINIGHT_CONFIG"] = env_config
        r = subprocess.run([sys.executable, "-m", "desinight", *args, "init"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.split(" production ", 1)[1].split(":", 1)[0]

    assert init() == "local"                                            # ./desinight.toml
    assert init(env_config=str(named)) == "named"                       # $DESINIGHT_CONFIG
    assert init("--config", str(explicit), env_config=str(named)) == "explicit"   # --config
    assert init("--config", str(explicit), "--production", "flagged") == "flagged"  # flag > file
    assert local.exists()
