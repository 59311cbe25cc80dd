"""`python -m bench`: run every benchmark, write docs/benchmarks.json and docs/benchmarks.md.

Each benchmark is a script under bench/ that prints its figures; it runs in its own process
(so one benchmark's memory or environment cannot bias the next). Its result is the JSON
object on its last output line when it prints one, else its output lines. A benchmark that
fails (e.g. no SLURM cluster up) is reported as such with the reason, never silently dropped.

    python -m bench                  # all
    python -m bench latency campaign # some
    python -m bench --markdown       # docs/benchmarks.md again from docs/benchmarks.json
    python -m bench --record NAME OUTPUT_FILE   # a bench run by hand (its saved output) into
                                                # the JSON, then the markdown again
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: name -> (script, arguments, what it measures)
BENCHES = {
    "sim": ("bench_sim.py", [], "raw-data simulator: small night, one full-size exposure"),
    "steps": ("bench_steps.py", [], "science throughput per camera, MPI speed-up, redshift accuracy"),
    "redshift": ("bench_steps.py", ["--redshift", "1", "2", "4", "5"],
                 "small-night chain on seeds the tests do not use: redshift accuracy vs truth"),
    "science": ("bench_science.py", [], "redshift success per class against depth and ELG [OII] "
                "flux, on seeds the tests do not use (draws docs/science-depth.png)"),
    "redshift-medium": ("bench_steps.py", ["--redshift", "--preset", "medium", "1"],
                        "medium-night chain (2 spectrographs): redrock seconds per spectrograph"),
    "latency": ("bench_latency.py", [], "daemon arrival-to-submission latency, native vs polling"),
    "archive": ("bench_archive.py", [], "1,000-night raw archive under the daemon: idle CPU, memory, "
                "inotify watches, polling stats, per watch mode"),
    "poll": ("bench_poll.py", [], "SLURM poll cost with 200 active jobs"),
    "campaign": ("bench_campaign.py", [], "1,000-night campaign on SQLite: planning time/memory, status, a round"),
    "campaign_pg": ("bench_campaign.py", ["--pg"], "1,000-night campaign on PostgreSQL: plan+save, "
                    "peak RSS, status/campaign status CLI, a round; CPU seconds and load beside each"),
    "campaign_pg_10k": ("bench_campaign.py", ["--pg", "--nights", "10000"],
                        "10,000-night campaign on PostgreSQL (~15 min)"),
    "overhead": ("bench_overhead.py", ["--profile"], "one night: desinight at benchmark and production "
                 "cadence, Snakemake at defaults and tuned; the daemon's CPU profile; load between events"),
    "night": ("bench_night.py", [], "a full-size night through the daemon on SLURM (MPI jobs through "
              "srun): wall time, seconds per kind, daemon CPU, database size, MaxRSS per job"),
    "readers": ("bench_readers.py", [], "untrusted input in reader processes: start-up, per exposure, per poll"),
    "takeover": ("bench_takeover.py", [], "standby daemon takeover after SIGKILL (PostgreSQL)"),
    "monitor": ("bench_monitor.py", [], "heartbeat, check probe and metrics scrape cost; event -> POST latency"),
}


def machine() -> dict:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "python": platform.python_version(), "os": platform.platform()}


#: per benchmark: what a reader must know next to its figures (conditions, causes of misses)
NOTES: dict[str, str] = {
    "overhead": "measured on 2026-11-30 12:07-12:25 UTC in one run (`python -m bench overhead`, "
                "py-spy in $PYSPY), load average 3.3-4 on the shared 2 cores. Manager CPU counts child "
                "processes for both tools: Snakemake's is its whole run (wait4: itself, its "
                "sbatch/sacct/scontrol calls and their PATH shims); desinight's is the night's share of "
                "its long-running daemon (/proc, t0 to the end: its threads, the sbatch/sacct/squeue it "
                "reaped, its reader processes). Per night that is met: 1.68 s vs Snakemake tuned 3.5 s "
                "(2.08x), 1.38 s at production cadence. Counted like Snakemake's, the whole daemon process "
                "from its start, it is NOT met: 3.89 s vs 3.5 s. Measured cause: start-up, once per daemon "
                "and not per night, is 1.92 s: 1.45 s in the daemon (importing the CLI, SQLAlchemy, "
                "alembic, APScheduler and watchdog alone takes 1.1 s of CPU; then the migration check, "
                "reconcile and the first scan and poll) and 0.47 s for its two reader processes (Python, "
                "numpy and fitsio each). The night's 1.68 s (profile row, py-spy over a second "
                "benchmark-cadence night, 1.73 s): the ticks thread 1.23 s; the other threads 0.06 s "
                "(APScheduler's scheduling thread 0.03, main 0.02, watchdog 0.01); sbatch/sacct/squeue "
                "and their shims 0.36 s; reader processes 0.05 s. Idle, the daemon used 0.45% of a core "
                "(ingest tick every 1 s, exit look 2 s, heartbeat and leader check 5 s): about 0.14 s of "
                "a 30 s night. Inside the ticks (py-spy samples, which also count time in system calls "
                "such as SQLite's fsync, so they add to more than the CPU): SQLAlchemy + sqlite3 60%, "
                "script rendering 6%, fork/exec of the scheduler commands 4%, imports 6% (the first "
                "night's lazy imports); by tick, ingest + plan + submission of the 33 jobs 1.82 s "
                "(`tick_ingest` holds `tick_plan_submit`), poll 0.63 s, heartbeat 0.07 s. Before this "
                "session's cuts, on a quiet box, desinight alone: 2.44 s per night; after: 1.68 s. The "
                "cuts: the poll lazy-loaded each active job's attempts to ask whether an attempt is the "
                "latest (one SELECT per job per poll, a quarter of the ticks' samples), now one query; "
                "the orphaned-dependants check loaded every queued job with its parents on every poll, "
                "now one indexed query that returns nothing unless a queued job has a broken parent; "
                "completed jobs move in one compare-and-set per state pair (was ~5 statements per job); "
                "both reader processes start with the daemon (the second started mid-night); the poll "
                "hands the daemon its active attempt dirs (one query fewer per poll); the submission "
                "waves settle dep_failed once per round. Wall: the production cadence's 59.8 s is the "
                "manager knowing (its 30 s budget poll); the SLURM-side wall is within 9% of benchmark "
                "cadence (29.8 s vs 27.3 s), since afterok chains start the children without a poll. "
                "Snakemake's walls are stretched by the load (each of its jobs starts a Python snakemake "
                "inside the job; SLURM-NOTES has 146 s tuned and 403 s at defaults on a quiet machine). "
                "Snakemake asks `scontrol show job` per job and sacct per status round; it calls no "
                "squeue.",
    "campaign_pg": "see campaign_pg_10k for the causes; the same code at a tenth of the size. Before "
                   "this round of work (COPY only): plan+save 246 s, status 0.57 s, a round 17-74 s at load "
                   "~15. Since: plan and save in batches of nights, job ids from the sequence, = ANY lookups, "
                   "cached camera sets, ANALYZE after the save, covering indexes (migration 0007), the poll "
                   "loading attempts with their jobs, and the CLI skipping alembic at the head.",
    "campaign_pg_10k": "10,000 nights, 790,000 jobs, on the 2 shared cores (load ~4.5; the PostgreSQL server "
                       "on the same cores). plan+save NOT met: 122 s of desinight CPU (34 s of it planning, "
                       "the dry run's figure) plus 165 s of PostgreSQL CPU; with foreign-key triggers off "
                       "(an experiment at 300 nights, session_replication_role=replica) the server's share "
                       "fell from 4.6 s to 2.2 s, so about half the server's work is the per-row foreign-key "
                       "checks of COPY into job, job_exposure, job_edge and state_event, the rest index upkeep "
                       "and the 400,000 exposure moves. 287 CPU-seconds cannot fit in 60 s on 2 cores: it needs "
                       "planning in parallel workers and a load path without per-row checks. Memory met: "
                       "batches of whole nights (50,000 jobs) keep 893 MiB peak, most of it the 400,000 "
                       "selected exposures. status (re-measured after the status work, load ~3.3, best of 3-5): every "
                       "night's row, what `--json` returns by default, costs 0.33 s in process (was 0.58 s on the same "
                       "database; the per-night GROUP BY alone takes ~185 ms in PostgreSQL, EXPLAIN ANALYZE, the rest is"
                       " now plain driver tuples); the table's view (`--nights 7`: the 7 latest nights and one line for "
                       "the rest, from counts over the job(production_id, state, kind) index) takes 0.03 s, met. The CLI"
                       " NOT met: `status --json` 1.55 s wall (was 2.35 s), `--nights 7` 1.2 s, about 1.0 s of it CPU "
                       "spent importing (python -X importtime, 0.9 s: SQLAlchemy core ~0.27 s, its ORM and engine ~0.14 "
                       "s, the PostgreSQL dialect ~0.11 s, psycopg ~0.14 s, the ORM models ~0.1 s); orchestrate, the "
                       "backends and rich are no longer imported. Below 0.3 s needs a process that is already running "
                       "(the daemon answering) or no SQLAlchemy on this path. `campaign status` 1.42 s (was 1.61 s): the"
                       " same start-up plus its counts over all 790,000 jobs. "
                       "A round NOT met: per-job work in "
                       "orchestrate, not campaign size (30 nights: the same 9-11 s): each of the 500 settled "
                       "jobs was one compare-and-set transition with its event, each of the 500 submissions "
                       "one rendered script and one commit of its backend id (the outbox's crash safety). "
                       "Since this run the poll moves plain ends in one compare-and-set per state pair (the "
                       "overhead work): re-measured at 30 nights on PostgreSQL (`python bench/bench_campaign.py "
                       "--pg --nights 30 --no-dry-run`, load ~2), a round is 3.8-5.7 s wall, 2.4-2.5 s CPU: "
                       "settling 500 ends 0.46-1.0 s (was 3.6-7.0 s), submitting 500 2.9-5.6 s (~5 ms CPU "
                       "each: render, write, commit the id). On real SLURM the sbatch calls alone are ~10 ms "
                       "each (SLURM-NOTES), 5 s for 500: a round of 500 submissions cannot take under 1 s "
                       "whatever the bookkeeping, so the target holds only for rounds of <~80 submissions.",
    "night": "the small preset, 1 spectrograph (3 cameras), 12 science exposures over 4 tiles, 37 jobs, "
             "arc/flat/science with 3 ranks through `srun --mpi=pmi2`, measured at load average ~15 on "
             "the shared 2 cores: the seconds per kind are mostly waiting for a core, and the MPI "
             "speed-up of 1.0 (3 ranks vs 1, gather included) says the same: no idle core to spread "
             "onto. On an idle node bench_steps measured 1.76x for 2 ranks.",
}

#: per benchmark printing lines: the lines that carry its headline figure
HEADLINE_LINES = {
    "sim": ("small night", "full science exposure"),
    "steps": ("preproc:", "extract (", "speed-up"),
    "redshift": ("redrock (", "seed "),
    "redshift-medium": ("redrock (", "seed "),
    "poll": ("poll of 200 ended",),
}


def _get(results: dict, path: str):
    """results["a"]["b"]... for "a.b...", None where missing."""
    cur = results
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _steady_calls_per_hour(r: dict) -> int | None:
    steady = r.get("desinight_steady_state") if isinstance(r, dict) else None
    return sum(steady["calls_per_hour"].values()) if steady else None


#: (issue item, target in words, bench, figure: a dotted path or a function of that bench's
#: result, test on the figure). Each is marked met / NOT met / not measured in the markdown.
TARGETS = [
    ("#18.0", "archive, native: idle CPU < 2% of a core", "archive", "native.idle_cpu_pct", lambda v: v < 2),
    ("#18.0", "archive, polling: idle CPU < 2% of a core", "archive", "polling.idle_cpu_pct", lambda v: v < 2),
    ("#18.0", "archive: no inotify overflow", "archive", "native.overflows", lambda v: v == 0),
    ("#18.1", "reaction, native: median < 0.5 s", "latency", "native.median_s", lambda v: v < 0.5),
    ("#18.1", "reaction, polling: max <= poll interval + 0.5 s (1.5 s)", "latency", "polling.max_s",
     lambda v: v <= 1.5),
    ("#18.2", "production cadence, jobs queued and nothing changing: <= 240 scheduler calls an hour "
     "(SchedMD: polls >= 30 s apart, a poll = sacct + squeue)", "overhead", _steady_calls_per_hour,
     lambda v: v <= 240),
    ("#18.2", "production cadence: the night's SLURM-side wall time within 10% of benchmark cadence",
     "overhead", "budget.slurm_wall_production_over_benchmark", lambda v: v <= 1.1),
    ("#18.3", "manager CPU per night, child processes included for both (Snakemake: the whole run; "
     "desinight, a daemon that lives for many nights: the night's share): desinight (benchmark cadence) "
     "below Snakemake tuned (figure: Snakemake / desinight)", "overhead",
     "ratio_snakemake_tuned_over_desinight_benchmark.manager_cpu", lambda v: v > 1),
    ("#18.3", "the same, desinight counted like Snakemake: its whole process, start-up included "
     "(figure: Snakemake / desinight)", "overhead",
     "ratio_snakemake_tuned_over_desinight_benchmark.manager_cpu_with_startup", lambda v: v > 1),
    *[t for name, n in (("campaign_pg_10k", "10,000"), ("campaign_pg", "1,000")) for t in (
        ("#18.5", f"{n} nights on PostgreSQL: plan+save < 60 s", name, "plan_and_save.wall_s",
         lambda v: v < 60),
        ("#18.5", f"{n} nights on PostgreSQL: plan+save < 2 GiB (peak RSS, MiB)", name,
         "plan_and_save.peak_rss_mib", lambda v: v < 2048),
        ("#18.5", f"{n} nights on PostgreSQL: `status --json` < 0.3 s (whole CLI process)", name,
         "cli_status_s", lambda v: v < 0.3),
        ("#18.5", f"{n} nights on PostgreSQL: `campaign status` < 0.3 s (whole CLI process)", name,
         "cli_campaign_status_s", lambda v: v < 0.3),
        ("#18.5", f"{n} nights on PostgreSQL: status query < 0.3 s (in process)", name,
         "status_collect_latest_s", lambda v: v < 0.3),
        ("#18.5", f"{n} nights on PostgreSQL: `status --nights 7 --json` < 0.3 s (whole CLI process; "
         "the table's default view)", name, "cli_status_recent_s", lambda v: v < 0.3),
        ("#18.5", f"{n} nights on PostgreSQL: status query, 7 latest nights < 0.3 s (in process)",
         name, "status_collect_recent_s", lambda v: v < 0.3),
        ("#18.5", f"{n} nights on PostgreSQL: a campaign round < 1 s (500 submitted, 500 settled)",
         name, "round_s", lambda v: v < 1))],
]


def targets(results: dict) -> list[str]:
    """The targets table: each target with its figure and met / NOT met / not measured."""
    out = ["| issue | target | figure | |", "|---|---|---|---|"]
    for issue, words, bench, figure, ok in TARGETS:
        res = results.get(bench, {})
        value = figure(res) if callable(figure) else _get(res, figure)
        if value is None:
            why = res.get("failed") or res.get("skipped") or "not run"
            out.append(f"| {issue} | {words} | - | not measured ({bench}: {why}) |")
        else:
            out.append(f"| {issue} | {words} | {value} ({bench}) | {'met' if ok(value) else '**NOT met**'} |")
    return out


def headlines(results: dict) -> list[str]:
    """The figures the issues ask for, picked from the full results below."""
    out = []
    lat = results.get("latency", {})
    if "native" in lat and "polling" in lat:
        out.append(f"- latency (file complete -> first sbatch): native median {lat['native']['median_s']} s / "
                   f"p95 {lat['native']['p95_s']} s; polling median {lat['polling']['median_s']} s / "
                   f"p95 {lat['polling']['p95_s']} s"
                   + (f" / max {lat['polling']['max_s']} s; targets (native median < 0.5 s, polling max <= "
                      f"poll interval + 0.5 s): {'met' if lat['native'].get('target_met') else 'NOT met'}, "
                      f"{'met' if lat['polling'].get('target_met') else 'NOT met'}"
                      if "max_s" in lat["polling"] else ""))
    arc = results.get("archive", {})
    for mode in ("native", "polling"):
        if mode in arc:
            r = arc[mode]
            out.append(f"- archive of {arc['nights']} nights ({arc['files']} files), {mode}: idle CPU "
                       f"{r['idle_cpu_pct']}% of a core, RSS {r['rss_mb']} MB"
                       + (f" ({r['rss_mb_small_archive']} MB with 10 nights)" if "rss_mb_small_archive" in r else "")
                       + ", inotify watches "
                       f"{r['inotify_watches']}, overflows {r['overflows']}: target "
                       f"{'met' if r['target_met'] else 'NOT met'}")
    if "polling_ops" in arc:
        out.append(f"- polling watcher metadata operations per minute: {arc['polling_ops']['ops_per_minute']} "
                   f"(2 nights watched), {arc['polling_ops_4_nights']['ops_per_minute']} (4 nights watched), "
                   f"whatever the archive's size")
    ov = results.get("overhead", {})
    runs = [(k, ov[k]) for k in ("desinight_benchmark", "desinight_production", "snakemake_defaults",
                                 "snakemake_tuned") if isinstance(ov.get(k), dict) and "wall_s" in ov[k]]
    if runs:
        out.append("- one night, same graph and SLURM, in one run (wall to the manager knowing / SLURM side, "
                   "manager CPU, scheduler calls): " + "; ".join(
                       f"{k.replace('_', ' ')} {r['wall_s']} s / {r.get('slurm_wall_s')} s, "
                       f"{r['manager_cpu_s']} s CPU, {sum(r['calls'].values())} calls" for k, r in runs))
    if runs:   # the same runs, calls per command (issue #18.3 asks for them, not only totals)
        out.append("- scheduler calls per command: " + "; ".join(
            f"{k.replace('_', ' ')} " + ", ".join(f"{c} {n}" for c, n in r["calls"].items() if n)
            for k, r in runs))
        dn = ov.get("desinight_benchmark", {})
        if "with_startup_cpu_s" in dn:
            out.append(f"- desinight's CPU counted like Snakemake's, the whole process from its start "
                       f"(start-up {dn.get('startup_cpu_s')} s included): benchmark cadence "
                       f"{dn['with_startup_cpu_s']} s, production cadence "
                       f"{ov.get('desinight_production', {}).get('with_startup_cpu_s')} s")
    prof = ov.get("profile")
    if isinstance(prof, dict) and "self_cpu_by_thread_s" in prof:
        out.append(f"- where the daemon's CPU goes over one benchmark-cadence night ({prof['wall_s']} s, "
                   f"{prof['manager_cpu_s_profiled']} s CPU): parts {prof['manager_cpu_parts_s']}; "
                   f"the daemon's own threads {prof['self_cpu_by_thread_s']}; idle before the night "
                   f"{prof['idle']['pct_of_a_core']}% of a core; start-up (once per daemon, not per "
                   f"night) {prof['startup_cpu_parts_s']}; inside the threads, py-spy samples (wall "
                   f"on CPU or in a system call) by tick {prof['by_tick_s']} and by layer {prof['by_layer_s']}")
    for k in ("ratio_snakemake_tuned_over_desinight_benchmark", "ratio_snakemake_defaults_over_desinight_benchmark"):
        if k in ov:
            out.append(f"- {k.removeprefix('ratio_').replace('_', ' ')}: {ov[k]}")
    if "budget" in ov:
        out.append(f"- load budget, production over benchmark cadence: {ov['budget']}")
    for name in ("campaign", "campaign_pg", "campaign_pg_10k"):
        c = results.get(name, {})
        if "plan_and_save" in c:
            cpu = c["plan_and_save"].get("cpu_s")
            out.append(f"- {name}: {c['nights']} nights ({c.get('database', 'sqlite')}, {c['source_jobs']} jobs): "
                       f"plan+save {c['plan_and_save']['wall_s']} s"
                       + (f" ({cpu} s CPU + {c['plan_and_save'].get('server_cpu_s')} s PostgreSQL CPU, load "
                          f"{c['plan_and_save'].get('load_average')})" if cpu is not None else "")
                       + f", peak RSS {c['plan_and_save']['peak_rss_mib']} MiB; "
                       f"status {c['status_collect_latest_s']} s (CLI {c.get('cli_status_s')} s); campaign status "
                       f"CLI {c.get('cli_campaign_status_s')} s; round {c.get('round_s')} s; database "
                       f"{c.get('db_mib')} MiB")
    nt = results.get("night", {})
    if "jobs" in nt:
        out.append(f"- full night through the daemon on SLURM ({nt['preset']} preset, {nt['spectrographs']} "
                   f"spectrograph(s), {nt['science_exposures']} science exposures, {nt['jobs']} jobs, "
                   f"{nt['ranks']} MPI ranks): last redshift {nt['wall_to_last_redshift_s']} s after t0, "
                   f"daemon CPU {nt['daemon_cpu_s']} s, database {nt['db_mib']} MiB, largest MaxRSS "
                   f"{max(k['max_rss_mb'] for k in nt['per_kind'].values())} MB; MPI speed-up through "
                   f"the job runner {nt.get('mpi', {}).get('speedup')}")
    steady = ov.get("desinight_steady_state")
    if steady:
        out.append(f"- scheduler calls per hour while jobs wait and nothing changes: "
                   f"{steady['calls_per_hour']} (production poll settings)")
    for name, keys in HEADLINE_LINES.items():
        for line in results.get(name, {}).get("output", []):
            if any(k in line for k in keys):
                out.append(f"- {name}: {line.strip()}")
    return out


def to_markdown(results: dict, info: dict) -> str:
    lines = ["# Benchmarks", "",
             "Regenerate with `python -m bench` (or `make bench`); figures from one run on:", "",
             f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory']} ({info['os']})",
             f"- python {info['python']}, run {info['when']}", ""]
    heads = headlines(results)
    if heads:
        lines += ["## Headline figures", "", *heads, ""]
    lines += ["## Targets", "", "Each target of the issues, with the figure of this run that decides it:", "",
              *targets(results), ""]
    notes = {k: v for k, v in NOTES.items() if k in results}
    if notes:
        lines += ["## Notes", "", *[f"- {k}: {v}" for k, v in notes.items()], ""]
    for name, res in results.items():
        lines += [f"## {name}: {BENCHES[name][2]}", ""]
        if "failed" in res or "skipped" in res:
            lines += [f"not measured: {res.get('failed') or res.get('skipped')}", ""]
            continue
        if "output" in res:
            lines += ["```", *res["output"], "```", ""]
            continue
        lines += ["| figure | value |", "|---|---|"]
        for k, v in _flatten(res):
            lines.append(f"| {k} | {v} |")
        lines.append("")
    # figures measured by hand (not by a bench run) are kept in their own file, so that
    # regenerating the page never drops them
    hand = ROOT / "docs" / "benchmarks-hand.md"
    if hand.exists():
        lines += [l for l in hand.read_text().splitlines() if not l.startswith("<!--")]
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _result(lines: list[str]) -> dict:
    """The last JSON line's object (unwrapped if it has one key), else the printed lines."""
    last = next((l for l in reversed(lines) if l.startswith("{")), None)   # its last JSON line
    if last is not None:
        try:
            obj = json.loads(last)
            return next(iter(obj.values())) if len(obj) == 1 and isinstance(
                next(iter(obj.values())), dict) else obj
        except ValueError:
            pass
    return {"output": [l for l in lines if not l.startswith("  File ")][-20:]}


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:     # rewrite docs/benchmarks.md from the JSON, running nothing
        data = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
        (ROOT / "docs" / "benchmarks.md").write_text(to_markdown(data["results"], data["machine"]))
        return 0
    if argv[:1] == ["--record"] and len(argv) == 3 and argv[1] in BENCHES:
        out_json = ROOT / "docs" / "benchmarks.json"
        data = json.loads(out_json.read_text())
        path = Path(argv[2])
        lines = [l for l in path.read_text().splitlines() if l.strip()]
        data["results"][argv[1]] = {**_result(lines), "measured": (
            f"{datetime.fromtimestamp(path.stat().st_mtime, timezone.utc):%Y-%m-%d %H:%M} UTC, by hand "
            f"(python bench/{BENCHES[argv[1]][0]} {' '.join(BENCHES[argv[1]][1])}), machine shared and loaded")}
        out_json.write_text(json.dumps(data, indent=1, default=str))
        (ROOT / "docs" / "benchmarks.md").write_text(to_markdown(data["results"], data["machine"]))
        return 0
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    out_json = ROOT / "docs" / "benchmarks.json"
    results = json.loads(out_json.read_text()).get("results", {}) if out_json.exists() else {}
    for name in names:
        script, args, what = BENCHES[name]
        print(f"== {name}: {what}", flush=True)
        t0 = time.monotonic()
        load = os.getloadavg()[0]
        p = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(p.stdout, end="", flush=True)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        if p.returncode != 0:
            results[name] = {"failed": f"exit {p.returncode}: {lines[-1] if lines else ''}"}
        else:
            results[name] = _result(lines)
        # the machine is shared: each figure carries when and under what load it was measured
        results[name]["measured"] = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
                                     f"{load:.1f} on {os.cpu_count()} cores at its start")
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    info = {**machine(), "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out_json.write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str))
    (ROOT / "docs" / "benchmarks.md").write_text(to_markdown(results, info))
    print(f"wrote {out_json} and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
