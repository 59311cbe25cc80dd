"""`desinight graph NIGHT`: the night's job graph as SVG (graphviz), coloured by state, checked
as XML, in a headless browser, embedded in the report, and without graphviz's `dot`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from desinight.report import COLOURS
from tests.daemonkit import cli, fast_templates, write_config
from tests.rawfixture import N, write_night

pytestmark = pytest.mark.slow
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A processed night whose stdstars fails: completed, failed and dep_failed jobs."""
    root = tmp_path_factory.mktemp("graph")
    conf = write_config(root, templates=fast_templates(root / "templates",
                                                       overrides={"stdstars": "exit 3"}))
    cli(conf, "init")
    write_night(root / "raw")
    cli(conf, "ingest", str(N), "--wait", "--timeout", "120", check=False)   # 5: stdstars failed
    return root, conf


def nodes(svg_text: str) -> dict[str, str]:
    """{job key: fill colour} of every node of graphviz's SVG."""
    tree = ET.fromstring(svg_text)
    out = {}
    for g in tree.iter(f"{SVG}g"):
        if g.get("class") == "node":
            key = g.find(f"{SVG}title").text
            out[key] = g.find(f".//{SVG}path").get("fill")
    return out


def test_graph_svg_has_every_job_and_edge_coloured_by_state(night):
    root, conf = night
    out = root / "night.svg"
    r = cli(conf, "graph", str(N), "-o", str(out))
    assert r.stdout == f"wrote {out} (11 jobs, 19 edges)\n"
    text = out.read_text()
    fills = nodes(text)
    assert len(fills) == 11
    assert fills[f"{N}/psfnight"] == COLOURS["completed"]
    assert fills[f"{N}/stdstars/1000"] == COLOURS["failed"]
    assert fills[f"{N}/fluxcalib/26112403"] == COLOURS["dep_failed"]
    edges = [g.find(f"{SVG}title").text for g in ET.fromstring(text).iter(f"{SVG}g")
             if g.get("class") == "edge"]
    # bias->arc, arc->psf, bias+psf->flat, flat->ff, (bias,psf,ff)->2 sci, 2 sci->std,
    # (sci,std)->2 fluxcalib, 2 fluxcalib->redshift
    assert len(edges) == 19 and f"{N}/arc/26112401->{N}/psfnight" in edges
    # standard output when no file is named; an unknown night is one line, exit 3
    assert nodes(cli(conf, "graph", str(N)).stdout) == fills
    r = cli(conf, "graph", "20261201", check=False)
    assert r.returncode == 3 and r.stderr.count("\n") == 1


def test_graph_without_dot_is_one_line_exit_2(night, tmp_path):
    root, conf = night
    env = {**os.environ, "PATH": str(tmp_path)}            # no `dot` anywhere on the PATH
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "graph", str(N)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("desinight: error: graph: the graphviz 'dot' program is not installed "
                        "(Debian: apt-get install graphviz)\n")


def _browser_dom(path, profile) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("DESINIGHT_REQUIRE_BROWSER") == "1":
            pytest.fail("DESINIGHT_REQUIRE_BROWSER=1 but chromium is not installed")
        pytest.skip("chromium not installed")
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120).stdout


def test_graph_in_the_report_renders_in_a_browser(night):
    root, conf = night
    out = root / "report.html"
    cli(conf, "report", str(N), "-o", str(out))
    dom = _browser_dom(out, root / "chrome")
    assert "Job graph" in dom and dom.count('class="node"') == 11
    # the browser parsed the inline SVG: the failed job's node, with its colour and tooltip
    assert f'id="job-{N}/stdstars/1000"' in dom
    assert f'fill="{COLOURS["failed"]}"' in dom and "stdstars/1000: failed" in dom
