"""Helpers to run the real daemon as a subprocess against a temporary production."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from desinight.config import Config
from desinight.core.planner import JOB_KINDS

REPO = Path(__file__).resolve().parent.parent


def fast_templates(dest: Path, run: str = "sleep 0.2", overrides: dict[str, str] | None = None) -> Path:
    """Templates whose jobs run a trivial command: tests the orchestration, not the science."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(Config().templates_dir / "base.sh.j2", dest / "base.sh.j2")
    for kind in JOB_KINDS:
        body = (overrides or {}).get(kind, run)
        (dest / f"{kind}.sh.j2").write_text(
            '{% extends "base.sh.j2" %}{% block run %}' + body + "\n{% endblock %}\n")
    return dest


def write_config(root: Path, backend: str = "local", templates: Path | None = None,
                 db_url: str | None = None, extra: str = "") -> Path:
    conf = root / "desinight.toml"
    lines = ["[desinight]", 'production = "test"', 'raw_root = "raw"', 'redux_root = "redux"',
             'state_dir = "state"', f'backend = "{backend}"']
    if templates:
        lines.append(f'templates_dir = "{templates}"')
    if db_url:
        lines.append(f'db_url = "{db_url}"')
    lines += ["[daemon]", "poll_min_s = 0.5", "poll_max_s = 2.0", "full_scan_s = 5.0", extra]
    conf.write_text("\n".join(lines) + "\n")
    return conf


#: commands that only read (or create) the database and return: `cli` runs them in-process
#: (`cli_inproc`), saving ~1.5 s of start-up each; everything else gets its own process
IN_PROCESS = frozenset({"init", "status", "show", "history"})


def cli(conf: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    if args and args[0] in IN_PROCESS and "--watch" not in args:
        r = cli_inproc(conf, *args)
        if check and r.returncode != 0:
            raise subprocess.CalledProcessError(r.returncode, r.args, r.stdout, r.stderr)
        return r
    return subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), *args],
                          capture_output=True, text=True, check=check, timeout=timeout)


def cli_inproc(conf: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI's own entry point (`desinight.cli.main:main`, what the console script calls),
    in this process: the same argv, exit code and output as `cli`, without the ~1.5 s of
    interpreter and import start-up that a subprocess pays. For one-shot commands only (never
    the daemon: it installs signal handlers and logging)."""
    import contextlib
    import gc
    import io

    from desinight.cli.main import main
    argv = ["--config", str(conf), *args]
    out, err = io.StringIO(), io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    gc.collect()   # the command's engine and its pooled connections go with it
    return subprocess.CompletedProcess(["desinight", *argv], rc, out.getvalue(), err.getvalue())


def start_daemon(conf: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                                stdout=f, stderr=subprocess.STDOUT)


def stop_daemon(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, float]:
    """Signal the daemon and wait for its exit; (exit code, seconds). A daemon that does not
    stop fails here (TimeoutExpired); how fast a clean stop is is a figure for bench/, not a
    bound for a loaded test machine."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=timeout)
    return rc, time.monotonic() - t0


def status_json(conf: Path, night: int | None = None) -> dict:
    """`status --json`; a night the daemon has not seen yet (exit 3) reads as empty."""
    args = ["status", "--json"] + (["--night", str(night)] if night else [])
    r = cli_inproc(conf, *args)   # polled in waits: a subprocess each time would load the box
    if r.returncode == 3 and night and f"night {night} is not in production" in r.stderr:
        return {"night": night, "nights": [], "exposures": [], "jobs": [], "failures": []}
    if r.returncode != 0:
        raise AssertionError(f"status failed ({r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout)


def night_completed(conf: Path, night: int, n: int) -> dict | None:
    """The night's status when all its ``n`` jobs have completed, else None."""
    data = status_json(conf, night)
    states = [j["state"] for j in data["jobs"]]
    return data if len(states) == n and set(states) == {"completed"} else None


def wait_for(pred, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def env_without_slurm() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def attempts_per_job(root: Path, db_url: str | None = None) -> dict[int, int]:
    """{job id: attempts that reached the backend} in the production's database (its SQLite
    file under ``root`` unless ``db_url``): one per job means nothing was submitted twice."""
    from sqlalchemy import create_engine, func, select

    from desinight.db.models import Attempt
    engine = create_engine(db_url or f"sqlite:///{root / 'state' / 'desinight.db'}")
    with engine.connect() as c:
        rows = dict(c.execute(select(Attempt.job_id, func.count()).where(
            Attempt.backend_id.is_not(None)).group_by(Attempt.job_id)).all())
    engine.dispose()
    return rows


def init_production(root: Path, backend: str = "local", db_url: str | None = None) -> tuple[Path, Path]:
    """(root, config) of an initialised production whose jobs sleep briefly (database:
    ``db_url``, else SQLite under ``root``)."""
    conf = write_config(root, backend=backend, templates=fast_templates(root / "templates"),
                        db_url=db_url)
    cli(conf, "init")
    return root, conf
