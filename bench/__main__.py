"""`python -m bench`: run every benchmark, write docs/benchmarks.json and docs/benchmarks.md.

Each benchmark is a script under bench/ that prints its figures; it runs in its own process
(so one benchmark's memory or environment cannot bias the next). Its result is the JSON
object on its last output line when it prints one, else its output lines. A benchmark that
fails (e.g. no SLURM cluster up) is reported as such with the reason, never silently dropped.

    python -m bench                  # all
    python -m bench latency campaign # some
    python -m bench --markdown       # docs/benchmarks.md again from docs/benchmarks.json
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
    "redshift-medium": ("bench_steps.py", ["--redshift", "--preset", "medium", "1"],
                        "medium-night chain (2 spectrographs): redrock seconds per spectrograph"),
    "latency": ("bench_latency.py", [], "daemon arrival-to-submission latency, native vs polling"),
    "archive": ("bench_archive.py", [], "1,000-night raw archive under the daemon: idle CPU, memory, "
                "inotify watches, polling stats, per watch mode"),
    "poll": ("bench_poll.py", [], "SLURM poll cost with 200 active jobs"),
    "campaign": ("bench_campaign.py", [], "1,000-night campaign planning time/memory, status latency"),
    "overhead": ("bench_overhead.py", [], "manager overhead for a night, side by side with Snakemake"),
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


#: per benchmark printing lines: the lines that carry its headline figure
HEADLINE_LINES = {
    "sim": ("small night", "full science exposure"),
    "steps": ("preproc:", "extract (", "speed-up"),
    "redshift": ("redrock (", "seed "),
    "redshift-medium": ("redrock (", "seed "),
    "poll": ("poll of 200 ended",),
    "campaign": ("campaign plan", "campaign submit", "status.collect", "campaign run ticks", "targets"),
}


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
    if "ratio_snakemake_over_desinight" in ov:
        dn, sm, r = ov["desinight"], ov["snakemake"], ov["ratio_snakemake_over_desinight"]
        out.append(f"- one night, desinight vs Snakemake (same graph, same SLURM): wall {dn['wall_s']} s vs "
                   f"{sm['wall_s']} s ({r['wall']}x), manager CPU {dn['manager_cpu_s']} s vs "
                   f"{sm['manager_cpu_s']} s ({r['manager_cpu']}x), scheduler calls "
                   f"{sum(dn['calls'].values())} vs {sum(sm['calls'].values())} ({r['scheduler_calls']}x)")
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
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _result(lines: list[str]) -> dict:
    """The last line's JSON object (unwrapped if it has one key), else the printed lines."""
    if lines and lines[-1].startswith("{"):
        try:
            obj = json.loads(lines[-1])
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
        p = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(p.stdout, end="", flush=True)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        if p.returncode != 0:
            results[name] = {"failed": f"exit {p.returncode}: {lines[-1] if lines else ''}"}
        else:
            results[name] = _result(lines)
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    info = {**machine(), "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out_json.write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str))
    (ROOT / "docs" / "benchmarks.md").write_text(to_markdown(results, info))
    print(f"wrote {out_json} and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
