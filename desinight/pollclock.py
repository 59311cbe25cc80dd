"""When the daemon asks the batch system next: a load budget on slurmctld (SchedMD's advice).

SchedMD asks tools that poll SLURM to wait at least max(30 s, 5 x the last query's latency)
between queries. With ``afterok`` chains SLURM starts the children itself, so the poll does
not pace the night: it only keeps `status` fresh and settles failures. Hence:

* a *regular* poll every ``poll_s`` (30 s), raised to ``5 x`` the last poll's latency, backing
  off by ``POLL_BACKOFF`` up to ``poll_max_s`` while nothing changes;
* an *early* poll only when the daemon needs an answer (a submission to confirm, a job's
  exit record appeared, dependents of a failure to settle), at least ``poll_min_s`` (and
  ``5 x`` latency) after the previous poll, paid from a token bucket: ``POLL_BURST`` tokens,
  one back per regular interval, one spent per poll. So over any window of W seconds there
  are at most ``POLL_BURST + W / poll_s`` polls (4 a minute at the defaults), whatever
  asks for answers.

Pure: every method takes ``now`` (monotonic seconds); the daemon schedules by ``due``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .core import defaults as D


@dataclass
class PollClock:
    poll_s: float = D.POLL_S
    min_s: float = D.POLL_MIN_S
    max_s: float = D.POLL_MAX_S
    burst: float = D.POLL_BURST
    #: monotonic time of the next poll
    due: float = 0.0
    #: monotonic time and latency (seconds) of the last poll; its interval after back-off
    last_at: float | None = None
    latency: float = 0.0
    interval: float = 0.0
    #: the budget: polls that may still come early, as of ``tokens_at``
    tokens: float = D.POLL_BURST
    tokens_at: float = 0.0
    #: why the pending poll was brought forward (None: it is a regular one)
    reason: str | None = None

    @classmethod
    def from_config(cls, cfg, now: float) -> PollClock:
        c = cls(poll_s=cfg.poll_s, min_s=cfg.poll_min_s, max_s=cfg.poll_max_s)
        c.interval, c.tokens_at = c.regular(), now
        c.due = now          # the first poll at once: states as of the daemon's start
        return c

    def regular(self) -> float:
        """The regular interval: ``poll_s`` within [min, max], never under 5 x latency."""
        return max(min(max(self.poll_s, self.min_s), self.max_s), D.POLL_LATENCY_FACTOR * self.latency)

    def floor(self) -> float:
        """The least gap between two polls, early ones included."""
        return max(self.min_s, D.POLL_LATENCY_FACTOR * self.latency)

    def _tokens(self, now: float) -> float:
        return min(self.burst, self.tokens + max(0.0, now - self.tokens_at) / self.regular())

    def polled(self, now: float, latency: float | None, changed: bool) -> float:
        """Record a poll that just ended; returns when the next regular one is due."""
        self.tokens, self.tokens_at = self._tokens(now) - 1.0, now
        self.reason = None
        if latency is not None:
            self.latency = latency
        base = self.regular()
        self.interval = base if changed else max(base, min(self.interval * D.POLL_BACKOFF,
                                                           max(self.max_s, base)))
        self.last_at = now
        self.due = now + self.interval
        return self.due

    def want(self, now: float, reason: str) -> bool:
        """An answer is needed (e.g. "submitted", "ended", "failure"): bring the next poll
        forward within the budget. Returns True when ``due`` moved."""
        if self.last_at is None:
            return False     # the first poll is still to come
        soon = max(now, self.last_at + self.floor())
        short = 1.0 - self._tokens(soon)
        if short > 0:        # wait for a token to come back
            soon += short * self.regular()
        if soon >= self.due:
            return False
        self.due, self.reason = soon, reason
        return True
