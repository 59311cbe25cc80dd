"""Configuration: defaults < survey environment variables < desinight.toml < CLI flags.

The file is found via ``--config``, then ``$DESINIGHT_CONFIG``, then ``./desinight.toml``.
Relative paths in the file are relative to the file; defaults are relative to the working
directory. Any invalid key or value is one clear error naming the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .core import defaults as D
from .core.errors import ConfigError

_SECTIONS = {"desinight", "local", "slurm", "daemon", "kinds", "readers", "check", "notify",
             "laststep", "calib"}


@dataclass(frozen=True)
class Config:
    production: str = D.SPECPROD
    raw_root: Path = Path("state/raw")
    redux_root: Path = Path("state/redux")
    state_dir: Path = Path(D.STATE_DIR)
    db_url: str = ""                      # empty: sqlite in state_dir
    backend: str = D.BACKEND
    templates_dir: Path = Path(__file__).resolve().parent.parent / "slurm_templates"
    max_attempts: int = D.MAX_ATTEMPTS
    auto_retry: bool = D.AUTO_RETRY
    local_cpus: int = D.LOCAL_CPUS
    # SLURM site settings (None = let the site default apply)
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_partition: str | None = None
    slurm_constraint: str | None = None
    #: add --kill-on-invalid-dep=yes to every sbatch (opt-in; see core/defaults.py)
    slurm_kill_on_invalid_dep: bool = D.SLURM_KILL_ON_INVALID_DEP
    #: command prefix used to launch MPI steps inside jobs, e.g. "srun --mpi=pmi2" or "mpiexec"
    mpi_launcher: str = ""
    watch_mode: str = D.WATCH_MODE
    poll_s: float = D.POLL_S
    poll_min_s: float = D.POLL_MIN_S
    poll_max_s: float = D.POLL_MAX_S
    full_scan_s: float = D.FULL_SCAN_S
    watch_nights: int = D.WATCH_NIGHTS
    watch_poll_s: float = D.POLL_OBSERVER_S
    campaign_tick_s: float = D.CAMPAIGN_TICK_S
    settle_s: float = D.SETTLE_S
    reader_workers: int = D.READER_WORKERS
    reader_timeout_s: float = D.READER_TIMEOUT_S
    reader_memory_mb: int = D.READER_MEMORY_MB
    heartbeat_stale_s: float = D.HEARTBEAT_STALE_S
    metrics_port: int = D.METRICS_PORT
    metrics_addr: str = D.METRICS_ADDR
    metrics_textfile: Path | None = None
    # `desinight check` thresholds (flags override them)
    check_backend_error_warn_min: float = D.CHECK_BACKEND_ERROR_WARN_MIN
    check_backend_error_crit_min: float = D.CHECK_BACKEND_ERROR_CRIT_MIN
    check_failed_warn: int = D.CHECK_FAILED_WARN
    check_failed_crit: int = D.CHECK_FAILED_CRIT
    check_waiting_warn_min: float = D.CHECK_WAITING_WARN_MIN
    check_waiting_crit_min: float = D.CHECK_WAITING_CRIT_MIN
    check_disk_warn_pct: float = D.CHECK_DISK_WARN_PCT
    check_disk_crit_pct: float = D.CHECK_DISK_CRIT_PCT
    check_pending_never_clear: tuple[str, ...] = D.PENDING_NEVER_CLEAR
    # notifications: Apprise URLs and/or a command receiving one JSON document on stdin
    notify_urls: tuple[str, ...] = ()
    notify_command: tuple[str, ...] = ()
    notify_min_interval_s: float = D.NOTIFY_MIN_INTERVAL_S
    notify_queue_size: int = D.NOTIFY_QUEUE_SIZE
    notify_timeout_s: float = D.NOTIFY_TIMEOUT_S
    notify_night_summary: bool = True
    laststep_min_exptime_s: float = D.LASTSTEP_MIN_EXPTIME_S
    laststep_skysub_programs: tuple[str, ...] = D.LASTSTEP_SKYSUB_PROGRAMS
    # calibration choice (desinight/calib_choice.py)
    max_calib_age_nights: int = D.MAX_CALIB_AGE_NIGHTS
    calib_overrides_dir: Path | None = None   # None: STATE_DIR/calib-overrides
    min_arcs: int = D.MIN_ARCS                # calibration sets (core/planner.py)
    min_flats: int = D.MIN_FLATS
    dark_window_nights: int = D.DARK_WINDOW_NIGHTS
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-kind resource overrides
    #: modules declaring more job kinds (core/kinds.py register), imported when the config loads
    kind_modules: tuple[str, ...] = ()
    #: ceiling on ALL of the user's queued+running jobs (one count per round); 0 = none
    max_user_jobs: int = 0
    #: slots under max_user_jobs that campaigns leave to nightly work; None = a tenth of it
    nightly_reserve: int | None = None
    #: also plan a cumulative redshift per tile and night (docs/science.md); off: per-night only
    cumulative_redshifts: bool = False
    source: Path | None = None            # the file this came from, for messages

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.state_dir / D.SQLITE_NAME).resolve()}"

    @property
    def prod_dir(self) -> Path:
        """$DESI_SPECTRO_REDUX/$SPECPROD: where the production's outputs and run scripts go."""
        return self.redux_root / self.production

    @property
    def calib_overrides(self) -> Path:
        """Where the per-night calibration override files (calib-NIGHT.toml) live."""
        return self.calib_overrides_dir or self.state_dir / D.CALIB_OVERRIDES_SUBDIR

    def with_overrides(self, **kw: Any) -> "Config":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# key in the file -> (section, field name, type)
