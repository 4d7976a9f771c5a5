"""Every input a user can get wrong ends in one ``error:`` line, exit code 2, no traceback, and no new
or changed file -- validated before anything is created.

The walkers introspect the command line (every option and argument of every command) and the
configuration (every field of the config dataclasses and of every method's ``Params``) and feed
each an out-of-domain value, so a new flag or field is covered the day it is added: a string
option needs an entry in :data:`BAD_STRINGS`, or :func:`test_every_string_option_has_bad_values`
fails. The explicit cases of the bad-input campaign follow, parametrised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from mmbench import yaml_io
from mmbench.cli import app
from mmbench.config import RunConfig, domains, resolve
from mmbench.data.store import STAMPS, prepare
from mmbench.errors import MMBenchError
from mmbench.registry import METHODS
from mmbench.report import build_report
from mmbench.run import train_run
from tests.cli_helpers import assert_one_line_error, run_main
from tests.conftest import BUILTIN_METHODS, TINY

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "model.hidden_dim=16", "--set", "model.feature_dim=8", "--set", "optim.batch_size=32",
         "--set", "output.probe=false"]
MAX_MESSAGE = 600  # characters: an error line stays short whatever the input


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with a prepared dataset ``tiny``, one complete run with an attack row, and a grid file."""
    ws = tmp_path_factory.mktemp("ws")
    prepare("synthetic", data_dir=ws / "data", name="tiny", options=TINY)
    cfg = resolve(flags={"data.dataset": "tiny", "optim.epochs": 1, "output.data_dir": str(ws / "data"),
                         "output.results_dir": str(ws / "results")},
                  sets=["model.hidden_dim=16", "model.feature_dim=8", "optim.batch_size=32", "output.probe=false"])
    folder, _ = train_run(cfg)
    (ws / "grid.yaml").write_text(yaml.safe_dump({"datasets": ["tiny"], "methods": ["joint"], "seeds": 1,
                                                  "set": {"optim.epochs": 1}}))
    return ws, folder.run_id


