"""Parents checked in the backend right before their children are submitted.

``orchestrate._ready`` picks PLANNED jobs from the *recorded* states: a parent recorded failed
has already settled its children as dep_failed (``_settle_dep_failed``, no sbatch), and a
parent recorded completed adds no ``afterok`` (SLURM may have purged its id). What the record
cannot show is a parent that ended since the last poll, or ended while no daemon was polling
(a restart after hours): its id may already be purged from slurmctld, and SLURM accepts
``afterok`` on a purged id and runs the child at once, even when that parent failed
(SLURM-NOTES; desispec #2220). Without ``--kill-on-invalid-dep`` (off by default, desispec
#2658) nothing else stops such a child. So before the sbatch one backend poll asks about every
parent id the wave would depend on, and only ids the backend itself reports pending or running
become ``afterok``:

* reported completed: the dependency is met, no ``afterok`` (the poll records the end);
* reported failed / cancelled / timed out ...: the child waits; the next poll records the
  parent and ``_settle_dep_failed`` settles the child as dep_failed without submitting it;
* unknown to the backend (purged, or accounting down): the child waits for the poll to settle
  the parent from its exit record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .batch.base import Backend
from .core.errors import BackendError
from .core.states import ACTIVE, JobState
from .db.models import Job

log = logging.getLogger("desinight")

Ready = list[tuple[Job, list[str]]]


def check_parents(backend: Backend, ready: Ready) -> tuple[Ready, dict[int, str]]:
    """(jobs to submit now with their checked ``afterok`` ids, {job id: why it waits}).

    One backend poll for the whole wave; if the backend cannot answer, every job with a
    parent waits (``BackendError`` is not raised: submission of parentless jobs goes on)."""
    parent_ids = sorted({d for _, deps in ready for d in deps})
    if not parent_ids:
        return ready, {}
    try:
        seen = backend.poll(parent_ids)
    except BackendError as e:
        log.warning("parent check failed (%s): jobs with queued parents wait", e)
        seen = {}
    go: Ready = []
    waiting: dict[int, str] = {}
    for job, deps in ready:
        keep, why = _checked(deps, {i: JobState(seen[i].state) for i in deps if i in seen})
        if why is None:
            go.append((job, keep))
        else:
            waiting[job.id] = why
    if waiting:   # debug: a parent unknown for long (accounting down) would repeat every tick
        log.debug("parents_not_queued", extra={"fields": {"waiting": len(waiting),
                                                         "example": next(iter(waiting.values()))}})
    return go, waiting


def _checked(deps: Sequence[str], states: dict[str, JobState]) -> tuple[list[str], str | None]:
    """The ``afterok`` ids to use, or why the child must wait (pure: tested on its own)."""
    keep: list[str] = []
    for d in deps:
        st = states.get(d)
        if st is None:
            return [], f"parent {d} unknown to the backend (purged?): waiting for its record"
        if st in ACTIVE:
            keep.append(d)
        elif st is not JobState.COMPLETED:
            return [], f"parent {d} ended {st.value}: not submitted"
    return keep, None
