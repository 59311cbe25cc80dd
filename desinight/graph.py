"""A night's job graph (jobs and their dependency edges, coloured by state) as SVG, drawn by
graphviz: `desinight graph NIGHT` and the HTML report (DESI's `desi_job_graph` page).

graphviz needs its `dot` program (Debian package `graphviz`); without it the command fails
with one line and exit code 2, and the report leaves the graph out with a note.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .core import kinds as K
from .core.errors import ConfigError
from .db.models import Job, JobEdge, Production
from .report import COLOURS

MISSING_DOT = ("graph: the graphviz 'dot' program is not installed "
               "(Debian: apt-get install graphviz)")


def night_graph(s: Session, prod: Production, night: int) -> dict:
    """{"night", "jobs": [{key, kind, state, reason, night}], "edges": [(parent, child)]}.
    Parents from earlier nights (calibrations used as fallbacks) are included, marked by
    their night, so every edge has both ends."""
    jobs = s.scalars(select(Job).where(Job.production_id == prod.id, Job.night == night)
                     .order_by(Job.id)).all()
    ids = {j.id: j for j in jobs}
    edges = s.execute(select(JobEdge.parent_id, JobEdge.child_id).where(
        JobEdge.child_id.in_(list(ids)))).all() if ids else []
    outside = {p for p, _ in edges} - set(ids)
    if outside:
        for j in s.scalars(select(Job).where(Job.id.in_(outside))):
            ids[j.id] = j
    return {"night": night,
            "jobs": [{"key": j.key, "kind": j.kind, "state": j.state, "night": j.night,
                      "reason": j.reason or j.hold_reason or ""} for j in ids.values()],
            "edges": sorted((ids[p].key, ids[c].key) for p, c in edges)}


def to_dot(graph: dict):
    """The graphviz.Digraph of ``graph``: one box per job, filled with its state's colour."""
    try:
        import graphviz
    except ImportError:
        raise ConfigError(MISSING_DOT.replace("program", "Python package and program")) from None
    night = graph["night"]
    g = graphviz.Digraph(f"night{night}", graph_attr={
        "rankdir": "TB", "fontname": "Helvetica", "fontsize": "11", "nodesep": "0.15",
        "ranksep": "0.35", "label": _legend(graph), "labelloc": "t"},
        node_attr={"shape": "box", "style": "filled,rounded", "fontname": "Helvetica",
                   "fontsize": "10", "fontcolor": "white", "height": "0.3"})
    order = {k: i for i, k in enumerate(K.names())}
    for j in sorted(graph["jobs"], key=lambda j: (order.get(j["kind"], 99), j["key"])):
        label = j["key"] if j["night"] != night else j["key"].split("/", 1)[1]
        tip = f"{j['key']}: {j['state']}" + (f" ({j['reason']})" if j["reason"] else "")
        g.node(j["key"], label=label, tooltip=tip, fillcolor=COLOURS.get(j["state"], "#555555"),
               id=f"job-{j['key']}", **({"style": "filled,rounded,dashed"} if j["night"] != night else {}))
    for parent, child in graph["edges"]:
        g.edge(parent, child)
    return g


def _legend(graph: dict) -> str:
    counts: dict[str, int] = {}
    for j in graph["jobs"]:
        if j["night"] == graph["night"]:
            counts[j["state"]] = counts.get(j["state"], 0) + 1
    return f"night {graph['night']}: " + (", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
                                          or "no jobs")


def svg(graph: dict) -> str:
    """The graph as one SVG document (graphviz's `dot`); ConfigError when dot is missing."""
    dot = to_dot(graph)
    import graphviz
    try:
        return dot.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise ConfigError(MISSING_DOT) from None


def inline_svg(graph: dict) -> str:
    """The SVG element alone (no XML prolog or DOCTYPE), to embed in an HTML page."""
    text = svg(graph)
    return text[text.index("<svg"):]