def _tree(root: Path) -> dict[str, tuple]:
    """Every path with its size and time; a prepared dataset's checksum stamps (``verified.json``, a cache of
    hashes a load may renew) are not data."""
    return {str(p.relative_to(root)): ((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "dir")
            for p in root.rglob("*") if p.name != STAMPS}


def assert_refused(monkeypatch, capsys, ws: Path, *args: str, fragments: tuple[str, ...] = ()) -> str:
    """``mmbench ARGS`` in ``ws``: exit 2, one short ``error:`` line, no traceback, the tree unchanged."""
    monkeypatch.chdir(ws)
    before = _tree(ws)
    code, out, err = run_main(monkeypatch, capsys, *args)
    line = assert_one_line_error(code, err, *fragments)
    assert len(line) <= MAX_MESSAGE, line[:200]
    assert _tree(ws) == before, "files were created or changed"
    return line


# ---------------------------------------------------------------------------------------
# Walker 1: every option and argument of every command
# ---------------------------------------------------------------------------------------

COMMANDS = get_command(app).commands


def base_args(command: str, run_id: str) -> list[str]:
    """A valid invocation of ``command`` in the workspace that writes nothing new."""
    where = ["--data-dir", "data", "--results-dir", "results"]
    return {
        "prepare": ["prepare", "synthetic", "--name", "fresh", "--data-dir", "data"],
        "train": ["train", "--dataset", "tiny", "--epochs", "1", "--quiet", *SMALL, *where],
        "attack": ["attack", run_id, "--noise", "gaussian", "--levels", "0", *where],
        "report": ["report", "results", "--no-plots", "--out", "report"],
        "probe": ["probe", run_id, *where],
        "sweep": ["sweep", "grid.yaml", "--quiet", *where],
        "list": ["list"],
        "info": ["info", "mfeat"],
        "demo": ["demo", "--seeds", "1", "--epochs", "1", "--attack-seeds", "1", *where],
    }[command]


#: out-of-domain values of the options and arguments that take free text: (command, parameter) -> values
BAD_STRINGS: dict[tuple[str, str], list[str]] = {
    ("prepare", "dataset"): ["nosuch"],
    ("prepare", "root"): ["/nonexistent/raw"],
    ("prepare", "name"): ["a/b"],
    ("prepare", "modalities"): ["nosuch", "vector,", "vector,vector"],
    ("prepare", "option"): ["nosuch=1", "novalue"],
    ("prepare", "data_dir"): ["grid.yaml"],
    ("prepare", "preset"): ["gpu"],
    ("train", "dataset"): ["nosuch"],
    ("train", "method"): ["nosuch"],
    ("train", "recipe"): ["nosuch.yaml", "grid.yaml"],
    ("train", "modalities"): ["nosuch", ",", "vector,vector"],
    ("train", "device"): ["tpu"],
    ("train", "set_"): ["nosuch.key=1", "optim.lr=-1", "novalue"],
    ("train", "data_dir"): ["grid.yaml"],
    ("train", "preset"): ["gpu"],
    ("train", "results_dir"): ["grid.yaml"],
    ("attack", "runs"): ["nosuch_run"],
    ("attack", "noise"): ["nosuch", "gaussian,", "gaussian,gaussian"],
    ("attack", "protocol"): ["nosuch"],
    ("attack", "levels"): ["x", ",", "nan", "inf", "1e308", "-1", "0,0"],
    ("attack", "modalities"): ["nosuch", ","],
    ("attack", "device"): ["tpu"],
    ("attack", "data_dir"): ["nosuch_dir"],
    ("attack", "results_dir"): ["nosuch_dir"],
    ("report", "results"): ["nosuch_dir"],
    ("report", "results_dir"): ["nosuch_dir"],
    ("report", "out"): ["grid.yaml"],
    ("report", "dataset"): ["nosuch"],
    ("report", "method"): ["nosuch"],
    ("report", "metric"): ["nosuch", "acc,,f1"],
    ("report", "group_by"): ["nosuch", "dataset,dataset"],
    ("report", "format_"): ["docx"],
    ("report", "ci"): ["nosuch"],
    ("probe", "runs"): ["nosuch_run"],
    ("probe", "device"): ["tpu"],
    ("probe", "data_dir"): ["nosuch_dir"],
    ("probe", "results_dir"): ["nosuch_dir"],
    ("sweep", "grid"): ["nosuch.yaml", "data"],
    ("sweep", "executor"): ["nosuch"],
    ("sweep", "address"): ["nowhere:1"],
    ("sweep", "set_"): ["nosuch.key=1", "optim.epochs=0"],
    ("sweep", "device"): ["tpu"],
    ("sweep", "data_dir"): ["grid.yaml"],
    ("sweep", "results_dir"): ["grid.yaml"],
    ("list", "kind"): ["nosuch"],
    ("demo", "data_dir"): ["grid.yaml"],
    ("demo", "results_dir"): ["grid.yaml"],
    ("info", "dataset"): ["nosuch"],
}


#: free-text parameters for which no text is an error, and why
ANY_TEXT = {
    ("report", "reference"): "a method absent from the results is a warning in the report",
    ("list", "pattern"): "a pattern that matches nothing lists nothing",
}


def _annotation(param) -> typing.Any:
    tp = param.type_descriptor.annotation
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, type(int | None)) and len(args) == 1:
        tp = args[0]
    return typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp


def bad_values(command: str, param) -> list[str] | None:
    """Out-of-domain values for one parameter; None for on/off flags (they take no value) and :data:`ANY_TEXT`."""
    if getattr(param, "is_flag", False):
        return None
    tp = _annotation(param)
    if tp in (int, float):
        values = ["x"] + (["nan"] if tp is float else [])
        if param.min is not None:
            values.append(str(param.min - 1))
        if param.max is not None:
            values.append(str(param.max + 1))
        return values
    if (command, param.name) in ANY_TEXT:
        return None
    return BAD_STRINGS.get((command, param.name), [])


def walk_cli() -> list[tuple[str, str, str]]:
    cases = []
    for command, cmd in sorted(COMMANDS.items()):
        for param in cmd.params:
            for value in bad_values(command, param) or []:
                cases.append((command, param.name, value))
    return cases


