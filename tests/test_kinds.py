"""The job-kind registry: a new kind declared here alone (plus a template and the step function
below) is planned, rendered, submitted, run and shown by the real CLI on the local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desinight.core import kinds as K
from desinight.core.errors import ConfigError
from desinight.core.planner import ExposureInfo, plan_night
from tests.daemonkit import fast_templates, write_config
from tests.rawfixture import N, write_night

REPO = Path(__file__).resolve().parent.parent

#: the whole declaration of the new kind: one "qa look" job per science exposure, after its
#: science job; ranks scale with the cameras; its jobs go to their own partition
QALOOK = K.JobKind(
    "qalook", "exposure", "tests.test_kinds:task_qalook", "qa", 1, obstypes=("SCIENCE",),
    after=("science",), resources={"ntasks": 1, "time_minutes": 5, "partition": "qa"},
    scaling=K.Scaling(ntasks_per_camera=1, max_ntasks=2),
    outputs=("exposures/{night}/{expid:08d}/qalook-{camera}-{expid:08d}.json",))


def declare() -> None:
    """The config's kind_modules entry "tests.test_kinds:declare" calls this."""
    K.register(QALOOK)


def task_qalook(night, expids, tileid, cam, calib_night):
    """The step: one small file per camera, in the production's tree."""
    from desinight.steps import io
    for e in expids:
        out = io.redux_dir() / "exposures" / str(night) / f"{e:08d}" / f"qalook-{cam}-{e:08d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"night": night, "expid": e, "camera": cam, "tile": tileid}))


@pytest.fixture
def qalook():
    declare()
    yield QALOOK
    K.unregister("qalook")


def exps(*spec):
    return [ExposureInfo(N * 100 % 10**8 + i, N, t, tile, ("b0", "r0", "z0"), 1, 1)
            for i, (t, tile) in enumerate(spec)]


def test_builtin_kinds_in_pipeline_order():
    assert K.names()[:10] == ("biasnight", "darknight", "arc", "psfnight", "flat",
                              "fiberflatnight", "science", "stdstars", "fluxcalib", "redshift")
    assert K.get("redshift").unit == "spectrograph" and K.get("science").bundles


def test_declared_kind_is_planned_after_its_parents(qalook):
    night = exps(("ZERO", -1), ("ARC", -1), ("FLAT", -1), ("SCIENCE", 7), ("SCIENCE", 7))
    plan = plan_night(N, night, closed=True)
    qa = sorted((j for j in plan.jobs if j.kind == "qalook"), key=lambda j: j.key)
    sci = [j.key for j in plan.jobs if j.kind == "science"]
    assert [j.deps for j in qa] == [(k,) for k in sorted(sci)] and len(qa) == 2
    assert all(j.tileid == 7 and j.cameras == ("b0", "r0", "z0") for j in qa)
    # planned once: a second pass over the same night adds nothing
    again = plan_night(N, night, existing=[j.key for j in plan.jobs], closed=True)
    assert again.jobs == []


def test_declared_kind_inherits_its_parents_hold(qalook):
    plan = plan_night(N, exps(("SCIENCE", 7)), closed=False)   # no calibrations anywhere
    (qa,) = [j for j in plan.jobs if j.kind == "qalook"]
    assert qa.hold_reason and "no psfnight or fiberflatnight calibration" in qa.hold_reason


def test_declared_kind_waits_for_unplanned_parents():
    late = K.register(K.JobKind(**{**QALOOK.__dict__, "name": "qalate", "after": ("fluxcalib",)}))
    try:
        first = ExposureInfo(26112403, N, "SCIENCE", 7, ("b0",), 1, 2)   # tile 7: 1 of 2
        plan = plan_night(N, exps(("ZERO", -1), ("ARC", -1), ("FLAT", -1)) + [first])
        assert not any(j.kind in ("fluxcalib", late.name) for j in plan.jobs)
        assert any(w.startswith(f"{N}/qalate/26112403: waiting for its parent") for w in plan.waiting)
    finally:
        K.unregister("qalate")


def test_without_declared_kinds_the_plan_is_unchanged():
    night = exps(("ZERO", -1), ("DARK", -1), ("ARC", -1), ("FLAT", -1), ("SCIENCE", 7))
    assert {j.kind for j in plan_night(N, night, closed=True, history={}).jobs} == set(K.BUILTIN)


