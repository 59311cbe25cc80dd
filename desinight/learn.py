"""What a resubmitted job asks for: the resources in force now (config, or a campaign's
manifest, re-read), grown by how its last attempt ended, and the operator's overrides.

The rule, in order: start from the configured resources; a TIMEOUT asks for RETRY_GROWTH x
the time the failed attempt had, an OUT_OF_MEMORY for RETRY_GROWTH x its memory (capped, and
never less than the configuration says), a NODE_FAIL excludes the node it ran on (sacct's
NodeList; nodes excluded before stay excluded); an explicit ``--time``/``--mem``/``--qos``/
``--partition`` wins over both. The note says what changed and why; it is recorded in the
job's history with the resubmission.
"""

from __future__ import annotations

import math
from typing import Any

from .core import defaults as D
from .core.states import JobState

#: operator flags that may override a resubmitted job's request
OVERRIDES = ("time_minutes", "mem_mb", "qos", "partition")


def next_resources(now: dict[str, Any], previous: dict[str, Any], ended: str | None,
                   overrides: dict[str, Any], node: str | None = None
                   ) -> tuple[dict[str, Any], str | None]:
    """(resources for the next attempt, a note of what changed and why, or None).

    now: what the configuration asks for today; previous: what the failed attempt had;
    ended: the failed attempt's state; node: where it ran."""
    res, why = dict(now), {}
    excluded = {n for n in (previous.get("exclude") or "").split(",") if n}
    if ended == JobState.NODE_FAIL.value and node and node not in excluded:
        excluded.add(node)
        why["exclude"] = f"exclude node {node} (node failed)"
    if excluded:
        res["exclude"] = ",".join(sorted(excluded))
    for key in OVERRIDES:
        if res.get(key) != previous.get(key):
            why[key] = f"{key} {previous.get(key)} -> {res.get(key)} (configuration)"
    old_t, old_m = previous.get("time_minutes"), previous.get("mem_mb")
    if ended == JobState.TIMEOUT.value and old_t:
        grown = min(math.ceil(old_t * D.RETRY_GROWTH), D.RETRY_MAX_TIME_MINUTES)
        if grown > res.get("time_minutes", 0):
            res["time_minutes"] = grown
            why["time_minutes"] = f"time {old_t} -> {grown} min (timed out)"
    if ended == JobState.OUT_OF_MEMORY.value:
        if old_m:
            grown = min(math.ceil(old_m * D.RETRY_GROWTH), D.RETRY_MAX_MEM_MB)
            if grown > (res.get("mem_mb") or 0):
                res["mem_mb"] = grown
                why["mem_mb"] = f"memory {old_m} -> {grown} MB (out of memory)"
        else:
            why["mem_mb"] = "out of memory with no memory request to grow: set mem_mb"
    for key in OVERRIDES:
        value = overrides.get(key)
        if value is not None:
            if value != previous.get(key):
                why[key] = f"{key} {previous.get(key)} -> {value} (operator)"
            else:
                why.pop(key, None)
            res[key] = value
    return res, "; ".join(why.values()) or None


#: ends the daemon retries by itself when [desinight] auto_retry is on: the machine's fault
AUTOMATIC = frozenset({JobState.NODE_FAIL, JobState.TIMEOUT, JobState.OUT_OF_MEMORY})


def automatic_retry(ended: str) -> bool:
    """Whether an attempt that ended so may be retried without an operator. FAILED (the
    science step's own non-zero exit) is not: the same input fails the same way; a manual
    `resubmit` still may."""
    return JobState(ended) in AUTOMATIC
