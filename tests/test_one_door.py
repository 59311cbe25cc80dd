"""One door: only desinight/transitions.py writes a job's state or an exposure's status.

Reads the code (AST) of every module under desinight/ and fails on any other writer:
``x.state = ...``/``x.status = ...`` (also in tuple targets and augmented assignments),
``setattr(x, "state", ...)``, ``update(Job|Exposure).values(state=...)`` (keyword, dict key
or column key) and raw SQL text that updates the job or exposure table. Attempt rows keep their
own ``state`` where they are created and finished (``att``, ``attempt``, ``last_attempt``),
and the local runner's spool dict is ``self.state``: those are allowed by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import desinight

ROOT = Path(desinight.__file__).resolve().parent
DOOR = ROOT / "transitions.py"
FIELDS = {"state", "status"}
#: the objects whose ``.state`` is an attempt's (or the local runner's own spool dict)
ATTEMPT_NAME = re.compile(r"(^|\.)(att|attempt|last_attempt)$")
SELF_OK = {"batch/localrun.py"}
RAW_SQL = re.compile(r"\bupdate\s+(job|exposure)\b", re.IGNORECASE)


def _allowed_owner(owner: ast.expr, rel: str) -> bool:
    text = ast.unparse(owner)
    return bool(ATTEMPT_NAME.search(text)) or (text == "self" and rel in SELF_OK)


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        out: list[ast.expr] = []
        for t in node.targets:
            out += list(t.elts) if isinstance(t, (ast.Tuple, ast.List)) else [t]
        return out
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    return []


def _update_table(call: ast.expr) -> str | None:
    """``update(Job)....`` -> "Job" (following a method chain down to its base call)."""
    while isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
        call = call.func.value
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "update"
            and call.args and isinstance(call.args[0], ast.Name)
            and call.args[0].id in {"Job", "Exposure"}):
        return call.args[0].id
    return None


def _writes_state(values: ast.Call) -> bool:
    if any(k.arg in FIELDS for k in values.keywords):
        return True
    for arg in values.args:
        if isinstance(arg, ast.Dict):
            for k in arg.keys:
                if isinstance(k, ast.Constant) and k.value in FIELDS:
                    return True
                if isinstance(k, ast.Attribute) and k.attr in FIELDS:
                    return True
    return False


def violations(source: str, rel: str) -> list[str]:
    """Every state write in ``source`` (a module at ``rel`` under desinight/)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        for t in _targets(node):
            if isinstance(t, ast.Attribute) and t.attr in FIELDS and not _allowed_owner(t.value, rel):
                out.append(f"{rel}:{node.lineno}: assigns {ast.unparse(t)}")
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "setattr" and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in FIELDS
                    and not _allowed_owner(node.args[0], rel)):
                out.append(f"{rel}:{node.lineno}: setattr(..., {node.args[1].value!r})")
            if (isinstance(f, ast.Attribute) and f.attr == "values" and _update_table(f.value)
                    and _writes_state(node)):
                out.append(f"{rel}:{node.lineno}: update({_update_table(f.value)}) writes a state")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL.search(node.value):
            out.append(f"{rel}:{node.lineno}: raw SQL updates a job or exposure")
    return out


def test_only_transitions_writes_job_or_exposure_states():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == DOOR or "migrations" in path.parts:
            continue
        found += violations(path.read_text(), path.relative_to(ROOT).as_posix())
    assert found == [], "state written outside desinight/transitions.py:\n" + "\n".join(found)


def test_the_checker_catches_every_kind_of_write():
    bad = '''
job.state = "failed"
exp.status, exp.quarantine_reason = "quarantined", why
j.last_attempt.job.state = "x"
setattr(job, "state", "failed")
s.execute(update(Job).where(Job.id == 1).values(state="failed"))
s.execute(update(Exposure).values({"status": "planned"}))
s.execute(update(Job).where(Job.id == 1).values({Job.state: "failed"}))
s.execute(text("UPDATE job SET state = 'failed'"))
'''
    assert len(violations(bad, "x.py")) == 8
    ok = '''
att.state = "completed"
j.last_attempt.state, j.last_attempt.reason = "cancelled", why
job.reason = "x"
s.execute(update(Job).values(reason=None))
s.execute(insert(Job), [{"state": "planned"}])
'''
    assert violations(ok, "x.py") == []
    assert violations("self.state = {}", "batch/localrun.py") == []
    assert violations("self.state = 'x'", "service.py") != []


def test_architecture_doc_shows_the_diagram_generated_from_the_tables():
    from desinight.core.states import mermaid
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    begin, end = "<!-- states:begin -->\n", "<!-- states:end -->"
    assert begin in doc and end in doc
    assert doc[doc.index(begin) + len(begin):doc.index(end)] == mermaid()
