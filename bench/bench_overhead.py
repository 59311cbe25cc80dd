"""Manager overhead for one night, side by side in one run: desinight at benchmark and at
production cadence, Snakemake's SLURM executor at its defaults and tuned; same graph, same
cluster.

The same job graph (desinight's plan of a 33-job night: 3 arcs, 3 flats, 3 tiles x 3
exposures) runs on the local SLURM cluster four times, every job `sleep 2`:
  1. desinight's daemon at benchmark cadence (poll_s 3, poll_min_s 1: Snakemake tuned's 3 s);
  2. desinight's daemon at production cadence (the defaults: SchedMD's 30 s load budget,
     docs/daemon.md "SLURM load budget");
  3. Snakemake with snakemake-executor-plugin-slurm at its defaults (first status check after
     40 s, then every 10 s);
  4. Snakemake tuned: `--slurm-init-seconds-before-status-checks 3
     --seconds-between-status-checks 3`.
desinight's runs start when the exposures appear in the raw directory (t0); Snakemake's when
it starts, on a Snakefile generated from the same graph (one rule per job, inputs = parents'
outputs). Reported per run: wall time from t0 until the manager knows the last job is done,
the SLURM-side wall time (t0 to the last job's End in sacct: what the poll cadence cannot
change), manager CPU seconds (itself plus the commands and helper processes it ran: for
Snakemake the whole process, from wait4; for desinight's long-running daemon the night's
share, from t0 to the end, read in /proc for the daemon and its reader processes, and, as
`with_startup_cpu_s`, the whole process like Snakemake's), and scheduler calls per command, counted by
PATH shims around sbatch/sacct/squeue/scancel/scontrol (the same shims for all).

`--profile`: one more benchmark-cadence desinight night with py-spy attached from t0 to the
end (`--subprocesses`: the reader processes too; only threads on CPU are sampled), its samples
put in buckets by tick and by layer (`profile_buckets`). py-spy is not a dependency: install it
anywhere (`pip install --target /tmp/pyspy py-spy`) and name it in $PYSPY or put it on PATH.

Then the load between events, the usual state of a night (jobs queued, nothing changing):
desinight's daemon with its production poll settings, one long job running, calls counted
over a window after the back-off has settled, per hour.

    scripts/local-slurm up && python bench/bench_overhead.py [--profile] [--no-steady | --steady-only]
        [--desinight-only]   (desinight's two cadences alone: no Snakemake runs)
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

from tests.daemonkit import cli, fast_templates, night_completed, status_json, wait_for  # noqa: E402
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


#: [daemon] poll keys per desinight cadence; production = none (the defaults)
CADENCES = {"benchmark": "poll_s = 3.0\npoll_min_s = 1.0\npoll_max_s = 3.0\n", "production": ""}

def write_conf(work: Path, tpl: Path, cadence: str) -> Path:
    conf = work / "desinight.toml"
    conf.write_text('[desinight]\nproduction = "bench"\nraw_root = "raw"\nredux_root = "redux"\n'
                    f'state_dir = "state"\nbackend = "slurm"\ntemplates_dir = "{tpl}"\n'
                    f"[daemon]\nfull_scan_s = 60.0\n{CADENCES[cadence]}")
    return conf


def slurm_end(ids: list[str]) -> float | None:
    """Epoch seconds of the last End among ``ids`` (sacct), None if sacct cannot say."""
    from datetime import datetime
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "End"],
                         capture_output=True, text=True).stdout.split()
    ends = [datetime.fromisoformat(e).timestamp() for e in out if e[:1].isdigit()]
    return max(ends) if len(ends) == len(ids) else None


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants so far, children they reaped included
    (/proc: utime + stime + cutime + cstime)."""
    return sum(tree_cpu_parts(pid).values())