_KEYS: dict[tuple[str, str], tuple[str, type]] = {
    ("desinight", "production"): ("production", str),
    ("desinight", "raw_root"): ("raw_root", Path),
    ("desinight", "redux_root"): ("redux_root", Path),
    ("desinight", "state_dir"): ("state_dir", Path),
    ("desinight", "db_url"): ("db_url", str),
    ("desinight", "backend"): ("backend", str),
    ("desinight", "templates_dir"): ("templates_dir", Path),
    ("desinight", "max_attempts"): ("max_attempts", int),
    ("desinight", "kind_modules"): ("kind_modules", tuple),
    ("desinight", "max_user_jobs"): ("max_user_jobs", int),
    ("desinight", "nightly_reserve"): ("nightly_reserve", int),
    ("desinight", "auto_retry"): ("auto_retry", bool),
    ("desinight", "cumulative_redshifts"): ("cumulative_redshifts", bool),
    ("local", "cpus"): ("local_cpus", int),
    ("slurm", "account"): ("slurm_account", str),
    ("slurm", "qos"): ("slurm_qos", str),
    ("slurm", "partition"): ("slurm_partition", str),
    ("slurm", "constraint"): ("slurm_constraint", str),
    ("slurm", "mpi_launcher"): ("mpi_launcher", str),
    ("slurm", "kill_on_invalid_dep"): ("slurm_kill_on_invalid_dep", bool),
    ("daemon", "watch"): ("watch_mode", str),
    ("daemon", "poll_s"): ("poll_s", float),
    ("daemon", "poll_min_s"): ("poll_min_s", float),
    ("daemon", "poll_max_s"): ("poll_max_s", float),
    ("daemon", "full_scan_s"): ("full_scan_s", float),
    ("daemon", "watch_nights"): ("watch_nights", int),
    ("daemon", "watch_poll_s"): ("watch_poll_s", float),
    ("daemon", "campaign_tick_s"): ("campaign_tick_s", float),
    ("daemon", "settle_s"): ("settle_s", float),
    ("readers", "workers"): ("reader_workers", int),
    ("readers", "timeout_s"): ("reader_timeout_s", float),
    ("readers", "memory_mb"): ("reader_memory_mb", int),
    ("daemon", "heartbeat_stale_s"): ("heartbeat_stale_s", float),
    ("daemon", "metrics_port"): ("metrics_port", int),
    ("daemon", "metrics_addr"): ("metrics_addr", str),
    ("daemon", "metrics_textfile"): ("metrics_textfile", Path),
    ("check", "backend_error_warn_min"): ("check_backend_error_warn_min", float),
    ("check", "backend_error_crit_min"): ("check_backend_error_crit_min", float),
    ("check", "failed_warn"): ("check_failed_warn", int),
    ("check", "failed_crit"): ("check_failed_crit", int),
    ("check", "waiting_warn_min"): ("check_waiting_warn_min", float),
    ("check", "waiting_crit_min"): ("check_waiting_crit_min", float),
    ("check", "disk_warn_pct"): ("check_disk_warn_pct", float),
    ("check", "disk_crit_pct"): ("check_disk_crit_pct", float),
    ("check", "pending_never_clear"): ("check_pending_never_clear", tuple),
    ("notify", "urls"): ("notify_urls", tuple),
    ("notify", "command"): ("notify_command", tuple),
    ("notify", "min_interval_s"): ("notify_min_interval_s", float),
    ("notify", "queue_size"): ("notify_queue_size", int),
    ("notify", "timeout_s"): ("notify_timeout_s", float),
    ("notify", "night_summary"): ("notify_night_summary", bool),
    ("laststep", "min_exptime_s"): ("laststep_min_exptime_s", float),
    ("laststep", "skysub_programs"): ("laststep_skysub_programs", tuple),
    ("calib", "max_calib_age_nights"): ("max_calib_age_nights", int),
    ("calib", "overrides_dir"): ("calib_overrides_dir", Path),
    ("calib", "min_arcs"): ("min_arcs", int),
    ("calib", "min_flats"): ("min_flats", int),
    ("calib", "dark_window_nights"): ("dark_window_nights", int),
}
_CHOICES = {"backend": ("local", "slurm"), "watch_mode": ("auto", "native", "polling")}


