"""The README's tour is a tested artefact: every ```console block is run, in order, in one empty
folder, and its output compared with what the README shows (times are ignored; a number may
differ by up to 2 in its last printed digit, as another CPU can round a sum differently). The
```python block that follows a `# README: python` marker is run the same way. Expensive examples
(the demo's report, sweeps) are shown in plain ``` blocks and say so.

``MMBENCH_README_UPDATE=1 pytest tests/test_readme.py`` rewrites the outputs in README.md from a
fresh run instead of comparing (then read the diff before committing it)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```(console|python)\n(.*?)^```\n", re.S | re.M)
TIME = re.compile(r"\b\d+(\.\d+)?s\b")
NUMBER = re.compile(r"[-+]?\d+\.\d+|\d+")
TOLERANCE = 2  # units of the last printed digit


@dataclass
class Step:
    kind: str  # console | python
    code: str  # the command (console) or the source (python)
    expected: str
    start: int  # offsets of the expected output in README.md
    end: int


def parse(text: str) -> list[Step]:
    steps = []
    for block in BLOCK.finditer(text):
        kind, body, base = block.group(1), block.group(2), block.start(2)
        if kind == "python":
            out = re.compile(r"^```\n(.*?)^```\n", re.S | re.M).match(text, block.end())
            if out is not None:
                steps.append(Step("python", body, out.group(1), out.start(1), out.end(1)))
            continue
        commands = list(re.finditer(r"^\$ (.*)\n", body, re.M))
        for i, c in enumerate(commands):
            end = commands[i + 1].start() if i + 1 < len(commands) else len(body)
            steps.append(Step("console", c.group(1), body[c.end():end], base + c.end(), base + end))
    return steps


def run_console(command: str, monkeypatch, capsys) -> str:
    """``mmbench ARGS [| grep WORD]`` in this process: stdout then stderr, as a terminal shows them."""
    from mmbench.cli import main

    command, _, grep = command.partition(" | grep ")
    args = shlex.split(command.split("  #")[0])
    assert args[0] == "mmbench", command
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit):
        main()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    if grep:
        text = "".join(line + "\n" for line in text.splitlines() if grep.strip() in line)
    return text


def run_python(source: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(source, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102 - our own README
    return buf.getvalue()


def _lines_match(expected: str, actual: str) -> bool:
    exp, act = TIME.sub("<t>", expected), TIME.sub("<t>", actual)
    if NUMBER.sub("#", exp) != NUMBER.sub("#", act):
        return False
    for e, a in zip(NUMBER.findall(exp), NUMBER.findall(act)):
        digits = len(e.split(".")[1]) if "." in e else 0
        if abs(float(e) - float(a)) > TOLERANCE * 10 ** -digits + 1e-9:
            return False
    return True


def matches(expected: str, actual: str) -> bool:
    """Line by line; a line ``...`` in the README stands for any number of lines."""
    exp, act = expected.rstrip("\n").split("\n"), actual.rstrip("\n").split("\n")
    exp = [line.rstrip() for line in exp]
    act = [line.rstrip() for line in act]

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and _lines_match(exp[i], act[j]) and go(i + 1, j + 1)

    return go(0, 0)


def test_readme_tour_runs_and_matches(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    monkeypatch.setenv("COLUMNS", "160")
    import mmbench.ui as ui

    monkeypatch.setattr(ui.out, "width", 160)
    monkeypatch.setattr(ui.console, "width", 160)
    text = README.read_text()
    steps = parse(text)
    assert len(steps) >= 9, "the README lost its tested examples"
    update = os.environ.get("MMBENCH_README_UPDATE") == "1"
    replaced = []
    for step in steps:
        actual = run_console(step.code, monkeypatch, capsys) if step.kind == "console" else run_python(step.code)
        if update:
            replaced.append((step, actual))
        else:
            assert matches(step.expected, actual), f"README: {step.code.strip()[:80]!r}\n--- shown:\n" \
                                                   f"{step.expected}\n--- got:\n{actual}"
    if update:
        for step, actual in reversed(replaced):
            keep = step.expected if matches(step.expected, actual) else actual
            text = text[:step.start] + keep + text[step.end:]
        README.write_text(text)


def test_matching_rules():
    assert matches("trained x: acc 0.990 (3.8s)\n", "trained x: acc 0.989 (12.1s)\n")
    assert not matches("trained x: acc 0.990\n", "trained x: acc 0.980\n")
    assert matches("a\n...\nz\n", "a\nb\nc\nz\n") and not matches("a\nz\n", "a\nb\nz\n")
    steps = parse("```console\n$ mmbench list\nout\n$ mmbench info x\nmore\n```\n")
    assert [(s.code, s.expected) for s in steps] == [("mmbench list", "out\n"), ("mmbench info x", "more\n")]
