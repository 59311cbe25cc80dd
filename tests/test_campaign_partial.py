"""Partial campaigns take the outputs of the steps they do not run from input_production;
`campaign plan` refuses one whose inputs are missing; `campaign run` and `campaign status`
exit 5 when jobs failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

SIM_NIGHT = 20261124


def _manifest(root: Path, name: str, steps: str = "", nights=(N,)) -> Path:
    p = root / f"{name}.toml"
    p.write_text(f'[campaign]\nname = "{name}"\nsource = "test"\nthrottle = 20\n\n'
                 f"[selection]\nnights = {list(nights)}\n{steps}")
    return p


@pytest.mark.slow
def test_failed_jobs_exit_5_and_missing_inputs_are_refused(tmp_path):
    tpl = fast_templates(tmp_path / "tpl", run="sleep 0.1", overrides={"psfnight": "exit 3"})
    conf = write_config(tmp_path, templates=tpl)
    cli(conf, "init")
    write_night(tmp_path / "raw", N)
    assert cli(conf, "ingest", str(N), "--wait", "--timeout", "60", check=False).returncode == 5
    # a partial campaign needs the source's psfnight, which failed: refused, nothing written
    part = _manifest(tmp_path, "part", '[steps]\nfrom = "extract"\n')
    for cmd in ("plan", "submit"):
        r = cli(conf, "campaign", cmd, str(part), check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.stdout, r.stderr)
        assert (f"part.toml:8: steps.input_production: production test has no completed "
                f"{N}/psfnight (failed; needed by {N}/science/") in r.stderr
    assert cli(conf, "campaign", "status", "part", check=False).returncode == 3
    # a full campaign whose psfnight fails (same templates): run and status exit 5
    full = _manifest(tmp_path, "full")
    cli(conf, "campaign", "submit", str(full))
    r = cli(conf, "campaign", "run", "full", "--poll", "0.2", "--timeout", "60", check=False)
    assert r.returncode == 5, (r.stdout, r.stderr)
    st = json.loads(cli(conf, "campaign", "status", "full", "--json", check=False).stdout)
    assert st["done"] and st["states"]["failed"] == 1 and st["failed"] == 9   # + 8 dep_failed
    assert r.stderr == ("desinight: error: campaign full: 9 jobs failed "
                        "(desinight campaign status full)\n")
    for args in ((), ("--json",)):
        r = cli(conf, "campaign", "status", "full", *args, check=False)
        assert r.returncode == 5 and "campaign full: 9 jobs failed" in r.stderr, r.stderr


@pytest.mark.slow
def test_partial_campaign_from_extract_runs_on_the_input_productions_calibrations(tmp_path):
    """A simulated night processed in full by the nightly production, then re-extracted by a
    campaign with `[steps] from = "extract"`: every job completes, reading the nightly
    production's psfnight and fiberflatnight."""
    conf = write_config(tmp_path)
    subprocess.run([sys.executable, "-m", "desinight", "sim", "night", "--night", str(SIM_NIGHT),
                    "--out", str(tmp_path / "raw")], check=True, capture_output=True, timeout=120)
    cli(conf, "init")
    cli(conf, "ingest", str(SIM_NIGHT), "--wait", "--timeout", "900", timeout=950)
    m = _manifest(tmp_path, "reextract", '[steps]\nfrom = "extract"\n', nights=(SIM_NIGHT,))
    plan = json.loads(cli(conf, "campaign", "plan", str(m), "--json").stdout)
    # cumulative: a step of the list, though campaigns plan no cumulative jobs (yet)
    assert plan["steps"] == ["science", "stdstars", "fluxcalib", "redshift", "cumulative"]
    assert set(plan["new_jobs"]) == {"science", "stdstars", "fluxcalib", "redshift"}
    cli(conf, "campaign", "submit", str(m))
    r = cli(conf, "campaign", "run", "reextract", "--poll", "0.5", "--timeout", "900",
            check=False, timeout=950)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    st = json.loads(cli(conf, "campaign", "status", "reextract", "--json").stdout)
    assert st["done"] and st["failed"] == 0 and st["completed"] == plan["new_total"]
    out = tmp_path / "redux" / "reextract"
    psf = out / "calibnight" / str(SIM_NIGHT) / f"psfnight-b0-{SIM_NIGHT}.fits"
    assert psf.is_symlink() and "/redux/test/calibnight/" in str(psf.resolve())
    assert list(out.rglob("redrock-*.fits")) and list(out.rglob("sframe-*.fits"))
    assert not any(p.is_symlink() for p in out.rglob("sframe-*.fits"))   # its own, rewritten
