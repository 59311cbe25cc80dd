"""A 1,000-night (or 10,000-night) campaign on SQLite or PostgreSQL: plan time, peak memory,
status latency, one campaign round.

Builds a synthetic nightly production ``daily`` directly with bulk inserts (1,000 nights,
40 exposures a night: 4 zeros, 3 arcs, 3 flats, 30 science over 5 tiles; 30 cameras; and
its ~79,000 jobs, so the database is the size a real one would be), then runs the real
commands as child processes and measures each with ``os.wait4`` (wall time, peak RSS):

* ``desinight campaign plan``   the dry run over all 1,000 nights
* ``desinight campaign submit`` plan + save (bulk inserts) of the whole campaign
* ``desinight campaign submit`` again (idempotent: nothing new)

and then, in this process, ``status.collect()`` (the latest night and the nights table) and
``campaign.progress()`` on that database, plus ``desinight status`` as a child process.
Targets (issue #18, at 10,000 nights on PostgreSQL): plan+save < 60 s and < 2 GiB; status
< 0.3 s; a campaign round < 1 s.

    python bench/bench_campaign.py [--nights 1000] [--pg | --db-url URL] [--keep DIR]
                                   [--keep-db] [--no-dry-run]

``--pg``: a fresh database of the run's own on the local PostgreSQL ($DESINIGHT_TEST_PG_URL,
else ``scripts/local-postgres url``; ``--db-url``: on that server), dropped afterwards
(``--keep-db``: left for EXPLAIN and the like; drop it yourself).

Every figure comes with its CPU seconds (and, on PostgreSQL, the server's) and the load
average: the machine is shared, so wall times are pessimistic. The last lines list each
target with met / NOT met; ``python -m bench`` puts them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desinight import campaign as C  # noqa: E402
from desinight.app import open_context  # noqa: E402
from desinight.batch.base import Capabilities  # noqa: E402
from desinight.config import Config  # noqa: E402
from desinight.core.manifest import parse_manifest  # noqa: E402
from desinight.db import bulk, repo  # noqa: E402
from desinight.db.engine import transaction  # noqa: E402

CAMERAS = ",".join(f"{a}{s}" for s in range(10) for a in "brz")
TILES_PER_NIGHT = 5
SCIENCE_PER_TILE = 6


class _NoBackend:
    name = "none"


class _AcceptingBackend:
    """Takes every submission and reports it completed at the next poll: the manager's own
    cost of a tick, without a scheduler's (bench_poll and bench_overhead measure SLURM's)."""
    name = "bench"
    poll_warning = None
    capabilities = Capabilities(can_lag=True)

    def __init__(self):
        self.ids: list[str] = []

    def submit(self, req) -> str:
        self.ids.append(str(len(self.ids) + 1))
        return self.ids[-1]

    def poll(self, ids):
        from desinight.batch.base import BackendJob
        from desinight.core.states import JobState
        return {i: BackendJob(i, JobState.COMPLETED, exit_code=0) for i in ids}

    def find(self, tag):
        return {}


def nights(n: int, first: date = date(2024, 1, 1)) -> list[int]:
    return [int((first + timedelta(days=i)).strftime("%Y%m%d")) for i in range(n)]


def exposure_rows(night_list: list[int]) -> list[dict]:
    rows = []
    expid = 100000
    for i, night in enumerate(night_list):
        def add(obstype: str, tile=None, seqnum=None, seqtot=None, bad=""):
            nonlocal expid
            expid += 1
            rows.append({"expid": expid, "night": night, "obstype": obstype, "tileid": tile,
                         "exptime": 900.0 if obstype == "SCIENCE" else 1.0, "program": "dark",
                         "seqnum": seqnum, "seqtot": seqtot, "cameras": CAMERAS,
                         "bad_cameras": bad, "status": "planned",
                         "raw_path": f"/raw/{night}/{expid:08d}/desi-{expid:08d}.fits.fz"})
        for k in range(4):
            add("ZERO", seqnum=k + 1, seqtot=4)
        for k in range(3):
            add("ARC", seqnum=k + 1, seqtot=3)
        for k in range(3):
            add("FLAT", seqnum=k + 1, seqtot=3)
        for t in range(TILES_PER_NIGHT):
            tile = 1000 + (i * TILES_PER_NIGHT + t) % 20000
            for k in range(SCIENCE_PER_TILE):
                add("SCIENCE", tile, k + 1, SCIENCE_PER_TILE, bad="b3" if k == 2 else "")
    return rows


def build_source(cfg: Config, night_list: list[int]) -> dict:
    t0 = time.perf_counter()
    ctx = open_context(cfg, backend=_NoBackend(), create=True)
    rows = exposure_rows(night_list)
    with transaction(ctx.sessions) as s:
        prod, _ = repo.ensure_production(s, "daily", str(cfg.raw_root), str(cfg.redux_root / "daily"))
        bulk.insert_nights(s, prod, night_list)
        bulk.insert_exposures(s, prod, rows)
        # the nightly production's own jobs, planned by the same code the campaign uses
        m = parse_manifest(f'[campaign]\nname = "daily"\n[selection]\n'
                           f'night_ranges = [[{night_list[0]}, {night_list[-1]}]]\n')
        pv = C.Preview(m, "daily", cfg.raw_root, cfg.redux_root / "daily", False,
                       nights=night_list)
        # saved in batches of nights, as enqueue does: 10,000 nights' jobs never held at once
        C._plan(pv, [{**r, "status": "ingested"} for r in rows], {}, cfg.max_calib_age_nights,
                sink=lambda jobs: bulk.save_jobs(s, prod, jobs, {}, "campaign:bench"))
    ctx.sessions.kw["bind"].dispose()
    return {"exposures": len(rows), "jobs": pv.new_total, "build_s": round(time.perf_counter() - t0, 1)}


def child(argv: list[str], cwd: Path) -> tuple[float, float, int, str, float]:
    """(wall s, peak RSS MiB, exit code, stdout, CPU s) of one child process. CPU seconds
    (user + system) are the fair figure on a shared machine: wall time includes waiting for
    a core (and, on PostgreSQL, for the server's share of them)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    return (time.perf_counter() - t0, ru.ru_maxrss / 1024, p.returncode, out,
            ru.ru_utime + ru.ru_stime)


