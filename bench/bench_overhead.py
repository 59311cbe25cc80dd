"""Manager overhead for one night, desinight vs Snakemake's SLURM executor, same cluster.

The same job graph (desinight's plan of a 33-job night: 3 arcs, 3 flats, 3 tiles x 3
exposures) runs on the local SLURM cluster twice, every job `sleep 2`:
  1. desinight's daemon, the exposures appearing in the raw directory at t0;
  2. Snakemake with snakemake-executor-plugin-slurm, on a Snakefile generated from the same
     graph (one rule per job, inputs = parents' outputs), started at t0.
Reported per tool: wall time from t0 to the last job done, manager CPU seconds (the
daemon's / snakemake's own rusage, children excluded), and scheduler calls counted by
PATH shims around sbatch/sacct/squeue/scancel/scontrol (the same shims for both), in all and
per hour of that run.

Then the load between events, the usual state of a night (jobs queued, nothing changing):
desinight's daemon with its production poll settings (2 s backing off to 60 s), one long job
running, calls counted over a window after the back-off has settled, per hour.

    scripts/local-slurm up && python bench/bench_overhead.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.daemonkit import cli, fast_templates, night_completed, status_json, wait_for, write_config  # noqa: E402
from tests.rawfixture import N, write_exposure  # noqa: E402

COMMANDS = ("sbatch", "sacct", "squeue", "scancel", "scontrol")
JOB_SECONDS = 2


def night_spec() -> list[tuple]:
    spec = [("ZERO", -1, 1, 1)]
    spec += [("ARC", -1, i, 3) for i in (1, 2, 3)]
    spec += [("FLAT", -1, i, 3) for i in (1, 2, 3)]
    for tile in (1000, 1001, 1002):
        spec += [("SCIENCE", tile, i, 3) for i in (1, 2, 3)]
    return spec


def make_shims(d: Path, log: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for cmd in COMMANDS:
        real = shutil.which(cmd)
        (d / cmd).write_text(f'#!/bin/bash\necho {cmd} >> "{log}"\nexec {real} "$@"\n')
        (d / cmd).chmod(0o755)
    return d


def calls(log: Path) -> dict[str, int]:
    c = Counter(log.read_text().split()) if log.exists() else Counter()
    return {cmd: c.get(cmd, 0) for cmd in COMMANDS}


def cpu_of(proc: subprocess.Popen) -> float:
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def run_desinight(work: Path, env: dict) -> tuple[dict, list]:
    tpl = fast_templates(work / "tpl", run=f"sleep {JOB_SECONDS}")
    conf = write_config(work, backend="slurm", templates=tpl)
    cli(conf, "init")
    log = work / "calls.log"
    env = {**env, "PATH": f"{make_shims(work / 'shims', log)}:{env['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    log.write_text("")
    t0 = time.monotonic()
    for i, spec in enumerate(night_spec()):
        write_exposure(work / "raw", N, i, *spec)
    wait_for(lambda: night_completed(conf, N, 33), 900, interval=0.5, what="desinight night")
    wall = time.monotonic() - t0
    n_calls = calls(log)
    proc.terminate()
    cpu = cpu_of(proc)
    data = status_json(conf, N)
    return {"wall_s": round(wall, 1), "manager_cpu_s": round(cpu, 2), "calls": n_calls,
            "jobs": len(data["jobs"])}, conf


def steady_state(work: Path, env: dict, settle_s: float = 100, window_s: float = 180) -> dict:
    """Scheduler calls per hour while a job runs and nothing changes, default poll settings."""
    tpl = fast_templates(work / "tpl", run="sleep 900")
    conf = work / "desinight.toml"
    conf.write_text('[desinight]\nproduction = "steady"\nraw_root = "raw"\nredux_root = "redux"\n'
                    f'state_dir = "state"\nbackend = "slurm"\ntemplates_dir = "{tpl}"\n')
    cli(conf, "init")
    log = work / "calls.log"
    env = {**env, "PATH": f"{make_shims(work / 'shims', log)}:{env['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        write_exposure(work / "raw", N, 0, "ZERO")
        wait_for(lambda: any(j["state"] == "running" for j in status_json(conf, N)["jobs"]), 120,
                 what="the long job to run")
        time.sleep(settle_s)
        log.write_text("")
        time.sleep(window_s)
        n = calls(log)
    finally:
        proc.terminate()
        proc.wait(30)
        cli(conf, "cancel", "--night", str(N), check=False)
    per_hour = {k: round(v * 3600 / window_s) for k, v in n.items() if v}
    print(f"steady state (1 job running, nothing changing, default poll settings): "
          f"{n} in {window_s:.0f} s -> per hour {per_hour}", flush=True)
    return {"window_s": window_s, "calls": n, "calls_per_hour": per_hour}


def snakefile_from(conf: Path) -> str:
    """One rule per desinight job; inputs = the parents' outputs."""
    import sqlite3
    db = sqlite3.connect(conf.parent / "state" / "desinight.db")
    jobs = db.execute("select id, kind from job order by id").fetchall()
    parents: dict[int, list[int]] = {}
    for p, c in db.execute("select parent_id, child_id from job_edge"):
        parents.setdefault(c, []).append(p)
    rules = ["localrules: all", "", "rule all:", "    input: " +
             ", ".join(f'"done/{i}"' for i, _ in jobs), ""]
    for i, kind in jobs:
        ins = ", ".join(f'"done/{p}"' for p in sorted(parents.get(i, [])))
        rules += [f"rule j{i}_{kind}:"]
        if ins:
            rules += [f"    input: {ins}"]
        rules += [f'    output: "done/{i}"', "    resources: runtime=10, mem_mb=100",
                  f'    shell: "sleep {JOB_SECONDS}; touch {{output}}"', ""]
    return "\n".join(rules)


