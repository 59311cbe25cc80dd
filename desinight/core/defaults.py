"""Named defaults, in one place, each with the reason for its value."""

from __future__ import annotations

#: Production name when neither the config nor $SPECPROD names one.
SPECPROD = "daily"
#: Embedded state home (SQLite DB, logs, rendered scripts), relative to the working directory.
STATE_DIR = "state"
#: SQLite file inside STATE_DIR; PostgreSQL is configured with an explicit URL.
SQLITE_NAME = "desinight.db"
#: Batch backend: "local" needs nothing installed; production sites set "slurm".
BACKEND = "local"
#: Attempts per job before resubmission refuses (stops infinite retry loops).
MAX_ATTEMPTS = 3
#: CPU budget of the local backend (the machine's cores are shared with the daemon).
LOCAL_CPUS = 2
#: Seconds SQLite waits on a lock before failing: the daemon and `status` share the file.
SQLITE_BUSY_TIMEOUT_S = 30
#: Raw-data watching: "auto" uses inotify where it can see changes, polling on Lustre/NFS.
WATCH_MODE = "auto"
#: Seconds between looks of the polling observer and the full-scan safety net.
POLL_OBSERVER_S = 2.0
FULL_SCAN_S = 60.0
#: The daemon takes a truncated raw file younger than this (seconds) for a transfer still
#: under way; older, it is quarantined as truncated (and re-inspected if it changes later).
SETTLE_S = 120.0
#: Backend poll interval: starts short so fast jobs settle quickly, backs off to the max when
#: nothing changes, so an idle night costs slurmctld almost nothing.
POLL_MIN_S = 2.0
POLL_MAX_S = 60.0
POLL_BACKOFF = 1.5
#: Seconds between the daemon's rounds over submitted campaigns (poll + submit under each
#: campaign's throttle); campaign jobs run for minutes to hours.
CAMPAIGN_TICK_S = 30.0

#: Per-job-kind resources (SLURM and local). Science kinds spread cameras over MPI ranks.
KIND_RESOURCES: dict[str, dict[str, int]] = {
    "biasnight": {"ntasks": 1, "time_minutes": 15},
    "arc": {"ntasks": 1, "time_minutes": 20},
    "psfnight": {"ntasks": 1, "time_minutes": 10},
    "flat": {"ntasks": 1, "time_minutes": 20},
    "fiberflatnight": {"ntasks": 1, "time_minutes": 10},
    "science": {"ntasks": 1, "time_minutes": 30},
    "stdstars": {"ntasks": 1, "time_minutes": 15},
    "fluxcalib": {"ntasks": 1, "time_minutes": 10},
    "redshift": {"ntasks": 1, "time_minutes": 30},
}

# --- monitoring (docs/daemon.md "Monitoring and alerts") ------------------------------------
#: The daemon's heartbeat older than this (seconds) means it is not running or hung. Ticks
#: run every second; a slow sacct may hold one tick for up to its 60 s timeout, so 2 minutes
#: is the first age that cannot be a healthy daemon.
HEARTBEAT_STALE_S = 120.0
#: At most one heartbeat write per this many seconds (one row update; ticks are every second,
#: a write per tick would be most of an idle daemon's database traffic).
HEARTBEAT_EVERY_S = 5.0
#: Prometheus endpoint port; 0 = off (a port is a site decision: firewalls, shared nodes).
METRICS_PORT = 0
#: Loopback by default: a scraper on another node needs an explicit address.
METRICS_ADDR = "127.0.0.1"
#: Seconds between rewrites of the node_exporter textfile (its scrape interval is ~15 s).
METRICS_TEXTFILE_EVERY_S = 15.0
#: `desinight check`: a backend error older than these minutes is WARNING / CRITICAL
#: (a restart of slurmctld takes a minute or two; half an hour means nobody is fixing it).
CHECK_BACKEND_ERROR_WARN_MIN = 10.0
CHECK_BACKEND_ERROR_CRIT_MIN = 30.0
#: failed jobs of the current night at or above these counts are WARNING / CRITICAL (0 = off):
#: one failure wants a look in the morning, not a page at night.
CHECK_FAILED_WARN = 1
CHECK_FAILED_CRIT = 0
#: an exposure with no job in the batch system this many minutes after it arrived
#: (arrival->submission is ~2 s when healthy; held science waits for calibrations ~30 min)
CHECK_WAITING_WARN_MIN = 30.0
CHECK_WAITING_CRIT_MIN = 120.0
#: free space (percent) of the state and output directories below these is WARNING / CRITICAL
CHECK_DISK_WARN_PCT = 10.0
CHECK_DISK_CRIT_PCT = 5.0
#: SLURM pending reasons that never clear by themselves: the job will wait forever.
PENDING_NEVER_CLEAR = ("DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS",
                       "ReqNodeNotAvail", "BadConstraints", "PartitionNodeLimit",
                       "PartitionTimeLimit", "QOSMaxWallDurationPerJobLimit",
                       "AccountNotAllowed", "QOSNotAllowed", "PartitionConfig")
#: Notifications: at most one message per this many seconds; what comes in between is sent
#: as one digest when the interval ends (a night of 50 failures is two messages, not 50).
NOTIFY_MIN_INTERVAL_S = 300.0
#: Events waiting for the sender thread; beyond this they are dropped (and counted), so a
#: dead receiver can never grow the daemon's memory.
NOTIFY_QUEUE_SIZE = 1000
#: Seconds one delivery (an Apprise URL or the command) may take.
NOTIFY_TIMEOUT_S = 30.0