def load() -> float:
    """The 1-minute load average now (other engineers' work on the same cores)."""
    return round(os.getloadavg()[0], 1)


def server_cpu_s() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server's processes (a bench on
    PostgreSQL spends much of its wall time there), None when they cannot be read."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    found = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in ("postgres", "postmaster"):
            found = True
            fields = parts[1].split()
            # utime, stime, and the reaped backends' (cutime, cstime: a connection's backend
            # exits with its client and its CPU moves to the postmaster's)
            total += sum(int(x) for x in fields[11:15])
    return round(total / tick, 1) if found else None


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=1000)
    ap.add_argument("--keep", help="build in this directory and keep it")
    ap.add_argument("--pg", action="store_true", help="on PostgreSQL (a fresh database)")
    ap.add_argument("--db-url", help="PostgreSQL server URL to make the fresh database on "
                    "(default: $DESINIGHT_TEST_PG_URL, else scripts/local-postgres url); implies --pg")
    ap.add_argument("--keep-db", action="store_true",
                    help="leave the PostgreSQL database in place (its URL is printed); drop it yourself")
    ap.add_argument("--no-dry-run", action="store_true",
                    help="skip `campaign plan` (the dry run) and the idempotent resubmit")
    args = ap.parse_args(argv)
    if args.pg or args.db_url:
        with pg_database(args.db_url, keep=args.keep_db) as url:
            return run(args, url)
    return run(args, "")


