"""Manifest parsing and validation (pure): every bad case is one line naming file:line: field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desinight.core.manifest import (JOB_KINDS, ManifestError, load_manifest, locate, node_hours,
                                     parse_manifest)

GOOD = """\
[campaign]
name = "reproc-1"
source = "daily"
code_version = "0.4.0"
throttle = 20

[selection]
nights = [20261124]
night_ranges = [[20261101, 20261130]]
tiles = [1000]
exclude_expids = [26112409]

[selection.bad_cameras]
"26112403" = "b0,r1"

[steps]
from = "extract"
input_production = "daily"

[slurm]
account = "desi"

[kinds.science]
time_minutes = 45
"""


def test_good_manifest():
    m = parse_manifest(GOOD, "c.toml")
    assert m.name == "reproc-1" and m.source == "daily" and m.throttle == 20
    assert m.nights == (20261124,) and m.night_ranges == ((20261101, 20261130),)
    assert m.steps == ("science", "stdstars", "fluxcalib", "redshift", "cumulative") and m.partial
    assert m.bad_cameras == {26112403: ("b0", "r1")}
    assert m.kinds == {"science": {"time_minutes": 45}} and m.slurm == {"account": "desi"}
    assert m.wanted_nights([20261124, 20261110, 20261201]) == [20261110, 20261124]
    assert m.selects(26112401, "ARC", None)            # calibrations come along
    assert m.selects(26112404, "SCIENCE", 1000)
    assert not m.selects(26112405, "SCIENCE", 2000)    # other tile
    assert not m.selects(26112409, "SCIENCE", 1000)    # excluded
    assert m.settings()["input_production"] == "daily"


def test_defaults_and_only():
    m = parse_manifest('[campaign]\nname = "x"\n[selection]\nnights = [20261124]\n'
                       '[steps]\nonly = ["redshift", "calibrations"]\n')
    assert m.steps == ("biasnight", "darknight", "arc", "psfnight", "flat", "fiberflatnight",
                       "redshift")
    m = parse_manifest('[campaign]\nname = "x"\n[selection]\nnights = ["20261124"]\n')
    assert m.steps == JOB_KINDS and not m.partial and m.throttle == 500


@pytest.mark.parametrize("edit,expect", [
    (("throttle = 20", "throttle = 20\nthrotle = 3"), "c.toml:6: campaign.throtle: unknown key"),
    (("nights = [20261124]", "nights = [2026113]"),
     "c.toml:8: selection.nights: 2026113 is not a YYYYMMDD night"),
    (("nights = [20261124]", "nights = [\n  20261124,\n  20261131,\n]"),
     "c.toml:10: selection.nights: 20261131 is not a YYYYMMDD night"),
    (("[slurm]", "[slurmm]"), "c.toml:20: slurmm: unknown section"),
    (("from = \"extract\"", "from = \"extrakt\""), "c.toml:17: steps.from: unknown step 'extrakt'"),
    (("time_minutes = 45", "time_minutes = -1"),
     "c.toml:24: kinds.science.time_minutes: must be a positive integer"),
    (("name = \"reproc-1\"", "name = \"re proc\""), "c.toml:2: campaign.name: must be a plain name"),
    (("\"26112403\" = \"b0,r1\"", "\"26112403\" = \"q7\""),
     "c.toml:14: selection.bad_cameras.26112403: bad camera word 'q7'"),
    (("[[20261101, 20261130]]", "[[20261130, 20261101]]"),
     "c.toml:9: selection.night_ranges: [20261130, 20261101]: first night after last"),
    (("name = \"reproc-1\"", "name = 3"), "c.toml:2: campaign.name: must be a non-empty string"),
    (("throttle = 20", "throttle = 0"), "c.toml:5: campaign.throttle: must be a positive integer"),
    (("from = \"extract\"", "from = \"extract\"\nonly = [\"redshift\"]"),
     "c.toml:18: steps.only: give steps.from or steps.only, not both"),
    (("[selection]\nnights = [20261124]\nnight_ranges = [[20261101, 20261130]]", "[selection]"),
     "c.toml:7: selection: select nights"),
])
def test_bad_manifests_name_line_and_field(edit, expect):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ManifestError) as e:
        parse_manifest(GOOD.replace(old, new), "c.toml")
    msg = str(e.value)
    assert msg.startswith(expect), msg
    assert "\n" not in msg and e.value.exit_code == 2


def test_malformed_toml_and_unreadable(tmp_path):
    with pytest.raises(ManifestError, match=r"^c.toml:3: not valid TOML"):
        parse_manifest('[campaign]\nname = "x"\nnights = [1,\n', "c.toml")
    with pytest.raises(ManifestError, match="cannot read manifest: no such file"):
        load_manifest(tmp_path / "missing.toml")
    with pytest.raises(ManifestError, match="cannot read manifest: is a directory"):
        load_manifest(tmp_path)
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(p)


def test_locate_falls_back_to_table_then_line_one():
    text = '[campaign]\nname = "x"\n[selection]\nnights = [1]\n'
    assert locate(text, "selection.nights", 1) == 4
    assert locate(text, "selection.tiles") == 3
    assert locate(text, "nowhere.at.all") == 1


def test_node_hours():
    typical, upper = node_hours({"science": 10, "redshift": 2},
                                {"science": {"nodes": 2, "time_minutes": 30},
                                 "redshift": {"nodes": 1, "time_minutes": 60}})
    assert typical == pytest.approx(10 * 2 * 12 / 60 + 2 * 15 / 60)
    assert upper == pytest.approx(10 * 2 * 0.5 + 2 * 1.0)


def test_json_schema_matches_validator():
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" /
                         "campaign-manifest.schema.json").read_text())
    assert set(schema["properties"]) == {"campaign", "selection", "steps", "slurm", "kinds"}
    assert schema["additionalProperties"] is False
    camp = schema["properties"]["campaign"]
    assert set(camp["properties"]) == {"name", "source", "output_root", "code_version",
                                       "config_version", "throttle", "description"}
    assert set(schema["properties"]["kinds"]["properties"]) == set(JOB_KINDS)