def test_every_string_option_has_bad_values():
    missing = [f"{c} {p.name}" for c, cmd in COMMANDS.items() for p in cmd.params if bad_values(c, p) == []]
    assert not missing, f"add out-of-domain values to BAD_STRINGS for: {', '.join(missing)}"


def _invocation(command: str, name: str, value: str, run_id: str) -> list[str]:
    args = base_args(command, run_id)
    param = next(p for p in COMMANDS[command].params if p.name == name)
    if getattr(param, "opts", None) and param.opts[0].startswith("-"):
        return [*args, f"{param.opts[0]}={value}"]
    position = [p for p in COMMANDS[command].params if not getattr(p, "opts", [""])[0].startswith("-")].index(param)
    positional = 1 + position  # the base lists the command, then its positional arguments in order
    if positional < len(args) and not args[positional].startswith("-"):
        return [*args[:positional], value, *args[positional + 1:]]
    return [*args[:positional], value, *args[positional:]]


@pytest.mark.parametrize("command,name,value", walk_cli())
def test_every_cli_parameter_refuses_out_of_domain(workspace, monkeypatch, capsys, command, name, value):
    ws, run_id = workspace
    assert_refused(monkeypatch, capsys, ws, *_invocation(command, name, value, run_id))


# ---------------------------------------------------------------------------------------
# Walker 2: every config field and every method parameter
# ---------------------------------------------------------------------------------------


