"""Render a job's batch script from ``slurm_templates/`` (one base, one file per kind).

Every value that reaches the shell goes through ``shlex.quote`` (the ``q`` filter and
``join_argv``), so paths with spaces, quotes or ``;`` cannot inject commands.
"""

from __future__ import annotations

import os
import re
import shlex
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import jinja2

from .base import Resources

_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def job_name(production: str, job_id: int, kind: str) -> str:
    """SLURM job name: short, shell- and #SBATCH-safe, tags the production."""
    return _NAME_SAFE.sub("_", f"dn-{production}-{job_id}-{kind}")[:100]


@lru_cache(maxsize=8)
def _env(templates_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["q"] = lambda v: shlex.quote(str(v))
    # Comment lines: a newline in a value would end the comment and run the rest.
    env.filters["c"] = lambda v: re.sub(r"[\x00-\x1f\x7f]", "?", str(v))
    env.filters["join_argv"] = lambda argv: shlex.join(str(a) for a in argv)
    return env


def step_command(python: str, kind: str, night: int, expids: Sequence[int], tileid: int | None,
                 cameras: str, calib_night: int | None, bad_amps: str = "",
                 calib_nights: str | None = None) -> list[str]:
    """The one command a job runs: all its tasks in one interpreter (one Python start-up)."""
    argv = [python, "-m", "desinight", "step", "run", kind, "--night", str(night)]
    if expids:
        argv += ["--expids", ",".join(str(e) for e in expids)]
    if tileid is not None:
        argv += ["--tile", str(tileid)]
    if cameras:
        argv += ["--cameras", cameras]
    if calib_night is not None:
        argv += ["--calib-night", str(calib_night)]
    if calib_nights:   # `calib use --cameras`: b3=20261123,... (one argv word, quoted by join_argv)
        argv += ["--calib-nights", calib_nights]
    if bad_amps:   # `desinight exposure --bad-amps`: preproc masks these amplifiers
        argv += ["--bad-amps", bad_amps]
    return argv


def render_script(templates_dir: Path, kind: str, *, job_key: str, job_name: str, attempt: int,
                  production: str, attempt_dir: Path, script_path: Path, raw_root: Path,
                  redux_root: Path, command: Sequence[str], resources: Resources,
                  launcher: str = "", extra_env: Sequence[tuple[str, str]] = (),
                  now: datetime | None = None, tag: str = "") -> str:
    template = _env(str(templates_dir)).get_template(f"{kind}.sh.j2")
    return template.render(
        job_key=job_key, job_name=job_name, attempt=attempt, production=production,
        attempt_dir=attempt_dir, script_path=script_path, raw_root=raw_root,
        redux_root=redux_root, command=list(command), res=resources,
        launcher=" ".join(shlex.quote(w) for w in shlex.split(launcher)) + " " if launcher else "",
        extra_env=list(extra_env), tag=tag,
        rendered_at=(now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"))


def write_script(path: Path, text: str) -> None:
    """Atomic write (temp + rename), executable: a crash never leaves half a script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