def tree_cpu_parts(pid: int) -> dict[str, float]:
    """``tree_cpu`` split: ``self`` (the process's own threads), ``reaped`` (children it
    waited for: sbatch/sacct and their shims, job-script renders), ``live_children`` (its
    descendants still running: the reader processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), sum(int(x) for x in f[11:13]) / tick,
                                  sum(int(x) for x in f[13:15]) / tick)
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, (pp, *_) in stats.items() if pp == p and c not in tree]
    own = stats.get(pid, (0, 0.0, 0.0))
    return {"self": own[1], "reaped": own[2],
            "live_children": sum(sum(stats[p][1:]) for p in tree if p in stats and p != pid)}


def pyspy() -> str | None:
    exe = os.environ.get("PYSPY") or shutil.which("py-spy")
    return exe if exe and Path(exe).exists() else None


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of ``pid`` (/proc/PID/task/TID/stat: utime + stime)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(t.name)] = sum(int(x) for x in f[11:13]) / tick
    return out


#: a daemon thread's role, from the frames py-spy saw on it (first match wins)
THREAD_ROLES = (("ticks (APScheduler's worker thread)", ("_guard",)),
                ("APScheduler's scheduling thread", ("_main_loop",)),
                ("watchdog observer / emitter", ("watchdog/",)),
                ("main thread (signal wait loop)", ("_loop",)),
                ("notifier", ("notify.py",)),
                ("metrics endpoint", ("metrics.py",)))


def thread_roles(raw: Path, pid: int) -> dict[int, str]:
    """{tid: role} for the daemon's threads in a py-spy ``--threads`` raw file."""
    seen: dict[int, str] = {}
    for line in raw.read_text().splitlines():
        parts = line.split(";")
        if len(parts) < 3 or not parts[0].startswith(f"process {pid}:") or not parts[1].startswith("thread ("):
            continue
        tid = int(parts[1][len("thread ("):].split(")")[0], 0)
        role = next((r for r, keys in THREAD_ROLES if any(k in line for k in keys)), None)
        if role and (tid not in seen or THREAD_ROLES.index(next(x for x in THREAD_ROLES if x[0] == role))
                     < THREAD_ROLES.index(next(x for x in THREAD_ROLES if x[0] == seen[tid]))):
            seen[tid] = role
    return seen


