"""A survey-sized raw archive under the real daemon: idle CPU, memory, inotify watches,
overflows and the polling watcher's metadata operations, per watch mode.

Builds NIGHTS nights x EXPOSURES exposure directories x 2 empty files (default 1,000 x 30
x 2 = 60,000 files) under a temporary directory, starts the real daemon on it (local
backend) in native and in polling mode, lets it record what it sees (the latest nights'
empty files are quarantined), then measures it for IDLE seconds while nothing changes:

* CPU: utime + stime from /proc/PID/stat over the idle window, as % of one core;
* memory: VmRSS at the end and VmHWM (peak), and VmRSS on a 10-night archive beside it;
* inotify watches (/proc/PID/fdinfo) and "overflow" lines in the daemon's output;
* metadata operations of the polling watcher per look and per minute, counted in-process
  by wrapping os.scandir/os.stat/os.lstat (and DirEntry.stat), for the archive and for
  a tenth of it: the figure depends on the watched nights, not on the archive.

    python bench/bench_archive.py [--nights 1000] [--exposures 30] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desinight import watch  # noqa: E402
from desinight.core import defaults as D  # noqa: E402
from tests.daemonkit import cli, fast_templates, start_daemon, stop_daemon, wait_for  # noqa: E402
from tests.prockit import cpu_seconds, inotify_watches, rss_mb  # noqa: E402

CPU_TARGET_PCT = 2.0


def build_archive(raw: Path, nights: int, exposures: int) -> list[int]:
    """Empty files in the DESI layout; returns the night numbers, oldest first."""
    first = date(2021, 5, 14)
    out = []
    expid = 1
    for i in range(nights):
        night = int((first + timedelta(days=i)).strftime("%Y%m%d"))
        out.append(night)
        for _ in range(exposures):
            d = raw / str(night) / f"{expid:08d}"
            d.mkdir(parents=True)
            (d / f"desi-{expid:08d}.fits.fz").touch()
            (d / f"request-{expid:08d}.json").touch()
            expid += 1
    return out


class OpCounter:
    """Counts directory listings and stat calls made in this process while active."""

    def __init__(self) -> None:
        self.listings = 0
        self.stats = 0

    def __enter__(self) -> "OpCounter":
        self._saved = os.scandir, os.stat, os.lstat
        real_scandir, real_stat, real_lstat = self._saved
        counter = self

        class Entry:
            def __init__(self, e: os.DirEntry) -> None:
                self._e, self.name, self.path = e, e.name, e.path

            def is_dir(self, *, follow_symlinks: bool = True) -> bool:
                return self._e.is_dir(follow_symlinks=follow_symlinks)

            def is_file(self, *, follow_symlinks: bool = True) -> bool:
                return self._e.is_file(follow_symlinks=follow_symlinks)

            def is_symlink(self) -> bool:
                return self._e.is_symlink()

            def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
                counter.stats += 1
                return self._e.stat(follow_symlinks=follow_symlinks)

        class Listing:
            def __init__(self, path) -> None:  # noqa: ANN001 - as os.scandir
                counter.listings += 1
                self._it = real_scandir(path)

            def __enter__(self) -> "Listing":
                return self

            def __exit__(self, *exc) -> None:  # noqa: ANN002
                self._it.close()

            def __iter__(self):
                return (Entry(e) for e in self._it)

        def stat(*a, **k):  # noqa: ANN002, ANN003
            counter.stats += 1
            return real_stat(*a, **k)

        def lstat(*a, **k):  # noqa: ANN002, ANN003
            counter.stats += 1
            return real_lstat(*a, **k)

        os.scandir, os.stat, os.lstat = Listing, stat, lstat
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        os.scandir, os.stat, os.lstat = self._saved


def polling_ops(raw: Path, back: int, looks: int = 5) -> dict:
    """Metadata operations per look of the polling watcher over ``raw``."""
    w = watch.PollingWatcher(raw, watch.Candidates(), back=back)
    w.poll_once(initial=True)
    with OpCounter() as c:
        for _ in range(looks):
            w.poll_once()
    per_look = (c.listings + c.stats) / looks
    return {"listings_per_look": c.listings / looks, "stats_per_look": c.stats / looks,
            "ops_per_minute": round(per_look * 60 / D.POLL_OBSERVER_S)}


def run_mode(root: Path, mode: str, idle: float, expected: int) -> dict:
    # production cadences (the test config polls every 2 s and scans every 5 s)
    conf = root / "desinight.toml"
    conf.write_text("\n".join([
        "[desinight]", 'production = "test"', 'raw_root = "raw"', 'redux_root = "redux"',
        'state_dir = "state"', 'backend = "local"',
        f'templates_dir = "{fast_templates(root / "tpl", run="true")}"',
        "[daemon]", f'watch = "{mode}"']) + "\n")
    state = root / "state"
    if state.exists():
        import shutil
        shutil.rmtree(state)
    cli(conf, "init")
    out = root / f"daemon-{mode}.out"
    proc = start_daemon(conf, out)
    try:
        t0 = time.monotonic()

        def settled() -> bool:   # the latest nights' empty exposures are all recorded
            data = json.loads(cli(conf, "status", "--json").stdout)
            return sum(sum(n["exposures"].values()) for n in data["nights"]) >= expected
        try:
            wait_for(settled, 120, interval=1.0, what="the watched nights recorded")
        except AssertionError:
            pass   # still measured: the figure then includes the catch-up
        startup_s = time.monotonic() - t0
        time.sleep(2.0)
        c0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        c1, w1 = cpu_seconds(proc.pid), time.monotonic()
        res = {"idle_cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 2), "idle_s": round(w1 - w0, 1),
               "rss_mb": round(rss_mb(proc.pid), 1), "peak_rss_mb": round(rss_mb(proc.pid, "VmHWM"), 1),
               "inotify_watches": inotify_watches(proc.pid), "startup_s": round(startup_s, 1)}
    finally:
        stop_daemon(proc)
    text = out.read_text(errors="replace") + "".join(
        p.read_text(errors="replace") for p in state.glob("daemon-*.log*"))
    res["overflows"] = text.lower().count("overflow")
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nights", type=int, default=1000)
    ap.add_argument("--exposures", type=int, default=30)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--small", type=int, default=10,
                    help="nights of the small archive whose RSS the big one's is compared with")
    args = ap.parse_args(argv)
    out: dict = {"nights": args.nights, "files": args.nights * args.exposures * 2}
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        build_archive(root / "raw", args.nights, args.exposures)
        print(f"archive: {args.nights} nights x {args.exposures} exposures x 2 files "
              f"= {out['files']} files, built in {time.monotonic() - t0:.1f} s", flush=True)
        watched = (D.WATCH_NIGHTS + 1) * args.exposures
        ops = polling_ops(root / "raw", D.WATCH_NIGHTS)
        ops_wide = polling_ops(root / "raw", 3)
        out["polling_ops"] = ops
        out["polling_ops_4_nights"] = ops_wide
        print(f"polling watcher, {D.WATCH_NIGHTS + 1} nights watched: {ops['listings_per_look']:.0f} "
              f"listings + {ops['stats_per_look']:.0f} stats per look, {ops['ops_per_minute']} per minute "
              f"(4 nights watched: {ops_wide['ops_per_minute']} per minute; the archive holds "
              f"{out['files'] + args.nights * (args.exposures + 1)} entries)")
        for mode in ("native", "polling"):
            r = run_mode(root, mode, args.idle, watched)
            met = r["idle_cpu_pct"] < CPU_TARGET_PCT and r["overflows"] == 0
            r["target_met"] = met
            out[mode] = r
            print(f"{mode:7s}: idle CPU {r['idle_cpu_pct']:.2f}% of a core over {r['idle_s']:.0f} s, "
                  f"RSS {r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f}), inotify watches "
                  f"{r['inotify_watches']}, overflows {r['overflows']}: target (<{CPU_TARGET_PCT}% CPU, "
                  f"no overflow) {'met' if met else 'NOT met'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-archive-small-") as tmp:
        root = Path(tmp)
        build_archive(root / "raw", args.small, args.exposures)
        for mode in ("native", "polling"):
            small = run_mode(root, mode, min(args.idle, 10.0), watched)
            out[mode]["rss_mb_small_archive"] = small["rss_mb"]
            print(f"{mode:7s}: RSS {small['rss_mb']:.0f} MB with {args.small} nights vs "
                  f"{out[mode]['rss_mb']:.0f} MB with {args.nights} "
                  f"({out[mode]['rss_mb'] - small['rss_mb']:+.1f} MB)", flush=True)
    print(json.dumps({"archive": out}))
    return out


if __name__ == "__main__":
    main()