def find_config_file(explicit: str | os.PathLike | None = None,
                     env: dict[str, str] | None = None) -> Path | None:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    named = (os.environ if env is None else env).get("DESINIGHT_CONFIG")
    if named:
        p = Path(named)
        if not p.is_file():
            raise ConfigError(f"$DESINIGHT_CONFIG={named} does not exist")
        return p
    p = Path("desinight.toml")
    return p if p.is_file() else None


def load_config(explicit: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    if env.get("DESI_SPECTRO_DATA"):
        values["raw_root"] = Path(env["DESI_SPECTRO_DATA"])
    if env.get("DESI_SPECTRO_REDUX"):
        values["redux_root"] = Path(env["DESI_SPECTRO_REDUX"])
    if env.get("SPECPROD"):
        values["production"] = env["SPECPROD"]
    import_kind_modules(env.get("DESINIGHT_KIND_MODULES", "").split(","), "$DESINIGHT_KIND_MODULES")
    path = find_config_file(explicit, env)
    if path is not None:
        values.update(_read_file(path))
        values["source"] = path
    cfg = Config(**values)
    _validate(cfg)
    return cfg


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table; every problem (syntax, encoding, I/O) is one line naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def _read_file(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    base = path.resolve().parent
    out: dict[str, Any] = {}
    mods = data.get("desinight", {}).get("kind_modules") if isinstance(data.get("desinight"), dict) else None
    if mods is not None:     # before [kinds.NAME]: its kinds must be known to be configured
        import_kind_modules(_coerce(path, "desinight.kind_modules", mods, tuple, base), str(path))
    for section, table in data.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}] "
                              f"(known: {', '.join(sorted(_SECTIONS))})")
        if section == "kinds":
            out["kinds"] = _read_kinds(path, table)
            continue
        for key, value in table.items():
            spec = _KEYS.get((section, key))
            if spec is None:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            name, typ = spec
            out[name] = _coerce(path, f"{section}.{key}", value, typ, base)
    return out