def run_desinight(work: Path, env: dict, cadence: str, profile: Path | None = None,
                  idle_s: float = 0) -> tuple[dict, Path]:
    """One night through a fresh daemon; ``idle_s``: first measure its CPU for that long
    while nothing happens (the idle ticks: ingest, exits, heartbeat, leader, campaigns)."""
    tpl = fast_templates(work / "tpl", run=f"sleep {JOB_SECONDS}")
    conf = write_conf(work, tpl, cadence)
    cli(conf, "init")
    log = work / "calls.log"
    env = {**env, "PATH": f"{make_shims(work / 'shims', log)}:{env['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "desinight", "--config", str(conf), "daemon"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: status_json(conf)["health"]["states_as_of"], 60, what="the daemon's first poll")
    started = tree_cpu_parts(proc.pid)   # the daemon's start-up: imports, readers, first poll
    idle = None
    if idle_s:
        time.sleep(2)   # the first poll's tick ends
        i0, it0 = tree_cpu_parts(proc.pid), thread_cpu(proc.pid)
        time.sleep(idle_s)
        i1, it1 = tree_cpu_parts(proc.pid), thread_cpu(proc.pid)
        idle = {"window_s": idle_s, "cpu_s": round(sum(i1.values()) - sum(i0.values()), 3),
                "pct_of_a_core": round(100 * (sum(i1.values()) - sum(i0.values())) / idle_s, 2),
                "busiest_thread_s": round(max(c - it0.get(t, 0.0) for t, c in it1.items()), 3)}
    log.write_text("")
    spy = None
    if profile:   # attached for the night only: the figure it explains is the night's share
        spy = subprocess.Popen([pyspy(), "record", "--pid", str(proc.pid), "--subprocesses",
                                "--format", "raw", "--threads", "--rate", "100", "--nonblocking", "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)   # py-spy attaching (a bench, not a test: no event to wait for)
    t0, t0_wall, parts0 = time.monotonic(), time.time(), tree_cpu_parts(proc.pid)
    threads0 = thread_cpu(proc.pid)
    for i, spec in enumerate(night_spec()):
        write_exposure(work / "raw", N, i, *spec)
    data = wait_for(lambda: night_completed(conf, N, 33), 900, interval=0.5, what="desinight night")
    wall = time.monotonic() - t0
    n_calls = calls(log)
    parts = {k: round(v - parts0[k], 2) for k, v in tree_cpu_parts(proc.pid).items()}
    night_cpu = sum(parts.values())
    threads = {t: c - threads0.get(t, 0.0) for t, c in thread_cpu(proc.pid).items()}
    per_thread = None
    if spy is not None:
        spy.send_signal(2)   # SIGINT: py-spy writes its samples and exits
        spy.wait(60)
        roles = thread_roles(profile, proc.pid)
        per_thread = Counter()
        for t, c in threads.items():
            per_thread[roles.get(t, "other threads")] += c
        per_thread = {k: round(v, 2) for k, v in per_thread.most_common()}
    proc.terminate()
    cpu = cpu_of(proc)
    end = slurm_end([j["backend_id"] for j in data["jobs"]])
    # manager_cpu_s: the night only (the daemon runs for weeks; its start-up is not a night's
    # cost); with_startup_cpu_s: the whole process from its start, as Snakemake's figure is
    return {"wall_s": round(wall, 1), "slurm_wall_s": round(end - t0_wall, 1) if end else None,
            "manager_cpu_s": round(night_cpu, 2), "with_startup_cpu_s": round(cpu, 2),
            "manager_cpu_parts_s": parts, "startup_cpu_s": round(sum(started.values()), 2),
            "startup_cpu_parts_s": {k: round(v, 2) for k, v in started.items()},
            **({"idle": idle} if idle else {}),
            **({"self_cpu_by_thread_s": per_thread} if per_thread else {}),
            "calls": n_calls, "jobs": len(data["jobs"])}, conf


#: (bucket, substrings of a stack that put a sample in it), first match wins: what the
#: daemon's CPU is spent on, innermost layer first
LAYERS = (
    ("imports during the night (lazy imports)", ("_find_and_load",)),
    ("reader processes (fitsio headers, checksums, exit files)", ("desinight.readers\"",)),
    ("spawning sbatch/sacct/squeue (fork/exec, pipes)", ("subprocess.py",)),
    ("job-script rendering", ("jinja2/", "batch/render", "batch/script")),
    ("SQL: SQLAlchemy + sqlite3", ("sqlalchemy/", "sqlite3")),
    ("watchdog observer thread", ("watchdog/",)),
    ("APScheduler loop", ("apscheduler/",)),
    ("heartbeat / metrics / notify", ("monitor.py", "metrics.py", "notify.py", "liveness.py")),
    ("logging (JSON lines)", ("logging/", "logs.py")),
)
#: the tick a sample belongs to: the outermost of these frames in its stack
TICKS = ("tick_ingest", "tick_plan_submit", "tick_poll", "tick_exits", "tick_scan",
         "tick_campaigns", "check_leader", "_beat", "_loop")


def profile_buckets(raw: Path, rate: int = 100) -> dict:
    """py-spy's raw stacks (one ``frames count`` line each) summed into CPU seconds by layer
    and by tick. Each sample is 1/rate s of one thread on CPU."""
    layers: Counter = Counter()
    ticks: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        layers[next((name for name, keys in LAYERS if any(k in stack for k in keys)), "other Python")] += n
        if "desinight.readers\"" in stack:
            tick = "reader processes"
        else:
            frames = [f.split(" (")[0].rsplit(".", 1)[-1] for f in stack.split(";")]
            tick = next((f for f in frames if f in TICKS), "other")
        ticks[tick] += n
    sec = lambda c: {k: round(v / rate, 2) for k, v in c.most_common()}   # noqa: E731
    return {"sampled_cpu_s": round(total / rate, 2), "by_layer_s": sec(layers), "by_tick_s": sec(ticks)}


def steady_state(work: Path, env: dict, settle_s: float = 100, window_s: float = 180) -> dict:
    """Scheduler calls per hour while a job runs and nothing changes, production poll settings
    (the defaults: a 30 s poll backing off to 60 s)."""
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


SNAKEMAKE_TUNED = ["--slurm-init-seconds-before-status-checks", "3", "--seconds-between-status-checks", "3"]


def run_snakemake(work: Path, conf: Path, env: dict, tuned: bool) -> dict:
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    if not Path(snakemake).exists():
        return {"skipped": "snakemake not installed (pip install '.[bench]')"}
    (work / "Snakefile").write_text(snakefile_from(conf))
    log = work / "calls.log"
    env = {**env, "PATH": f"{make_shims(work / 'shims', log)}:{env['PATH']}"}
    t0, t0_wall = time.monotonic(), time.time()
    proc = subprocess.Popen([snakemake, "--executor", "slurm", "--jobs", "100", "--quiet",
                             "--latency-wait", "5", "--default-resources", "slurm_account=root",
                             "slurm_partition=debug", *(SNAKEMAKE_TUNED if tuned else [])],
                            cwd=work, env=env, stdout=open(work / "snakemake.out", "w"),
                            stderr=subprocess.STDOUT)
    cpu = cpu_of(proc)
    wall = time.monotonic() - t0
    done = len(list((work / "done").glob("*"))) if (work / "done").exists() else 0
    if proc.returncode != 0 or done != 33:
        tail = (work / "snakemake.out").read_text()[-600:]
        return {"skipped": f"snakemake failed (rc {proc.returncode}, {done}/33 done): {tail}"}
    ids = subprocess.run(["sacct", "-X", "-n", "-P", "-S", time.strftime("%Y-%m-%dT%H:%M:%S",
                          time.localtime(t0_wall - 1)), "-o", "JobID,WorkDir"],
                         capture_output=True, text=True).stdout.split()
    ids = [line.split("|")[0] for line in ids if line.endswith(f"|{work}") or f"|{work}/" in line]
    end = slurm_end(ids) if len(ids) == 33 else None
    return {"wall_s": round(wall, 1), "slurm_wall_s": round(end - t0_wall, 1) if end else None,
            "manager_cpu_s": round(cpu, 2), "calls": calls(log), "jobs": done}


def slurm_env() -> dict:
    """This process's environment with SLURM_CONF set (the local cluster's when unset), also
    exported to this process; exits when SLURM is not installed."""
    if shutil.which("sbatch") is None:
        raise SystemExit("SLURM not installed")
    if "SLURM_CONF" not in os.environ:
        out = subprocess.run(["bash", str(ROOT / "scripts" / "local-slurm"), "env"],
                             capture_output=True, text=True, check=True).stdout
        os.environ["SLURM_CONF"] = out.strip().split("=", 1)[1]
    return dict(os.environ)


def main(argv: list[str] | None = None) -> dict:
    env = slurm_env()
    # Snakemake's job step clears SLURM_* variables (SLURM_CONF included) before its `srun`,
    # so inside the job SLURM must find its config at the default path: link it for the run.
    default_conf = Path("/etc/slurm/slurm.conf")
    linked = False
    if not default_conf.exists():
        default_conf.parent.mkdir(parents=True, exist_ok=True)
        default_conf.symlink_to(env["SLURM_CONF"])
        linked = True
    try:
        if "--steady-only" in (argv or []):   # the load between events alone
            with tempfile.TemporaryDirectory() as tmp:
                result = {"desinight_steady_state": steady_state(Path(tmp), env)}
            print(json.dumps({"overhead": result}))
            return result
        return _compare(env, profile="--profile" in (argv or []), steady="--no-steady" not in (argv or []),
                        snakemake="--desinight-only" not in (argv or []))
    finally:
        if linked:
            default_conf.unlink()


def _line(name: str, r: dict) -> str:
    if "skipped" in r:
        return f"{name:24s}: skipped: {r['skipped']}"
    return (f"{name:24s}: wall {r['wall_s']} s (SLURM side {r['slurm_wall_s']} s), manager CPU "
            f"{r['manager_cpu_s']} s, calls {sum(r['calls'].values())} {r['calls']}")


def _compare(env: dict, profile: bool, steady: bool, snakemake: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs: dict[str, dict] = {}
        conf = None
        for cadence in CADENCES:
            (work / cadence).mkdir()
            runs[f"desinight_{cadence}"], c = run_desinight(work / cadence, env, cadence)
            conf = conf or c
            print(_line(f"desinight {cadence}", runs[f"desinight_{cadence}"]), flush=True)
        for tuned in ((False, True) if snakemake else ()):
            name = "snakemake_tuned" if tuned else "snakemake_defaults"
            (work / name).mkdir()
            runs[name] = run_snakemake(work / name, conf, env, tuned)
            print(_line(name.replace("_", " "), runs[name]), flush=True)
        result: dict = dict(runs)
        for r in runs.values():
            if "wall_s" in r:
                r["calls_per_minute"] = round(sum(r["calls"].values()) * 60 / r["wall_s"], 1)
        dn, dp = runs["desinight_benchmark"], runs["desinight_production"]
        result["budget"] = {"wall_production_over_benchmark": round(dp["wall_s"] / dn["wall_s"], 2),
                            "slurm_wall_production_over_benchmark":
                                round(dp["slurm_wall_s"] / dn["slurm_wall_s"], 2)
                                if dp["slurm_wall_s"] and dn["slurm_wall_s"] else None,
                            "calls_production_over_benchmark":
                                round(sum(dp["calls"].values()) / max(1, sum(dn["calls"].values())), 2)}
        print(f"load budget: production / benchmark cadence: {result['budget']}", flush=True)
        for sm_name in ("snakemake_tuned", "snakemake_defaults"):
            sm = runs.get(sm_name, {"skipped": "--desinight-only"})
            if "skipped" not in sm:
                result[f"ratio_{sm_name}_over_desinight_benchmark"] = {
                    "wall": round(sm["wall_s"] / dn["wall_s"], 2),
                    "manager_cpu": round(sm["manager_cpu_s"] / max(dn["manager_cpu_s"], 0.01), 2),
                    "manager_cpu_with_startup": round(sm["manager_cpu_s"] / max(dn["with_startup_cpu_s"], 0.01), 2),
                    "scheduler_calls": round(sum(sm["calls"].values()) / max(sum(dn["calls"].values()), 1), 2)}
                print(f"{sm_name} / desinight benchmark: {result[f'ratio_{sm_name}_over_desinight_benchmark']}",
                      flush=True)
        if profile and pyspy() is None:
            print("profile: skipped (py-spy not found: set $PYSPY or put py-spy on PATH)", flush=True)
        elif profile:
            (work / "profile").mkdir()
            prof = Path(tempfile.gettempdir()) / "desinight-overhead.pyspy"   # kept: the raw stacks
            runs_p, _ = run_desinight(work / "profile", env, "benchmark", profile=prof, idle_s=20)
            result["profile"] = {"manager_cpu_s_profiled": runs_p["manager_cpu_s"],
                                 "wall_s": runs_p["wall_s"],
                                 "manager_cpu_parts_s": runs_p["manager_cpu_parts_s"],
                                 "startup_cpu_parts_s": runs_p["startup_cpu_parts_s"],
                                 "idle": runs_p["idle"],
                                 "self_cpu_by_thread_s": runs_p.get("self_cpu_by_thread_s"),
                                 **profile_buckets(prof)}
            print(f"profile of one benchmark-cadence night (py-spy, CPU seconds; raw stacks in {prof}): "
                  f"{result['profile']}", flush=True)
        if steady:
            (work / "steady").mkdir()
            result["desinight_steady_state"] = steady_state(work / "steady", env)
    print(json.dumps({"overhead": result}))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
