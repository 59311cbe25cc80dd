"""Named defaults, in one place, each with the reason for its value."""

from __future__ import annotations

from . import kinds as _kinds

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
#: Seconds between looks of the polling watcher: a complete exposure is ingested at most
#: this plus STABLE_LOOK_S (and the ingest itself) after its request file lands. Each look
#: costs one lstat per file of the watched nights only (~200 for two 30-exposure nights).
POLL_OBSERVER_S = 1.0
#: The polling watcher's second look at a directory whose request file just appeared: equal
#: sizes this much later mark it complete (the request file is written last, in one go; a
#: file still being written at transfer rates changes size within far less than this).
STABLE_LOOK_S = 0.1
#: Seconds between full scans (the safety net for missed events) of the watched nights.
FULL_SCAN_S = 60.0
#: Seconds between the ingest tick's submit passes while nothing arrives: an empty pass costs
#: ~10 ms of CPU (reconcile + ready query), 1% of a core if run every second. An ingested
#: exposure, and any change the backend poll sees, still submit at once.
IDLE_SUBMIT_S = 5.0
#: Nights watched besides the latest one: the night in progress and the one before it (late
#: files after midnight UTC). Earlier nights never change; `ingest NIGHT` reads them.
WATCH_NIGHTS = 1
#: The daemon takes a truncated raw file younger than this (seconds) for a transfer still
#: under way; older, it is quarantined as truncated (and re-inspected if it changes later).
SETTLE_S = 120.0
#: [laststep] rules applied at ingest (DESI's): a SCIENCE exposure shorter than this (s) is
#: processed through sky subtraction only (no flux calibration, no coadd); 0 turns it off
LASTSTEP_MIN_EXPTIME_S = 60.0
#: [laststep] PROGRAM header values (case-insensitive) of exposures processed through sky
#: subtraction only: dither and other engineering sequences
LASTSTEP_SKYSUB_PROGRAMS = ("dither",)
#: Backend poll cadence, a load budget on slurmctld (desinight/pollclock.py). SchedMD asks
#: for at least max(30 s, 5 x the last query's latency) between queries; with afterok chains
#: SLURM starts the children itself, so the poll only keeps `status` fresh and settles failures.
#: POLL_S: the regular interval, backing off by POLL_BACKOFF up to POLL_MAX_S while nothing
#: changes. POLL_MIN_S: the least gap, for an early poll when an answer is needed (a
#: submission to confirm, an exit record appeared, dependents of a failure to settle).
#: Early polls spend tokens of a bucket of POLL_BURST that refills one per regular interval:
#: at most POLL_BURST + W / POLL_S polls in any W seconds (4 a minute, <= 8 sacct/squeue).
POLL_S = 30.0
POLL_MIN_S = 10.0
POLL_MAX_S = 60.0
POLL_BACKOFF = 1.5
POLL_BURST = 2.0
#: Seconds between the daemon's looks for exit records of its active jobs (one stat per
#: active attempt, no scheduler call): a record that appears asks for an early poll.
EXIT_LOOK_S = 2.0
#: No poll sooner than this many times the last poll's latency (SchedMD's advice).
POLL_LATENCY_FACTOR = 5.0
#: No `--kill-on-invalid-dep=yes` on sbatch unless a site opts in: NERSC asked DESI to stop
#: using it after a SLURM bug with it produced runaway jobs (desispec #2658). Parents are
#: checked before each sbatch instead, and DependencyNeverSatisfied is settled by the daemon.
SLURM_KILL_ON_INVALID_DEP = False
#: A daemon started with --standby tries to take the production's lock this often (seconds):
#: with the session lock freed the moment the active daemon's connection closes, takeover
#: takes at most this long plus one reconcile.
STANDBY_RETRY_S = 1.0
#: Seconds between the active daemon's checks that its PostgreSQL lock connection is alive;
#: a daemon that lost it (network cut) stops at once rather than run beside the new leader.
LEADER_CHECK_S = 5.0
#: PostgreSQL drops the lock of a daemon whose host vanished (no FIN, no RST) after
#: idle + interval * count seconds of silent keepalives on the lock connection: 10 + 5*3 = 25 s.
LEADER_KEEPALIVE_IDLE_S = 10
LEADER_KEEPALIVE_INTERVAL_S = 5
LEADER_KEEPALIVE_COUNT = 3
#: Seconds between the daemon's rounds over submitted campaigns (poll + submit under each
#: campaign's throttle); campaign jobs run for minutes to hours.
CAMPAIGN_TICK_S = 30.0
#: Untrusted input (raw headers, request/checksum files, exit records) is parsed in reader
#: worker processes (desinight/readers.py). Two workers: a hanging reader holds one while
#: the other goes on, and the machine's cores are shared with the daemon and the jobs.
READER_WORKERS = 2
#: A reader taking longer than this on one exposure is killed and the exposure quarantined:
#: a healthy read of a DESI raw file (30 cameras) takes a few seconds even on a busy Lustre.
READER_TIMEOUT_S = 30.0
#: Address-space limit of each reader (RLIMIT_AS, MB): Python + numpy + fitsio take ~0.5 GB
#: of address space and one decompressed camera ~64 MB, so 2 GB leaves room while a file
#: that makes cfitsio allocate without bound fails that reader, never the login node.
READER_MEMORY_MB = 2048

#: Per-job-kind resources (SLURM and local), declared with each kind in core/kinds.py (a live
#: view: kinds declared later are included). Science kinds spread cameras over MPI ranks.
KIND_RESOURCES = _kinds.view("resources")

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

#: Resubmission learns from how the last attempt ended: a TIMEOUT asks for this much more
#: time, an OUT_OF_MEMORY this much more memory (DESI's operators do the same by hand)...
RETRY_GROWTH = 1.5
#: ...up to these ceilings: beyond them a job is broken, not short of resources (and most
#: sites' longest QOS ends near a day).
RETRY_MAX_TIME_MINUTES = 24 * 60
RETRY_MAX_MEM_MB = 512 * 1024
#: The daemon retries by itself (up to max_attempts) what failed for the machine's reasons:
#: NODE_FAIL (excluding that node), TIMEOUT and OUT_OF_MEMORY (grown). A science step's own
#: non-zero exit (FAILED) is never retried automatically: the same input fails the same way.
#: Off by default: [desinight] auto_retry = true turns it on.
AUTO_RETRY = False

#: The automatic calibration fallback (a night without its own arcs/flats) takes psfnight and
#: fiberflatnight together from the nearest earlier night at most this many nights back whose
#: calibrations cover every camera needed; beyond it the night's science is held. The
#: spectrograph drifts: week-old traces are usable, month-old ones are not.
MAX_CALIB_AGE_NIGHTS = 7
#: Per-night calibration override files (calib-NIGHT.toml), relative to the state directory.
CALIB_OVERRIDES_SUBDIR = "calib-overrides"
#: Calibration sets (core/planner.py): psfnight (fiberflatnight) is built from a complete arc
#: (flat) sequence with at least this many good exposures; while the night is open it waits
#: for one. DESI asks 3 arcs; 1 keeps a one-arc night (the small preset) processable.
MIN_ARCS = 1
MIN_FLATS = 1
#: darknight combines the DARK exposures of its night and of the nights this many calendar
#: nights before and after it (those ingested when it is planned): the dark current of a CCD
#: is stable for days, and DESI takes few darks a night.
DARK_WINDOW_NIGHTS = 2