def _coerce(path: Path, key: str, value: Any, typ: type, base: Path) -> Any:
    if typ is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {key} must be a non-empty path string")
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        return p if p.is_absolute() else base / p
    if typ is tuple:
        # a list of strings; a command may also be one string, split like a shell would
        # (it is still run as an argv list, never through a shell)
        if isinstance(value, str) and key == "notify.command":
            import shlex
            value = shlex.split(value)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{path}: {key} must be a list of non-empty strings")
        return tuple(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be {typ.__name__}, got {value!r}")
    return value


def import_kind_modules(modules: Any, where: str) -> None:
    """Import the modules that declare more job kinds: "module" registers them on import
    (core.kinds.register), "module:function" when that function is called."""
    import importlib
    for entry in (m.strip() for m in modules if m and m.strip()):
        name, _, func = entry.partition(":")
        try:
            mod = importlib.import_module(name)
            if func:
                getattr(mod, func)()
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{where}: kind module {entry!r} cannot be loaded: {e}") from None


def _read_kinds(path: Path, table: dict) -> dict[str, dict[str, Any]]:
    """[kinds.NAME]: sizes (positive integers), placement (partition, qos, constraint, gres,
    reservation: strings) and scaling (non-negative numbers) of each kind's jobs."""
    from .core import kinds as K
    out: dict[str, dict[str, Any]] = {}
    for kind, res in table.items():
        if kind not in K.names() or not isinstance(res, dict):
            raise ConfigError(f"{path}: unknown job kind [kinds.{kind}] "
                              f"(known: {', '.join(K.names())})")
        for k, v in res.items():
            if k in K.PLACEMENT_KEYS:
                ok = isinstance(v, str) and v.strip() != ""
            elif k in K.SCALING_KEYS:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 \
                    and (k != "max_ntasks" or isinstance(v, int))
            else:
                ok = k in K.SIZE_KEYS and isinstance(v, int) and not isinstance(v, bool) and v > 0
            if not ok:
                raise ConfigError(
                    f"{path}: kinds.{kind}.{k} must be one of {', '.join(K.SIZE_KEYS)} with a "
                    f"positive integer, {', '.join(K.PLACEMENT_KEYS)} with a string, or "
                    f"{', '.join(K.SCALING_KEYS)} with a number >= 0")
        out[kind] = dict(res)
    return out


def _validate(cfg: Config) -> None:
    where = f"{cfg.source}: " if cfg.source else ""
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            key = next(f"{s}.{k}" for (s, k), (n, _) in _KEYS.items() if n == name)
            raise ConfigError(f"{where}{key} must be one of {', '.join(choices)}, "
                              f"got {getattr(cfg, name)!r}")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", cfg.production):
        raise ConfigError(f"{where}desinight.production must be a plain name, got {cfg.production!r}")
    if cfg.poll_max_s < cfg.poll_min_s:
        raise ConfigError(f"{where}daemon.poll_min_s must be <= daemon.poll_max_s")
    for key, value, lo, hi in _RANGES(cfg):
        if not lo <= value <= hi:
            raise ConfigError(f"{where}{key} must be between {_num(lo)} and {_num(hi)}, "
                              f"got {_num(value)}")
    _check_paths(cfg, where)
    _validate_monitoring(cfg, where)


def _validate_monitoring(cfg: Config, where: str) -> None:
    if not 1 <= cfg.heartbeat_stale_s <= 86400:
        raise ConfigError(f"{where}daemon.heartbeat_stale_s must be between 1 and 86400")
    if not 0 <= cfg.metrics_port <= 65535:
        raise ConfigError(f"{where}daemon.metrics_port must be 0 (off) or a port 1-65535")
    pairs = (("backend_error", cfg.check_backend_error_warn_min, cfg.check_backend_error_crit_min),
             ("waiting", cfg.check_waiting_warn_min, cfg.check_waiting_crit_min))
    for name, warn, crit in pairs:
        if warn <= 0 or crit < warn:
            raise ConfigError(f"{where}check.{name}_warn_min must be > 0 and <= "
                              f"check.{name}_crit_min")
    if cfg.check_failed_warn < 0 or cfg.check_failed_crit < 0:
        raise ConfigError(f"{where}check.failed_warn and check.failed_crit must be >= 0 (0 = off)")
    if not 0 <= cfg.check_disk_crit_pct <= cfg.check_disk_warn_pct <= 100:
        raise ConfigError(f"{where}check.disk_crit_pct <= check.disk_warn_pct must be "
                          "percentages (0-100)")
    for url in cfg.notify_urls:
        if "://" not in url:
            raise ConfigError(f"{where}notify.urls: {url!r} is not an Apprise URL (scheme://...)")
    if not 0 <= cfg.notify_min_interval_s <= 86400:
        raise ConfigError(f"{where}notify.min_interval_s must be between 0 and 86400")
    if not 1 <= cfg.notify_queue_size <= 1_000_000:
        raise ConfigError(f"{where}notify.queue_size must be between 1 and 1000000")
    if not 0 < cfg.notify_timeout_s <= 3600:
        raise ConfigError(f"{where}notify.timeout_s must be > 0 and <= 3600")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _RANGES(cfg: Config) -> list[tuple[str, float, float, float]]:  # noqa: N802 - a table
    """Values outside these ranges are typos or make the daemon spin (a 1 ms campaign tick,
    a 0 s full scan) or never settle (a negative settle time)."""
    day = 86400.0
    return [("daemon.poll_min_s", cfg.poll_min_s, 0.1, 3600.0),
            ("daemon.poll_max_s", cfg.poll_max_s, 0.1, day),
            ("daemon.poll_s", cfg.poll_s, 0.1, day),
            ("daemon.full_scan_s", cfg.full_scan_s, 1.0, day),
            ("daemon.campaign_tick_s", cfg.campaign_tick_s, 0.5, day),
            ("daemon.settle_s", cfg.settle_s, 0.0, day),
            ("desinight.max_attempts", cfg.max_attempts, 1, 100),
            ("desinight.max_user_jobs", cfg.max_user_jobs, 0, 1_000_000),
            ("desinight.nightly_reserve", cfg.nightly_reserve or 0, 0, max(cfg.max_user_jobs, 0)),
            ("laststep.min_exptime_s", cfg.laststep_min_exptime_s, 0.0, day),
            ("local.cpus", cfg.local_cpus, 1, 4096),
            # more nights is the archive again: older nights are for `ingest NIGHT`
            ("daemon.watch_nights", cfg.watch_nights, 0, 30),
            ("daemon.watch_poll_s", cfg.watch_poll_s, 0.05, 60.0),
            ("readers.workers", cfg.reader_workers, 1, 64),
            ("readers.timeout_s", cfg.reader_timeout_s, 0.1, 3600.0),
            ("readers.memory_mb", cfg.reader_memory_mb, 256, 1 << 20),
            ("calib.max_calib_age_nights", cfg.max_calib_age_nights, 0, 366),
            ("calib.min_arcs", cfg.min_arcs, 1, 100),
            ("calib.min_flats", cfg.min_flats, 1, 100),
            ("calib.dark_window_nights", cfg.dark_window_nights, 0, 30)]


def _check_paths(cfg: Config, where: str) -> None:
    """Paths that can never work are refused when the config loads, not when the first job
    would be rendered (a missing templates_dir left jobs "planned" forever)."""
    if not (cfg.templates_dir / "base.sh.j2").is_file():
        raise ConfigError(f"{where}desinight.templates_dir {cfg.templates_dir} holds no "
                          "base.sh.j2 (the batch-script templates)")
    for key, path in (("desinight.state_dir", cfg.state_dir), ("desinight.redux_root", cfg.redux_root)):
        problem = creatable_dir_problem(path)
        if problem:
            raise ConfigError(f"{where}{key} {path}: {problem}")


def creatable_dir_problem(path: Path) -> str | None:
    """Why ``path`` can neither be used nor created as a writable directory, else None.
    Nothing is created here: `status` on a read-only copy must still load the config."""
    p = Path(os.path.abspath(path))
    if p.exists():
        return None if p.is_dir() else "exists and is not a directory"
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


