"""`python -m bench`: run every benchmark, write docs/benchmarks.json and docs/benchmarks.md.

Each benchmark module exposes ``main(argv) -> dict`` (and prints its own figures). A module
whose prerequisites are missing (e.g. no SLURM cluster up) is reported as skipped with the
reason, never silently dropped.

    python -m bench                  # all
    python -m bench latency campaign # some
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: name -> (module, arguments, what it measures)
BENCHES = {
    "sim": ("bench.bench_sim", [], "raw-data simulator: small night, one full-size exposure"),
    "steps": ("bench.bench_steps", [], "science throughput per camera, MPI speed-up, redshift accuracy"),
    "latency": ("bench.bench_latency", [], "daemon arrival-to-submission latency, native vs polling"),
    "poll": ("bench.bench_poll", [], "SLURM poll cost with 200 active jobs"),
    "campaign": ("bench.bench_campaign", [], "1,000-night campaign planning time/memory, status latency"),
    "overhead": ("bench.bench_overhead", [], "manager overhead for a night, side by side with Snakemake"),
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


def to_markdown(results: dict, info: dict) -> str:
    lines = ["# Benchmarks", "",
             "Regenerate with `python -m bench` (or `make bench`); figures from one run on:", "",
             f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory']} ({info['os']})",
             f"- python {info['python']}, run {info['when']}", ""]
    for name, res in results.items():
        lines += [f"## {name}: {BENCHES[name][2]}", ""]
        if "skipped" in res:
            lines += [f"skipped: {res['skipped']}", ""]
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


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    out_json = ROOT / "docs" / "benchmarks.json"
    results = json.loads(out_json.read_text()).get("results", {}) if out_json.exists() else {}
    for name in names:
        mod_name, args, what = BENCHES[name]
        print(f"== {name}: {what}", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(mod_name)
            res = mod.main(args)
            results[name] = res if isinstance(res, dict) else {"result": res}
        except ModuleNotFoundError as e:
            results[name] = {"skipped": f"not available ({e.name})"}
        except SystemExit as e:
            results[name] = {"skipped": f"exited {e.code}"}
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            results[name] = {"skipped": f"failed: {type(e).__name__}: {e}"}
        print(f"   ({time.monotonic() - t0:.1f} s)", flush=True)
    info = {**machine(), "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    out_json.write_text(json.dumps({"machine": info, "results": results}, indent=1, default=str))
    (ROOT / "docs" / "benchmarks.md").write_text(to_markdown(results, info))
    print(f"wrote {out_json} and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
