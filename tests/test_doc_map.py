"""docs/test-map.md keeps the docs honest (issue 19 item 1): every command, option and exit
code that README.md or docs/*.md names has a row, every row names tests that exist, and
every option the docs name is a real option of its command.

Adding a command or a flag: mention it in the docs, add one row to docs/test-map.md
(doc file | `desinight CMD` | `--flag` | tests/test_x.py::test_y), and this test is green."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import click

from desinight.cli.main import cli
from desinight.core.errors import EXIT_CODES

REPO = Path(__file__).resolve().parent.parent
MAP = REPO / "docs" / "test-map.md"
#: the "what" of a row that maps the command itself (not one of its options)
RUNS = "runs"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@cache
def commands() -> dict[str, click.Command]:
    """'' (the global options), every command, and 'group sub' for subcommands."""
    out: dict[str, click.Command] = {"": cli}
    for name in cli.list_commands(click.Context(cli)):   # the command tree loads lazily
        if (cmd := cli.get_command(click.Context(cli), name)) is None:
            continue
        out[name] = cmd
        if isinstance(cmd, click.Group):
            out.update({f"{name} {sub}": c for sub, c in cmd.commands.items()})
    return out


def options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def code_text(text: str) -> list[str]:
    """Lines of fenced code blocks, and inline code spans elsewhere."""
    out = [ln for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S) for ln in block.splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return out + re.findall(r"`([^`\n]+)`", prose)


def mentions(text: str) -> tuple[set[tuple[str, str]], set[str]]:
    """({(command, option or RUNS)} named as `desinight CMD ... --opt` or `CMD ... --opt`,
    {every --option in code, with or without a command})."""
    cmds = commands()
    pairs: set[tuple[str, str]] = set()
    loose: set[str] = set()
    for span in code_text(text):
        toks = span.replace("$ ", " ").split()
        loose.update(re.findall(r"(?<![\w-])--[a-z][\w-]*", span))
        for i, tok in enumerate(toks):
            if tok not in cmds or tok == "":
                continue
            if i > 0 and toks[i - 1] != "desinight" and not toks[i - 1].endswith("/desinight"):
                continue   # a word that happens to be a command name, inside other text
            key, j = tok, i + 1
            if j < len(toks) and f"{tok} {toks[j]}" in cmds:
                key, j = f"{tok} {toks[j]}", j + 1
            pairs.add((key, RUNS))
            for t in toks[j:]:
                if t in ("|", "||", "&&", ";", ">", "2>&1") or t.startswith("#"):
                    break
                pairs.update((key, o) for o in re.findall(r"--[a-z][\w-]*", t))
    return pairs, loose


@cache
def documented() -> tuple[dict[tuple[str, str], set[str]], dict[str, set[str]]]:
    pairs: dict[tuple[str, str], set[str]] = {}
    loose: dict[str, set[str]] = {}
    for f in doc_files():
        p, l_ = mentions(f.read_text())
        for k in p:
            pairs.setdefault(k, set()).add(f.name)
        for o in l_:
            loose.setdefault(o, set()).add(f.name)
    return pairs, loose


@cache
def rows() -> list[tuple[int, list[str]]]:
    """(line number, [doc, command, what, tests]) of each table row of the map."""
    out = []
    for n, line in enumerate(MAP.read_text().splitlines(), 1):
        if not line.startswith("|") or re.fullmatch(r"\|[\s|:-]+\|", line.strip()):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["Doc", "Command"]:
            continue
        out.append((n, cells))
    return out


def unquote(cell: str) -> str:
    return cell.strip("`").removeprefix("desinight").strip()


def mapped() -> set[tuple[str, str]]:
    return {(unquote(c[1]), unquote(c[2])) for _, c in rows()}


@cache
def defined_tests(path: str) -> set[str]:
    """'name' and 'Class::name' of every test function defined in a test file."""
    tree = ast.parse((REPO / path).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names.update(f"{node.name}::{f.name}" for f in node.body
                         if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and f.name.startswith("test"))
    return names


def test_every_row_is_complete_and_names_tests_that_exist():
    assert rows(), "docs/test-map.md has no table"
    for n, cells in rows():
        assert len(cells) == 4 and all(cells), f"test-map.md:{n}: a row needs doc | command | what | tests"
        for nid in (t.strip().strip("`") for t in cells[3].split(",")):
            path, _, name = nid.partition("::")
            assert path.startswith("tests/test_") and (REPO / path).is_file(), f"test-map.md:{n}: no file {path}"
            assert re.sub(r"\[.*\]$", "", name) in defined_tests(path), f"test-map.md:{n}: no test {nid}"


def test_every_documented_command_and_option_has_a_row():
    pairs, loose = documented()
    have = mapped()
    missing = [f"{sorted(docs)}: desinight {cmd} {what}" for (cmd, what), docs in sorted(pairs.items())
               if (cmd, what) not in have]
    # an option named on its own ("`--once` does one round"): a row for it on some command
    ours = set().union(*(options(c) for c in commands().values()))
    mapped_opts = {what for _, what in have}
    missing += [f"{sorted(docs)}: {o} (no row names it)" for o, docs in sorted(loose.items())
                if o in ours and o not in mapped_opts]
    assert not missing, "documented but not in docs/test-map.md:\n" + "\n".join(missing)


def test_every_documented_option_exists_on_its_command():
    pairs, _ = documented()
    cmds = commands()
    wrong = [f"{sorted(docs)}: desinight {cmd} has no {what}" for (cmd, what), docs in sorted(pairs.items())
             if what != RUNS and what not in options(cmds[cmd]) | options(cli) | {"--help"}]
    wrong += [f"test-map.md: desinight {cmd} has no {what}" for cmd, what in sorted(mapped())
              if what.startswith("--") and (cmd not in cmds or what not in options(cmds[cmd]) | {"--help"})]
    assert not wrong, "\n".join(wrong)


def test_every_exit_code_has_a_row():
    have = mapped()
    assert not [c for c in EXIT_CODES if ("", f"exit {c}") not in have], \
        "each exit code of desinight/core/errors.py needs a row: | doc | `desinight` | `exit N` | test |"


def test_the_scan_sees_what_it_should():
    """The scanner itself: a command with options, a subcommand, a word that is no command."""
    pairs, loose = mentions("Run `desinight ingest 20261124 --wait --timeout 60 | tee x --no` and\n"
                            "```\n$ desinight campaign run c.toml --once\nstatus --json\n```\n"
                            "the `status` word, `--open` alone")
    assert pairs == {("ingest", RUNS), ("ingest", "--wait"), ("ingest", "--timeout"),
                     ("campaign run", RUNS), ("campaign run", "--once"),
                     ("status", RUNS), ("status", "--json")}
    assert {"--wait", "--timeout", "--no", "--once", "--json", "--open"} == loose