@pytest.mark.parametrize("change,message", [
    ({"name": "Bad-Name"}, "lower-case identifier"),
    ({"granularity": "week"}, "granularity 'week'"),
    ({"after": ("nosuch",)}, "after unknown kind(s) nosuch"),
    ({"step": "nocolon"}, "is not 'module:function'"),
    ({"resources": {"ntask": 1}}, "unknown resource key(s) ntask"),
    ({"name": "science"}, "'science' is already declared"),
])
def test_bad_declarations_are_refused(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        K.register(K.JobKind(**{**QALOOK.__dict__, **change}))
    assert "qalook" not in K.names()


def test_scaling_by_cameras_and_exposures():
    sc = K.Scaling(ntasks_per_camera=0.5, max_ntasks=8, minutes_per_exposure=2.5,
                   minutes_per_camera=1)
    K.register(K.JobKind(**{**QALOOK.__dict__, "scaling": sc}))
    try:
        base = {"ntasks": 1, "time_minutes": 10}
        assert K.scaled("qalook", base, 30, 4) == {"ntasks": 8, "time_minutes": 48}   # 10+7.5+30
        assert K.scaled("qalook", base, 3, 1) == {"ntasks": 2, "time_minutes": 13}
        # [kinds.NAME] fields replace the declared scaling
        assert K.scaled("qalook", base, 3, 1, {"minutes_per_camera": 0, "ntasks_per_camera": 0}) \
            == {"ntasks": 1, "time_minutes": 10}
    finally:
        K.unregister("qalook")
    # built-in kinds keep their fixed sizes unless a site scales them
    assert K.scaled("science", {"ntasks": 1, "time_minutes": 30}, 30, 1) == \
        {"ntasks": 1, "time_minutes": 30}


def test_manifest_schema_matches_the_registry():
    """docs/campaign-manifest.schema.json names every built-in kind the validator accepts."""
    from desinight.core.manifest import STEP_ALIASES, _KIND_KEYS
    schema = json.loads((REPO / "docs" / "campaign-manifest.schema.json").read_text())
    props = schema["properties"]
    assert props["steps"]["properties"]["from"]["enum"] == [*K.BUILTIN, *STEP_ALIASES]
    assert props["steps"]["properties"]["only"]["items"]["enum"] == [*K.BUILTIN, *STEP_ALIASES]
    assert list(props["kinds"]["properties"]) == list(K.BUILTIN)
    for kind in K.BUILTIN:
        assert set(props["kinds"]["properties"][kind]["properties"]) == _KIND_KEYS


def run_cli(conf: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # the job's step runner imports tests.test_kinds: the repository must be on its path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), *args],
                          capture_output=True, text=True, check=check, timeout=180, env=env)


def qalook_production(tmp_path: Path, science: int = 1,
                      template: str = '{% extends "base.sh.j2" %}\n') -> Path:
    """A production whose config declares qalook (kind_modules), fast templates for the
    built-in kinds, ``template`` for qalook; initialised, with a raw night of ``science``
    exposures. Returns the config path."""
    tpl = fast_templates(tmp_path / "templates")
    (tpl / "qalook.sh.j2").write_text(template)
    conf = write_config(tmp_path, templates=tpl)
    conf.write_text(conf.read_text().replace(
        "[daemon]", 'kind_modules = ["tests.test_kinds:declare"]\n[daemon]', 1))
    run_cli(conf, "init")
    write_night(tmp_path / "raw", science=science)
    return conf


@pytest.mark.slow
def test_new_kind_end_to_end_on_the_local_backend(tmp_path):
    # the kind's template: the base's real run block (python -m desinight step run qalook ...);
    # the night: zero, arc, flat, 1 science of tile 1000
    conf = qalook_production(tmp_path)
    r = run_cli(conf, "ingest", str(N), "--wait", "--timeout", "150", check=False)
    assert r.returncode == 0, r.stdout + r.stderr

    sci = [f"{N - 20000000}03"]
    for e in sci:
        for cam in ("b0", "r0", "z0"):
            out = tmp_path / "redux" / "test" / "exposures" / str(N) / e / f"qalook-{cam}-{e}.json"
            assert json.loads(out.read_text())["tile"] == 1000
        script = (tmp_path / "redux" / "test" / "run" / str(N) / "qalook" / e / "attempt-1" /
                  "job.sh").read_text()
        assert "step run qalook --night" in script and "DESINIGHT_KIND_MODULES=tests.test_kinds:declare" in script
        # registry resources, scaled (3 cameras, at most 2 ranks) and placed (its partition)
        assert "#SBATCH --ntasks=2\n" in script and "#SBATCH --partition=qa\n" in script
    status = json.loads(run_cli(conf, "status", "--night", str(N), "--json").stdout)
    by_exp = {str(e["expid"]): e["jobs"] for e in status["exposures"]}
    assert all(by_exp[e]["qalook"] == "completed" for e in sci)
    text = run_cli(conf, "status", "--night", str(N)).stdout
    assert text.count("qa✔") == 1


def test_per_kind_placement_and_scaling_reach_the_script_and_sbatch(tmp_path):
    """[kinds.redshift] sends redshifts to a GPU partition with a reservation, and scales their
    time with the tile's exposures; science keeps the site's CPU partition (golden files)."""
    from datetime import datetime, timezone

    from desinight.batch.base import SubmitRequest
    from desinight.batch.render import job_name, render_script, step_command
    from desinight.config import load_config
    from desinight.core.slurm import sbatch_argv
    from desinight.orchestrate import resources_for
    conf = tmp_path / "desinight.toml"
    conf.write_text('[desinight]\nstate_dir = "state"\nredux_root = "redux"\n'
                    '[slurm]\npartition = "cpu"\nqos = "realtime"\n'
                    '[kinds.redshift]\npartition = "gpu"\ngres = "gpu:4"\nreservation = "desi"\n'
                    'constraint = "gpu&hbm80g"\nminutes_per_exposure = 5\n'
                    '[kinds.science]\nntasks_per_camera = 1\nmax_ntasks = 16\n')
    cfg = load_config(conf, env={})
    z = resources_for(cfg, "redshift", cameras=30, exposures=3)
    sci = resources_for(cfg, "science", cameras=30, exposures=1)
    assert (z.partition, z.gres, z.reservation, z.qos, z.time_minutes) == \
        ("gpu", "gpu:4", "desi", "realtime", 40)
    assert (sci.partition, sci.gres, sci.ntasks, sci.time_minutes) == ("cpu", None, 16, 30)
    for kind, res in (("redshift", z), ("science", sci)):
        adir = Path("/prod/run/20261124") / kind / "attempt-1"
        text = render_script(
            cfg.templates_dir, kind, job_key=f"20261124/{kind}/1000", attempt=1,
            job_name=job_name("daily", 7, kind), production="daily", attempt_dir=adir,
            script_path=adir / "job.sh", raw_root=Path("/raw"), redux_root=Path("/redux"),
            command=step_command("/opt/py/bin/python", kind, 20261124, [26112403], 1000, "a0", None),
            resources=res, now=datetime(2026, 11, 25, 6, 0, tzinfo=timezone.utc), tag="t")
        golden = REPO / "tests" / "golden" / f"{kind}-placed.sh"
        if os.environ.get("DESINIGHT_UPDATE_GOLDEN") == "1":
            golden.write_text(text)
        assert text == golden.read_text()
    argv = sbatch_argv(SubmitRequest(name="n", tag="t", comment="c", script=Path("/s"),
                                     attempt_dir=Path("/a"), log=Path("/l"), resources=z))
    assert {"--partition=gpu", "--gres=gpu:4", "--reservation=desi", "--qos=realtime",
            "--constraint=gpu&hbm80g", "--time=40"} <= set(argv)


def test_config_refuses_a_bad_kind_setting(tmp_path):
    conf = tmp_path / "desinight.toml"
    conf.write_text('[desinight]\nstate_dir = "state"\n[kinds.redshift]\ngres = 4\n')
    r = subprocess.run([sys.executable, "-m", "desinight", "--config", str(conf), "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "kinds.redshift.gres must be one of" in r.stderr


def test_kind_modules_from_the_environment_and_the_config(tmp_path):
    from desinight.config import load_config
    conf = tmp_path / "desinight.toml"
    conf.write_text('[desinight]\nstate_dir = "state"\n[kinds.qalook]\ntime_minutes = 9\n')
    try:
        # without the module the kind is unknown to the config...
        with pytest.raises(ConfigError, match=r"unknown job kind \[kinds.qalook\]"):
            load_config(conf, env={})
        # ...$DESINIGHT_KIND_MODULES declares it before the file is read
        cfg = load_config(conf, env={"DESINIGHT_KIND_MODULES": "tests.test_kinds:declare"})
        assert cfg.kinds == {"qalook": {"time_minutes": 9}} and "qalook" in K.names()
    finally:
        K.unregister("qalook")
    with pytest.raises(ConfigError, match="kind module 'nosuch.mod' cannot be loaded"):
        load_config(conf, env={"DESINIGHT_KIND_MODULES": "nosuch.mod"})


def test_held_declared_job_is_released_with_its_parent(qalook):
    sci = ExposureInfo(26112405, N, "SCIENCE", 7, ("b0",), 1, 1)
    first = plan_night(N, [sci])                       # no calibrations: science held
    held = {j.key for j in first.jobs if j.hold_reason}
    assert f"{N}/qalook/26112405" in held and f"{N}/science/26112405" in held
    calibs = [ExposureInfo(26112400 + i, N, t, -1, ("b0",), 1, 1)
              for i, t in enumerate(("ZERO", "ARC", "FLAT"))]
    again = plan_night(N, calibs + [sci], existing=[j.key for j in first.jobs], closed=True,
                       held=held)
    released = {j.key: j for j in again.released}
    assert {f"{N}/science/26112405", f"{N}/qalook/26112405"} <= set(released) <= held
    assert released[f"{N}/qalook/26112405"].deps == (f"{N}/science/26112405",)


def test_a_kind_module_may_register_on_import(tmp_path, monkeypatch):
    from desinight.config import load_config
    (tmp_path / "site_kinds.py").write_text(
        "from desinight.core import kinds as K\nfrom tests.test_kinds import QALOOK\n"
        "K.register(K.JobKind(**{**QALOOK.__dict__, 'name': 'siteqa'}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.toml").write_text('[desinight]\nstate_dir = "state"\nkind_modules = ["site_kinds"]\n')
    try:
        load_config(tmp_path / "c.toml", env={})
        assert "siteqa" in K.names() and K.get("siteqa").short == "qa"
    finally:
        K.unregister("siteqa")
        sys.modules.pop("site_kinds", None)