@contextlib.contextmanager
def pg_database(base: str | None = None, keep: bool = False):
    """A fresh PostgreSQL database of this run's own (the server is shared), dropped
    afterwards, also when the run fails."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    base = base or os.environ.get("DESINIGHT_TEST_PG_URL") or subprocess.run(
        ["bash", str(Path(__file__).resolve().parent.parent / "scripts" / "local-postgres"), "url"],
        capture_output=True, text=True, check=True).stdout.strip()
    name = f"dn_bench_campaign_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name} (drop it: DROP DATABASE \"{name}\")", flush=True)
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def db_size_mib(cfg: Config) -> float:
    if not cfg.db_url:
        return (cfg.state_dir / "desinight.db").stat().st_size / 2**20
    from sqlalchemy import create_engine, text
    eng = create_engine(cfg.db_url)
    with eng.connect() as c:
        size = c.execute(text("select pg_database_size(current_database())")).scalar()
    eng.dispose()
    return size / 2**20


def run(args, db_url: str) -> dict:
    root = Path(args.keep or tempfile.mkdtemp(prefix="dn-bench-campaign-"))
    if args.keep and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        cfg = Config(production="daily", raw_root=root / "raw", redux_root=root / "redux",
                     state_dir=root / "state", db_url=db_url)
        (root / "desinight.toml").write_text(
            '[desinight]\nproduction = "daily"\nraw_root = "raw"\nredux_root = "redux"\n'
            'state_dir = "state"\n' + (f'db_url = "{db_url}"\n' if db_url else ""))
        night_list = nights(args.nights)
        # Built in a child process: Linux keeps a process's peak RSS across exec, so children
        # started from a bench that had held the source's rows would all report its peak.
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            src = pool.apply(build_source, (cfg, night_list))
        print(f"source production: {args.nights} nights, {src['exposures']} exposures, "
              f"{src['jobs']} jobs (built in {src['build_s']} s)", flush=True)
        (root / "campaign.toml").write_text(
            f'[campaign]\nname = "reproc"\nsource = "daily"\ncode_version = "bench"\n'
            f'throttle = 500\n[selection]\nnight_ranges = [[{night_list[0]}, {night_list[-1]}]]\n')
        base = [sys.executable, "-m", "desinight", "--config", str(root / "desinight.toml")]
        res: dict = {"nights": args.nights, "database": "postgresql" if db_url else "sqlite",
                     "source_exposures": src["exposures"],
                     "source_jobs": src["jobs"], "load_average_start": load()}
        # the CLI's own start-up (interpreter, imports): part of every CLI figure below
        wall, _, _, _, cpu = child(base + ["--help"], root)
        res["cli_startup"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        steps = [("plan_dry_run", ["campaign", "plan", "campaign.toml"]),
                 ("plan_and_save", ["campaign", "submit", "campaign.toml"]),
                 ("resubmit_same_manifest", ["campaign", "submit", "campaign.toml"])]
        for label, cmd in (steps[1:2] if args.no_dry_run else steps):
            la, pg0 = load(), server_cpu_s()
            wall, rss, rc, out, cpu = child(base + cmd, root)
            if rc != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited {rc}: {out[-2000:]}")
            pg1 = server_cpu_s()
            new = next((ln for ln in out.splitlines() if ln.startswith("new jobs:")), "?")
            res[label] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mib": round(rss),
                          "load_average": la, "output": new}
            if db_url and pg0 is not None and pg1 is not None:
                res[label]["server_cpu_s"] = round(pg1 - pg0, 1)
            print(f"{' '.join(cmd):40s} {wall:6.2f} s wall, {cpu:6.2f} s CPU"
                  + (f" (+{res[label]['server_cpu_s']} s PostgreSQL CPU)" if "server_cpu_s" in res[label] else "")
                  + f", peak RSS {rss:7.0f} MiB, load {la} | {new}", flush=True)

        from desinight import status as S
        ctx = open_context(cfg.with_overrides(production="reproc"), backend=_NoBackend())
        with transaction(ctx.sessions) as s:
            prod = repo.get_production(s, "reproc")
            latest = lambda: S.collect(s, prod)  # noqa: E731 - latest night + all nights table
            n_jobs = len(latest()["jobs"])
            res["status_collect_latest_s"] = round(timed(latest), 3)
            # what the table asks for: the 7 latest nights and a line for the rest
            res["status_collect_recent_s"] = round(timed(lambda: S.collect(s, prod, recent=7)), 3)
            res["status_collect_range_s"] = round(timed(lambda: S.collect(
                s, prod, night_range=(night_list[0], night_list[-1]))), 3)
            res["campaign_progress_s"] = round(timed(lambda: C.progress(s, "reproc")), 3)
        ctx.sessions.kw["bind"].dispose()
        print(f"status.collect() latest night ({n_jobs} jobs) + nights table: "
              f"{res['status_collect_latest_s'] * 1000:.0f} ms; whole range: "
              f"{res['status_collect_range_s'] * 1000:.0f} ms; 7 latest nights (the table's "
              f"default): {res['status_collect_recent_s'] * 1000:.0f} ms; campaign.progress(): "
              f"{res['campaign_progress_s'] * 1000:.0f} ms (in process, best of 5)", flush=True)
        for label, cmd in (("cli_status", ["status", "--production", "reproc", "--json"]),
                           ("cli_status_recent", ["status", "--production", "reproc", "--json",
                                                  "--nights", "7"]),
                           ("cli_campaign_status", ["campaign", "status", "reproc"])):
            la = load()
            wall, rss, rc, out, cpu = child(base + cmd, root)
            if rc != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited {rc}: {out[-2000:]}")
            res[label + "_s"] = round(wall, 2)
            res[label] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_average": la,
                          "peak_rss_mib": round(rss)}
            print(f"desinight {' '.join(cmd):40s} {wall:6.2f} s wall, {cpu:5.2f} s CPU, load {la} "
                  f"(start-up included: --help takes {res['cli_startup']['wall_s']} s)", flush=True)
        # The submission side at this scale: ticks of `campaign run` (poll + settle + submit
        # under the throttle of 500; every job rendered to its attempt dir). The bench backend
        # ends every job by the next poll, so a round after the first also settles the 500
        # the round before submitted: 1,000 state moves and 500 submissions.
        from desinight import orchestrate as O
        bctx = open_context(cfg, backend=_AcceptingBackend())
        cctx = C.campaign_context(bctx, "reproc")
        ticks = []
        for _ in range(3):
            # C.run_tick's three parts, timed apart: where a round's time goes
            la, c0, t0 = load(), time.process_time(), time.perf_counter()
            now = O.utc_now()
            changes = O.poll(cctx, now)
            t1 = time.perf_counter()
            O.reconcile(cctx, now)
            t2 = time.perf_counter()
            n = O.submit_ready(cctx, now)
            t3 = time.perf_counter()
            ticks.append({"wall_s": round(t3 - t0, 2), "cpu_s": round(time.process_time() - c0, 2),
                          "submitted": n, "settled": sum((changes or {}).values()),
                          "poll_s": round(t1 - t0, 2), "reconcile_s": round(t2 - t1, 2),
                          "submit_s": round(t3 - t2, 2), "load_average": la})
        bctx.sessions.kw["bind"].dispose()
        res["run_ticks"] = ticks
        print("campaign run rounds (throttle 500; the bench backend ends every job by the next "
              "poll): " + "; ".join(
                  f"{t['wall_s']:.2f} s wall / {t['cpu_s']:.2f} s CPU (poll {t['poll_s']} s settling "
                  f"{t['settled']}, submit {t['submit_s']} s for {t['submitted']})" for t in ticks),
              flush=True)
        res["db_mib"] = round(db_size_mib(cfg))
        res["round_s"] = max(t["wall_s"] for t in ticks)
        res["round_cpu_s"] = max(t["cpu_s"] for t in ticks)
        res["load_average_end"] = load()
        pas = res["plan_and_save"]
        figures = [("plan_and_save_under_60_s", "plan+save", pas["wall_s"], 60, "s"),
                   ("plan_and_save_under_2_gib", "plan+save peak RSS", pas["peak_rss_mib"], 2048, "MiB"),
                   ("status_json_cli_under_0_3_s", "`status --json` (CLI)", res["cli_status_s"], 0.3, "s"),
                   ("campaign_status_cli_under_0_3_s", "`campaign status` (CLI)",
                    res["cli_campaign_status_s"], 0.3, "s"),
                   ("status_collect_under_0_3_s", "status query (in process)",
                    res["status_collect_latest_s"], 0.3, "s"),
                   ("status_recent_cli_under_0_3_s", "`status --nights 7 --json` (CLI)",
                    res["cli_status_recent_s"], 0.3, "s"),
                   ("status_recent_collect_under_0_3_s", "status query, 7 latest nights",
                    res["status_collect_recent_s"], 0.3, "s"),
                   ("round_under_1_s", "a campaign round", res["round_s"], 1, "s")]
        res["targets"] = {k: v < lim for k, _, v, lim, _ in figures}
        res["targets_met"] = all(res["targets"].values())
        print(f"database {res['db_mib']} MiB ({res['database']}), load average "
              f"{res['load_average_start']} at the start, {res['load_average_end']} at the end")
        for k, words, v, lim, unit in figures:
            print(f"  {words:28s} {v:>9} {unit:3s} target < {lim} {unit}: "
                  f"{'met' if res['targets'][k] else 'NOT met'}")
        print(json.dumps({"campaign": res}))
        return res
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
