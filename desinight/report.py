"""`desinight report NIGHT`: one static HTML page (no server, no external files) with the
night's exposure table, a Gantt-style timeline of its jobs (inline SVG) and its failures,
for the nightly pages operators already browse."""

from __future__ import annotations

from datetime import datetime
from html import escape
from pathlib import Path

from .core import kinds as K

COLOURS = {"completed": "#2e7d32", "running": "#0277bd", "pending": "#f9a825",
           "submitted": "#f9a825", "planned": "#9e9e9e", "held": "#8e24aa", "failed": "#c62828",
           "timeout": "#c62828", "out_of_memory": "#c62828", "cancelled": "#6d4c41",
           "node_fail": "#c62828", "dep_failed": "#e57373", "unknown": "#000000",
           # an exposure's progress
           "done": "#2e7d32", "processing": "#0277bd", "waiting": "#9e9e9e",
           "quarantined": "#c62828"}

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
font-size:13px}th{background:#eee}.st{color:#fff;border-radius:3px;padding:0 4px}
h1{font-size:20px}h2{font-size:16px;margin-top:1.2em}.muted{color:#777}"""


def _badge(state: str) -> str:
    return f'<span class="st" style="background:{COLOURS.get(state, "#555")}">{escape(state)}</span>'


def _t(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def gantt_svg(jobs: list[dict], width: int = 900, row: int = 16) -> str:
    """Bars from each job's last attempt start to end (or to the latest time seen)."""
    spans = [(j, _t(j["started_at"]), _t(j["ended_at"])) for j in jobs if j["started_at"]]
    if not spans:
        return '<p class="muted">no job has started yet</p>'
    t0 = min(s for _, s, _ in spans)
    t1 = max((e or s) for _, s, e in spans)
    total = max((t1 - t0).total_seconds(), 1.0)
    label_w, h = 260, row * len(spans) + 30
    scale = (width - label_w - 10) / total
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'font-size="11" role="img" aria-label="job timeline">']
    for i, (j, s, e) in enumerate(spans):
        y = 20 + i * row
        x = label_w + (s - t0).total_seconds() * scale
        w = max(2.0, ((e or t1) - s).total_seconds() * scale)
        parts.append(f'<text x="4" y="{y + 11}">{escape(j["key"])}</text>')
        parts.append(f'<rect class="bar" data-job="{escape(j["key"])}" x="{x:.1f}" y="{y}" '
                     f'width="{w:.1f}" height="{row - 4}" fill="{COLOURS.get(j["state"], "#555")}">'
                     f'<title>{escape(j["key"])}: {escape(j["state"])}, '
                     f'{((e or t1) - s).total_seconds():.0f} s</title></rect>')
    parts.append(f'<text x="{label_w}" y="12">{t0:%H:%M:%S} UTC</text>'
                 f'<text x="{width - 90}" y="12">+{total:.0f} s</text></svg>')
    return "".join(parts)


def attempts_table(attempts: list[dict]) -> str:
    """Every attempt of the night with a link to its log; an attempt a later one retried is
    marked (a timeout that was retried shows as such, not only as the final success)."""
    if not attempts:
        return '<p id="attempts" class="muted">no attempt yet</p>'
    n = sum(a["retried_timeout"] for a in attempts)
    rows = "".join(
        f'<tr class="{"retried" if a["retried"] else "last"}"><td>{escape(a["job"])}</td>'
        f'<td>{a["number"]}</td><td>{escape(a["backend_id"] or "")}</td><td>{_badge(a["state"])}'
        f'{" retried" if a["retried_timeout"] else ""}</td>'
        f'<td>{"" if a["exit_code"] is None else a["exit_code"]}</td>'
        f'<td>{escape(a["reason"] or "")}</td>'
        f'<td><a class="log" href="{escape(Path(a["log"]).resolve().as_uri())}">log</a></td></tr>'
        for a in attempts)
    return (f'<p id="retried">{n} timeout{"s" if n != 1 else ""} retried</p>'
            '<table id="attempts"><tr><th>job</th><th>attempt</th><th>backend id</th>'
            f'<th>state</th><th>exit</th><th>reason</th><th>log</th></tr>{rows}</table>')


def render_html(data: dict) -> str:
    night = data["night"]
    kinds = [k for k in K.names() if any(k in e["jobs"] for e in data["exposures"])]
    rows = []
    for e in data["exposures"]:
        cells = "".join(f"<td>{_badge(e['jobs'][k]) if k in e['jobs'] else ''}</td>" for k in kinds)
        rows.append(f"<tr><td>{e['expid']}</td><td>{escape(e['obstype'])}</td>"
                    f"<td>{'' if e['tileid'] is None else e['tileid']}</td>"
                    f"<td>{escape(e['cameras'])}</td><td>{_badge(e['progress'])}</td>{cells}</tr>")
    fails = "".join(
        f"<tr><td>{escape(str(f.get('job') or f.get('exposure') or f.get('path')))}</td>"
        f"<td>{_badge(f['state'])}</td><td>{escape(f.get('reason') or '')}</td>"
        f"<td>{escape(f.get('log') or '')}</td></tr>" for f in data["failures"])
    counts: dict[str, int] = {}
    for j in data["jobs"]:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no jobs"
    head = "".join(f"<th>{k}</th>" for k in ("EXPID", "OBSTYPE", "TILE", "cameras", "status", *kinds))
    attempts = data.get("attempts") or []
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>desinight {escape(data['production'])} night {night}</title><style>{CSS}</style></head>
<body><h1>Night {night} &mdash; production {escape(data['production'])}</h1>
<p id="summary">{len(data['exposures'])} exposures; jobs: {escape(summary)}</p>
<h2>Exposures</h2><table id="exposures"><tr>{head}</tr>{''.join(rows)}</table>
<h2>Timeline</h2>{gantt_svg(data['jobs'])}
<h2>Job graph</h2>{data.get('graph_svg') or '<p id="graph" class="muted">no job graph (graphviz dot not installed, or no jobs)</p>'}
<h2>Attempts</h2>{attempts_table(attempts)}
<h2>Failures</h2>{'<table id="failures"><tr><th>what</th><th>state</th><th>reason</th><th>log</th></tr>'
                  + fails + '</table>' if fails else '<p id="failures">none</p>'}
<p class="muted">written by desinight from {escape(data['redux_dir'])}</p></body></html>
"""
