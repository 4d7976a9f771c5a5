"""Running ``mmbench`` in-process through ``main()`` (which turns user errors into exit code 2) and
checking the one-line error a user gets."""

from __future__ import annotations

import sys

import pytest

from mmbench.cli import main
from mmbench.results import INCOMPLETE, all_run_folders


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``mmbench ARGS`` through ``main()``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["mmbench", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else code), captured.out, captured.err


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``mmbench ARGS`` through ``main()``: (exit code, stderr), for commands that report on stderr."""
    code, _, err = run_main(monkeypatch, capsys, *args)
    return code, err


def assert_one_line_error(code: int, stderr: str, *fragments: str, ignore: str | None = None) -> str:
    """Exit code 2 and one ``error:`` line (no traceback) holding every fragment; lines starting with
    ``ignore`` (e.g. a sweep's own progress line) do not count."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not (ignore and line.startswith(ignore))]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error:"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def status_counts(results_dir) -> dict[str, int]:
    """``{"complete": n, "failed": n, ...}``: the run folders under ``results_dir`` by status (pending ones left out)."""
    counts = dict.fromkeys(("complete", *INCOMPLETE), 0)
    for folder in all_run_folders(results_dir):
        if folder.status != "pending":
            counts[folder.status] = counts.get(folder.status, 0) + 1
    return counts
