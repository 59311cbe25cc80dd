"""Prometheus metrics of the daemon: an HTTP endpoint (``[daemon] metrics_port``) and/or a
textfile for node_exporter's textfile collector (``[daemon] metrics_textfile``).

Counts of jobs and exposures are read from the database at scrape time (a GROUP BY, cheap),
so they are right even for changes made by other processes (`resubmit`, `cancel`). What only
the daemon sees is kept in its own registry: tick durations, the heartbeat time,
arrival-to-submission latencies, and the scheduler calls per command (the SLURM backend
counts every sbatch/sacct/squeue/scancel in its one runner; read from there at scrape time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from .db import repo
from .db.engine import transaction
from .db.models import Attempt, Exposure, Job, JobExposure

log = logging.getLogger("desinight")

#: arrival -> submission takes ~2 s when healthy; held science waits for calibrations
LATENCY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
TICK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry()
        labels = {"production": ctx.production}
        self.tick_seconds = Histogram("desinight_tick_duration_seconds",
                                      "Duration of the daemon's ticks", ["production", "tick"],
                                      buckets=TICK_BUCKETS, registry=self.registry)
        self.heartbeat = Gauge("desinight_heartbeat_timestamp_seconds",
                               "Unix time of the daemon's last healthy tick", ["production"],
                               registry=self.registry).labels(**labels)
        self.latency = Histogram("desinight_arrival_to_submission_seconds",
                                 "Time from an exposure's arrival to the submission of the first "
                                 "attempt of each job covering it", ["production"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry).labels(**labels)
        self.registry.register(_DatabaseCollector(ctx))
        self._since: datetime | None = None
        self._server = None

    def tick(self, name: str, seconds: float) -> None:
        self.tick_seconds.labels(self.ctx.production, name).observe(seconds)

    def beat(self, when: datetime) -> None:
        self.heartbeat.set(when.timestamp())

    def observe_submissions(self, now: datetime) -> None:
        """Latencies of first attempts submitted since the last call (one query)."""
        since, self._since = self._since, now
        if since is None:
            return   # at start: only what is submitted from now on
        with transaction(self.ctx.sessions) as s:
            prod = repo.get_production(s, self.ctx.production)
            rows = s.execute(select(Attempt.submitted_at, func.max(Exposure.arrived_at))
                             .join(Job, Job.id == Attempt.job_id)
                             .join(JobExposure, JobExposure.job_id == Job.id)
                             .join(Exposure, (Exposure.expid == JobExposure.expid)
                                   & (Exposure.production_id == prod.id))
                             .where(Job.production_id == prod.id, Attempt.number == 1,
                                    Attempt.submitted_at > since, Attempt.submitted_at <= now)
                             .group_by(Attempt.id, Attempt.submitted_at)).all()
        for submitted, arrived in rows:
            if submitted is not None and arrived is not None:
                self.latency.observe(max(0.0, (submitted - arrived).total_seconds()))

    def serve(self, port: int, addr: str) -> int:
        """Start the HTTP endpoint in a thread; returns the port it listens on."""
        from prometheus_client import start_http_server
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return server.server_address[1]

    def write_textfile(self, path: Path) -> None:
        """Atomic (written beside, then renamed): node_exporter never reads half a file."""
        from prometheus_client import write_to_textfile
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _DatabaseCollector(Collector):
    """Jobs by state and kind, exposures of the latest night by progress, scheduler calls."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator:
        from .status import collect as status_collect, latest_night
        jobs = GaugeMetricFamily("desinight_jobs", "Jobs by state and kind",
                                 labels=["production", "state", "kind"])
        exps = GaugeMetricFamily("desinight_exposures",
                                 "Exposures of the latest night by progress",
                                 labels=["production", "night", "progress"])
        prod_name = self.ctx.production
        try:
            with transaction(self.ctx.sessions) as s:
                prod = repo.get_production(s, prod_name)
                for state, kind, n in s.execute(select(Job.state, Job.kind, func.count())
                                                .where(Job.production_id == prod.id)
                                                .group_by(Job.state, Job.kind)):
                    jobs.add_metric([prod_name, state, kind], n)
                night = latest_night(s, prod)
                if night is not None:
                    counts: dict[str, int] = {}
                    for e in status_collect(s, prod, night=night)["exposures"]:
                        counts[e["progress"]] = counts.get(e["progress"], 0) + 1
                    for progress, n in sorted(counts.items()):
                        exps.add_metric([prod_name, str(night), progress], n)
        except Exception as e:  # noqa: BLE001 - a scrape must answer even with the DB down
            log.warning("metrics_db_failed", extra={"fields": {"error": str(e)[:200]}})
            up = GaugeMetricFamily("desinight_database_up", "1 if the database answered")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("desinight_database_up", "1 if the database answered")
        up.add_metric([], 1)
        yield up
        yield jobs
        yield exps
        calls = getattr(self.ctx.backend, "calls", None)
        if isinstance(calls, dict):
            c = CounterMetricFamily("desinight_scheduler_calls", "Batch-system commands run, "
                                    "by command", labels=["production", "command"])
            for command, n in sorted(calls.items()):
                c.add_metric([prod_name, command], n)
            yield c