def run_snakemake(work: Path, conf: Path, env: dict) -> dict:
    if shutil.which("snakemake") is None:
        return {"skipped": "snakemake not installed (pip install '.[bench]')"}
    (work / "Snakefile").write_text(snakefile_from(conf))
    log = work / "calls.log"
    env = {**env, "PATH": f"{make_shims(work / 'shims', log)}:{env['PATH']}"}
    t0 = time.monotonic()
    proc = subprocess.Popen(["snakemake", "--executor", "slurm", "--jobs", "100", "--quiet",
                             "--latency-wait", "5", "--default-resources", "slurm_account=root",
                             "slurm_partition=debug"],
                            cwd=work, env=env, stdout=open(work / "snakemake.out", "w"),
                            stderr=subprocess.STDOUT)
    cpu = cpu_of(proc)
    wall = time.monotonic() - t0
    done = len(list((work / "done").glob("*"))) if (work / "done").exists() else 0
    if proc.returncode != 0 or done != 33:
        tail = (work / "snakemake.out").read_text()[-600:]
        return {"skipped": f"snakemake failed (rc {proc.returncode}, {done}/33 done): {tail}"}
    return {"wall_s": round(wall, 1), "manager_cpu_s": round(cpu, 2), "calls": calls(log),
            "jobs": done}


def main(argv: list[str] | None = None) -> dict:
    if shutil.which("sbatch") is None:
        raise SystemExit("SLURM not installed")
    env = dict(os.environ)
    if "SLURM_CONF" not in env:
        out = subprocess.run(["bash", str(ROOT / "scripts" / "local-slurm"), "env"],
                             capture_output=True, text=True, check=True).stdout
        env["SLURM_CONF"] = out.strip().split("=", 1)[1]
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    # Snakemake's job step clears SLURM_* variables (SLURM_CONF included) before its `srun`,
    # so inside the job SLURM must find its config at the default path: link it for the run.
    default_conf = Path("/etc/slurm/slurm.conf")
    linked = False
    if not default_conf.exists():
        default_conf.parent.mkdir(parents=True, exist_ok=True)
        default_conf.symlink_to(env["SLURM_CONF"])
        linked = True
    try:
        return _compare(env)
    finally:
        if linked:
            default_conf.unlink()


def _compare(env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "dn").mkdir()
        (work / "sm").mkdir()
        dn, conf = run_desinight(work / "dn", env)
        tot = lambda r: sum(r["calls"].values())  # noqa: E731
        dn["calls_per_hour"] = round(tot(dn) * 3600 / dn["wall_s"])
        print(f"desinight : wall {dn['wall_s']} s, manager CPU {dn['manager_cpu_s']} s, calls {dn['calls']}"
              f" ({dn['calls_per_hour']}/h over the run)")
        sm = run_snakemake(work / "sm", conf, env)
        if "skipped" in sm:
            print(f"snakemake : skipped: {sm['skipped']}")
            result = {"desinight": dn, "snakemake": sm}
        else:
            sm["calls_per_hour"] = round(tot(sm) * 3600 / sm["wall_s"])
            print(f"snakemake : wall {sm['wall_s']} s, manager CPU {sm['manager_cpu_s']} s, calls {sm['calls']}"
                  f" ({sm['calls_per_hour']}/h over the run)")
            ratios = {"wall": round(sm["wall_s"] / dn["wall_s"], 2),
                      "manager_cpu": round(sm["manager_cpu_s"] / max(dn["manager_cpu_s"], 0.01), 2),
                      "scheduler_calls": round(tot(sm) / max(tot(dn), 1), 2)}
            print(f"snakemake / desinight: {ratios}")
            result = {"desinight": dn, "snakemake": sm, "ratio_snakemake_over_desinight": ratios}
        (work / "steady").mkdir()
        result["desinight_steady_state"] = steady_state(work / "steady", env)
    print(json.dumps({"overhead": result}))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
