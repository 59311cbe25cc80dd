"""A step's failure names the file it was reading (issue 15): a fitsio error, or any other
reader error, on one of a job's inputs says which input."""

from __future__ import annotations

import json

import pytest

from desinight.steps import io
from desinight.steps.jobs import run_job

NIGHT, EXPID = 20261124, 26112401


@pytest.fixture
def redux(tmp_path, monkeypatch):
    monkeypatch.setenv("DESI_SPECTRO_DATA", str(tmp_path / "raw"))
    monkeypatch.setenv("DESI_SPECTRO_REDUX", str(tmp_path / "redux"))
    monkeypatch.setenv("SPECPROD", "test")
    return tmp_path


def test_unreadable_raw_file_is_named(redux, capsys):
    raw = io.raw_path(NIGHT, EXPID)
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"\xff\xfe not a FITS file \x80" * 200)
    assert run_job("arc", NIGHT, [EXPID], None, "b0") == 1
    rec = json.loads((io.redux_dir() / "run" / "steps" / str(NIGHT)
                      / f"arc-{EXPID:08d}-rank0.json").read_text())
    (task,) = rec["tasks"]
    assert task["error"].startswith(f"InputFileError: reading {raw}: ")
    assert str(raw) in capsys.readouterr().out      # the job log's one line per camera


def test_reading_names_the_file_for_any_reader_error(tmp_path):
    path = tmp_path / "fiberassign.fits"
    with pytest.raises(io.InputFileError, match=f"reading {path}: UnicodeDecodeError: "):
        with io.reading(path):
            b"\xff".decode("utf-8")
