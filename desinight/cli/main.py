"""`desinight` entry point: global options, error handling, sub-command registry."""

from __future__ import annotations

import sys

import click

from ..core.errors import DesinightError


class Obj:
    """Lazily loaded configuration shared by sub-commands."""

    def __init__(self, config_path: str | None, verbose: int, production: str | None = None):
        self.config_path = config_path
        self.verbose = verbose
        self.production = production
        self._cfg = None

    @property
    def cfg(self):
        if self._cfg is None:
            from ..config import load_config
            self._cfg = load_config(self.config_path).with_overrides(production=self.production)
        return self._cfg


#: each sub-command's module (desinight.cli.MODULE), imported only when that command runs
#: or --help lists it: `desinight status` then loads neither the daemon nor the science
#: code (tests/test_cli_imports.py checks this map against the modules' COMMANDS)
LAZY = {"init": "ops_cmds", "ingest": "ops_cmds", "demo": "ops_cmds", "daemon": "ops_cmds",
        "resubmit": "retry_cmds", "cancel": "retry_cmds", "rerun": "retry_cmds",
        "status": "status_cmd", "show": "status_cmd", "report": "status_cmd",
        "check": "check_cmd", "history": "history_cmd", "logs": "logs_cmd",
        "exposure": "exposure_cmd", "calib": "calib_cmd",
        # optional: absent when their extra dependencies are (an ImportError hides them)
        "sim": "sim_cmd", "step": "step_cmd", "campaign": "campaign_cmd", "graph": "graph_cmd"}
OPTIONAL = {"sim", "step", "campaign", "graph"}


class LazyGroup(click.Group):
    """Sub-commands imported on first use (see LAZY)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in LAZY:
            try:
                mod = __import__(f"desinight.cli.{LAZY[name]}", fromlist=["COMMANDS"])
            except ImportError:
                if name in OPTIONAL:
                    return None
                raise          # a core command that cannot import is a bug, not "no such command"
            cmd = next((c for c in getattr(mod, "COMMANDS", None) or [getattr(mod, name)]
                        if c.name == name), None)
            if cmd is None:
                return None
            self.add_command(cmd)
        return self.commands.get(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="desinight.toml to use (else $DESINIGHT_CONFIG, else ./desinight.toml).")
@click.option("--production", help="Act on this production of the database, e.g. a campaign "
              "(default: config, $SPECPROD, 'daily').")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="desinight")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, production: str | None, verbose: int) -> None:
    """desinight: nightly production of a DESI-like spectroscopic survey.

    \b
    Quick start (embedded SQLite + local backend, simulated night):
      desinight demo
    Operate:
      desinight init && desinight ingest 20261124 --wait && desinight status
    A campaign's jobs, with the same commands:
      desinight --production reproc-2027 resubmit 26112403
    """
    from .. import logs
    logs.setup(verbose)
    ctx.obj = Obj(config_path, verbose, production)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="desinight", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except DesinightError as e:
        _fail(e)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - database/filesystem trouble is one line, not a traceback
        from ..errtext import as_desinight_error
        known = as_desinight_error(e)
        if known is None:
            raise      # a bug: the traceback is what a developer needs
        _fail(known)


def _fail(e: DesinightError) -> None:
    from ..errtext import first_line, mask_secrets
    click.echo(f"desinight: error: {mask_secrets(first_line(str(e), 500))}", err=True)
    sys.exit(e.exit_code)