def _wrong_type(tp) -> str:
    """A YAML value of another type than ``tp``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, type(int | None)):
        tp = args[0]
    origin = typing.get_origin(tp) or tp
    return {int: "abc", float: "abc", bool: "maybe", str: "[1, 2]", list: "{a: 1}", tuple: "abc",
            dict: "[1]"}[origin]


def field_cases(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(key, YAML value) for every leaf field: a value of the wrong type, and values just outside its domain."""
    hints, declared, cases = typing.get_type_hints(cls), domains(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            cases += field_cases(tp, f"{prefix}{f.name}.")
            continue
        cases.append((prefix + f.name, _wrong_type(tp)))
        cases += [(prefix + f.name, json.dumps(v)) for v in (declared[f.name].outside() if f.name in declared else [])]
    return cases


def method_cases() -> list[tuple[str, str, str]]:
    return [(name, key, value) for name in BUILTIN_METHODS
            for key, value in field_cases(METHODS.get(name).Params, "method.")]


@pytest.mark.parametrize("key,value", field_cases(RunConfig))
def test_every_config_field_refuses_out_of_domain(workspace, monkeypatch, capsys, key, value):
    ws, _ = workspace
    line = assert_refused(monkeypatch, capsys, ws, *base_args("train", ""), "--set", f"{key}={value}")
    assert key.rsplit(".", 1)[-1] in line


@pytest.mark.parametrize("method,key,value", method_cases())
def test_every_method_parameter_refuses_out_of_domain(workspace, monkeypatch, capsys, method, key, value):
    ws, _ = workspace
    line = assert_refused(monkeypatch, capsys, ws, *base_args("train", ""), "--method", method,
                          "--set", f"{key}={value}")
    assert key.split(".", 1)[1] in line


def test_domains_are_declared_for_the_numeric_training_settings():
    """The values that broke training (issue cases) have a declared domain, so the walker covers them."""
    declared = {f"{section}.{k}" for section in ("model", "optim")
                for k in domains(typing.get_type_hints(RunConfig)[section])}
    assert {"optim.lr", "optim.momentum", "optim.weight_decay", "optim.batch_size", "optim.step_size",
            "optim.epochs", "optim.grad_clip", "model.dropout", "model.hidden_dim"} <= declared
    assert "seed" in domains(RunConfig)


# ---------------------------------------------------------------------------------------
# The campaign's cases, explicitly
# ---------------------------------------------------------------------------------------

CONFIG_CASES = [
    (["--seed", "-1"], "--seed"),
    (["--set", "seed=-1"], "'seed' must be in [0, 4294967295], got -1"),
    (["--set", "optim.lr=-1"], "'optim.lr' must be > 0, got -1.0"),
    (["--set", "optim.momentum=-1"], "'optim.momentum' must be in [0, 1), got -1.0"),
    (["--set", "optim.weight_decay=-1"], "'optim.weight_decay' must be >= 0, got -1.0"),
    (["--set", "model.dropout=2"], "'model.dropout' must be in [0, 1), got 2.0"),
    (["--set", "optim.batch_size=0"], "'optim.batch_size' must be >= 1, got 0"),
    (["--set", "optim.batch_size=-5"], "'optim.batch_size' must be >= 1, got -5"),
    (["--set", "optim.schedule=step", "--set", "optim.step_size=0"], "'optim.step_size' must be >= 1, got 0"),
    (["--set", "optim.epochs=0"], "'optim.epochs' must be >= 1, got 0"),
    (["--epochs", "0"], "--epochs"),
    (["--set", "optim.grad_clip=-1"], "'optim.grad_clip' must be > 0, got -1.0"),
    (["--set", "model.hidden_dim=0"], "'model.hidden_dim' must be >= 1, got 0"),
    (["--set", "optim.lr=.nan"], "'optim.lr' must be a finite number"),
    (["--set", "optim.lr=.inf"], "'optim.lr' must be a finite number"),
    (["--modalities", "vector,vector"], "names an entry twice"),
    (["--modalities", ","], "has an empty entry"),
    (["--set", "data.modalities=[vector, vector]"], "'data.modalities' must be a non-empty list of distinct names"),
    (["--method", "ogm_ge", "--set", "method.alpha=-1"], "'method.alpha' must be >= 0, got -1.0"),
    (["--method", "pmr", "--set", "method.proto_fraction=0"], "'method.proto_fraction' must be in (0, 1], got 0.0"),
    (["--set", "model.hidden_dim=1000000"], "the model is too large"),
]


@pytest.mark.parametrize("args,fragment", CONFIG_CASES, ids=[" ".join(a) for a, _ in CONFIG_CASES])
def test_train_value_cases(workspace, monkeypatch, capsys, args, fragment):
    ws, _ = workspace
    assert_refused(monkeypatch, capsys, ws, *base_args("train", ""), *args, fragments=(fragment,))


def test_too_large_model_names_the_estimate(workspace, monkeypatch, capsys):
    ws, _ = workspace
    line = assert_refused(monkeypatch, capsys, ws, *base_args("train", ""), "--set", "model.hidden_dim=1000000")
    assert "parameters need about" in line and "GiB" in line and "model.hidden_dim (now 1000000)" in line


ATTACK_CASES = [("--levels", "1e308"), ("--levels", "nan"), ("--levels", "inf"), ("--levels", ","),
                ("--levels", "-1"), ("--attack-seeds", "0"), ("--attack-seeds", "-2")]


@pytest.mark.parametrize("option,value", ATTACK_CASES)
def test_attack_argument_cases(workspace, monkeypatch, capsys, option, value):
    ws, run_id = workspace
    assert_refused(monkeypatch, capsys, ws, *base_args("attack", run_id), f"{option}={value}", fragments=(option,))


def test_attack_runner_checks_levels_and_seeds_itself(workspace):
    from mmbench.attacks.runner import attack_run
    from mmbench.results import resolve_run

    ws, run_id = workspace
    folder = resolve_run(run_id, str(ws / "results"))
    for levels, seeds in (([float("nan")], [0]), ([1e308 * 10], [0]), ([], [0]), ([0.5], []), ([0.5], [-1])):
        with pytest.raises(MMBenchError):
            attack_run(folder, ["gaussian"], levels, seeds)
    assert not (folder.path / "attack.csv").exists()


def test_report_alpha_refused(workspace, monkeypatch, capsys):
    ws, _ = workspace
    for value in ("5", "0", "1", "nan"):
        assert_refused(monkeypatch, capsys, ws, "report", "results", "--no-plots", "--out", "report", "--alpha", value,
                       fragments=("--alpha",))


def test_report_skips_attack_rows_with_bad_levels(workspace, tmp_path):
    import shutil

    import pandas as pd

    ws, run_id = workspace
    shutil.copytree(ws / "results", tmp_path / "results")
    run = tmp_path / "results" / "runs" / run_id
    rows = [{"run_id": run_id, "protocol": "custom", "protocol_version": "1", "attack": "gaussian",
             "modalities": "all", "level": level, "fraction": 1.0, "attack_seed": 0, "acc": 0.5}
            for level in (0.0, 1.0, -1.0, float("inf"), float("nan"))]
    pd.DataFrame(rows).to_csv(run / "attack.csv", index=False)
    report = build_report(tmp_path / "results")
    metrics = set(report.long["metric"])
    assert "gaussian@1" in metrics
    assert not [m for m in metrics if m.endswith(("@-1", "@inf", "@nan"))], metrics
    assert any("skipped 3 rows" in w and "attack.csv" in w for w in report.warnings), report.warnings


# -- YAML: depth, long integers, alias bombs; one shared bounded loader -----------------------


def _bomb(levels: int = 9) -> str:
    parts, prev = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghijk"[:levels - 1]:
        parts.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "[" + ", ".join(parts) + "]"


YAML_CASES = {
    "deep": ("a: " + "[" * 5000 + "]" * 5000, "nested more than"),
    "long-integer": ("seed: " + "1" * 5001, "a number of 5001 characters"),
    "alias-bomb": ("seed: " + _bomb(), "once its aliases are expanded"),
    "self-reference": ("seed: &a [*a]", "refers to a value that contains it"),
    "huge": ("seed: 1\n" + "#" * (yaml_io.MAX_BYTES + 1), "larger than"),
}


@pytest.mark.parametrize("case", YAML_CASES)
@pytest.mark.parametrize("where", ["recipe", "grid"])
def test_yaml_bombs_are_one_short_line(workspace, monkeypatch, capsys, case, where):
    ws, _ = workspace
    text, fragment = YAML_CASES[case]
    path = ws / f"bad-{case}.yaml"
    path.write_text(text if where == "recipe" else text.replace("seed: ", "datasets: ").replace("a: ", "datasets: "))
    start = time.perf_counter()
    args = (*base_args("train", ""), "--recipe", path.name) if where == "recipe" else \
        ("sweep", path.name, "--dry-run", "--data-dir", "data", "--results-dir", "results")
    try:
        assert_refused(monkeypatch, capsys, ws, *args, fragments=(fragment,))
    finally:
        path.unlink()
    assert time.perf_counter() - start < 10


def test_set_value_with_a_long_integer_is_one_line(workspace, monkeypatch, capsys):
    ws, _ = workspace
    assert_refused(monkeypatch, capsys, ws, *base_args("train", ""), "--set", "seed=" + "1" * 5001,
                   fragments=("--set seed", "5001 characters"))


def test_bounded_loader_keeps_ordinary_yaml():
    text = "base: &b {lr: 0.1, epochs: 3}\nrun:\n  <<: *b\n  epochs: 5\nbig: 123456789012345678901234567890\n"
    assert yaml_io.parse(text) == yaml.safe_load(text)


# -- Ctrl-C during train -----------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
def test_ctrl_c_during_train_is_one_line_and_the_run_resumes(workspace, tmp_path):
    ws, _ = workspace
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmbench.cli", "train", "--dataset", "tiny", "--epochs", "40", "--quiet", *SMALL,
           "--set", "optim.batch_size=8", "--data-dir", str(ws / "data"), "--results-dir", str(tmp_path / "results")]
    # Ctrl-C as at a terminal: a test run started in the background (nohup, `&`) inherits SIGINT ignored
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    status = None
    while time.time() < deadline and child.poll() is None:
        found = list((tmp_path / "results" / "runs").glob("*/status.json"))
        if found:
            try:
                status = json.loads(found[0].read_text())
            except ValueError:
                status = None
            if status and status.get("epoch", 0) >= 1:
                break
        time.sleep(0.05)
    assert child.poll() is None, "training ended before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["interrupted; run the same command with --resume to continue from the last finished epoch"], err
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(next((tmp_path / "results" / "runs").glob("*/summary.json")).read_text())
    assert summary["resumed_from_epoch"] is not None and summary["resumed_from_epoch"] >= 1
