"""The read-only commands start light (issue 18 item 5): `desinight status --json` and
`campaign status --json` import neither the daemon nor the backends nor the science code,
and the lazy command tree (cli/main.py LAZY) still knows every command."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from desinight.cli import main as M
from tests.daemonkit import cli, write_config

#: what `status` must not pay for: the orchestrator, the daemon, the batch backends, the
#: campaign planner, the table renderer (only when printing) and the science stack
HEAVY = ("desinight.orchestrate", "desinight.service", "desinight.batch", "desinight.campaign",
         "desinight.app", "apscheduler", "watchdog", "rich", "numpy", "fitsio", "astropy")


def _modules_after(conf, *args: str) -> tuple[int, set[str]]:
    """Run the CLI in a fresh interpreter; its exit code and the modules it had loaded."""
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(sys.modules))))\n"
            "from desinight.cli.main import main\n"
            f"main({['--config', str(conf), *args]!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("MODULES="))
    return r.returncode, set(json.loads(line[len("MODULES="):]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.slow
def test_status_json_and_campaign_status_import_no_daemon_code(tmp_path):
    conf = write_config(tmp_path)
    cli(conf, "init")
    rc, mods = _modules_after(conf, "status", "--json")
    assert rc == 0 and "desinight.status" in mods
    assert not _heavy(mods), _heavy(mods)
    rc, mods = _modules_after(conf, "campaign", "status", "nope", "--json")
    assert rc == 3 and "desinight.db.stats" in mods      # no campaign named 'nope'
    assert not _heavy(mods), _heavy(mods)
    rc, mods = _modules_after(conf, "status")             # the table: rich, still no daemon
    assert rc == 0 and "rich" in mods
    assert not _heavy(mods - {m for m in mods if m.split(".")[0] == "rich"})


def test_the_lazy_tree_lists_every_command_of_every_module():
    import importlib
    eager = {}
    for module in sorted(set(M.LAZY.values())):
        mod = importlib.import_module(f"desinight.cli.{module}")
        cmds = getattr(mod, "COMMANDS", None) or [   # sim, step, campaign, graph: one each
            c for c in vars(mod).values() if isinstance(c, click.Command) and c.name in M.LAZY]
        eager.update({c.name: module for c in cmds})
    assert eager == M.LAZY
    ctx = click.Context(M.cli)
    assert M.cli.list_commands(ctx) == sorted(M.LAZY)
    assert all(M.cli.get_command(ctx, name) is not None for name in M.LAZY)
    text = subprocess.run([sys.executable, "-m", "desinight", "--help"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    listed = {ln.split()[0] for ln in text.split("Commands:")[1].splitlines() if ln.strip()}
    assert listed == set(M.LAZY)
