"""What a user sees: tables that fit the terminal without cutting a cell, the live training status,
results on stdout and diagnostics on stderr, help texts and CLI conventions, one label column in
every report output, dataset information, recipes by name."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from rich.progress import Progress, TextColumn
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.config import find_recipe, load_catalog, load_recipe, recipe_names, resolve
from mmbench.errors import MMBenchError
from mmbench.report import ReportOptions, build_report, collect, terminal_tables, write_report
from mmbench.ui import TrainingStatus, fit_tables
from tests.cli_helpers import assert_one_line_error, run_cli, run_main
from tests.test_report import _fake_run

COMMANDS = ["prepare", "train", "attack", "report", "probe", "sweep", "list", "info", "demo"]


def _demo_like(results):
    """Labels and values shaped like the demo's (long variant labels, mean ± std with markers), with a
    plain attack and a protocol attack (long curve names)."""
    levels = {(lv, s): 0.9 - lv / 4 for lv in (0.0, 0.5, 1.0, 2.0) for s in (0, 1)}
    heads = {"vector": 0.85, "image": 0.21}
    extra = {"shapley_vector": 0.6, "shapley_image": 0.11, "imbalance": 0.68, "probe_vector": 0.84,
             "probe_image": 0.49, "acc_masked_vector": 0.7, "acc_masked_image": 0.2}
    for seed in range(3):
        for method, sets in (("joint", []), ("joint", ["model.fusion=late"]), ("ogm_ge", []),
                             ("unimodal", ["method.modality=vector"]), ("unimodal", ["method.modality=image"])):
            _fake_run(results, method, seed, 0.86 + seed / 100, heads, sets=sets, attack=levels, test_extra=extra)
    proto = {"protocol": "multibench", "protocol_version": "1"}
    for seed in range(3):
        _fake_run(results, "joint_uni", seed, 0.8, heads, attack={(lv / 10, 0): 0.8 - lv / 30 for lv in range(10)},
                  protocol={**proto, "modalities": "vector"}, test_extra=extra)


def _render(df, title, width):
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    for table in fit_tables(df, title, width):
        console.print(table)
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 160])
def test_terminal_tables_never_cut_a_number_or_a_label(tmp_path, width):
    _demo_like(tmp_path)
    tables = terminal_tables(build_report(tmp_path))
    assert any("robustness" in title for title, _ in tables)
    for title, df in tables:
        text = _render(df, title, width)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width, title
        assert "…" not in text
        for col in df.columns:
            for value in df[col]:
                assert str(value) in text, (title, col, value)  # every cell whole, on one line
        for word in " ".join(map(str, df.columns)).split():
            assert word in text, (title, word)  # headers may wrap at spaces, never cut inside a word


def test_wide_table_is_split_with_the_labels_repeated_and_narrow_falls_back_to_vertical():
    df = pd.DataFrame({"rank": ["1", "2"], "method": ["unimodal(modality=vector)", "joint"], "n": ["3", "3"],
                       **{f"metric number {i}": ["98.7 ± 0.3†", "–"] for i in range(8)}})
    parts = fit_tables(df, "t", 80)
    assert len(parts) > 1 and all(str(p.title).startswith("t (") for p in parts)
    text = _render(df, "t", 80)
    assert text.count("unimodal(modality=vector)") == len(parts)  # the label repeated in every part
    vertical = _render(df, "t", 40)  # the labels alone take 40 columns: one table per row
    assert "t: 1 · unimodal(modality=vector)" in vertical and "98.7 ± 0.3†" in vertical  # a title may wrap
    assert max(len(line) for line in vertical.splitlines()) <= 40


def test_training_status_shows_per_modality_accuracy_eta_and_phases():
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system=None)
    with Progress(TextColumn("{task.description}", markup=False), TextColumn("{task.fields[status]}", markup=False),
                  console=console, auto_refresh=False) as progress:
        status = TrainingStatus(progress, progress.add_task("mfeat [pix+mor] joint", total=None, status=""), every=0)
        running = {"train_loss": 0.5, "train_acc": 0.9, "train_acc_vector": 0.85, "train_acc_image": 0.25}
        status.batch(0, 3, 60, lambda: running)
        progress.refresh()
        first = buf.getvalue()
        status(0, 20, 60, {"train_loss": 0.4, "val_acc": 0.91, "val_acc_vector": 0.88, "val_acc_image": 0.55})
        status.phase("Shapley values (4 masked evaluations)")
        progress.refresh()
    assert "ep 1 loss 0.500 train 0.90 · vector 0.85 image 0.25" in first  # in the first epoch, not removed as markup
    assert "mfeat [pix+mor] joint" in first
    assert progress.tasks[0].completed == 20 and progress.tasks[0].total == 60  # per batch, so the ETA moves
    assert "Shapley values (4 masked evaluations) …" in buf.getvalue()


class _Recorder:
    def __init__(self):
        self.batches, self.epochs, self.phases = [], [], []

    def __call__(self, epoch, step, total, row):
        self.epochs.append((epoch, step, total))

    def batch(self, epoch, step, total, running):
        self.batches.append((epoch, step, total, running()))

    def phase(self, label):
        self.phases.append(label)


def test_trainer_reports_every_batch_and_the_phases_after_training(make_cfg):
    from mmbench.run import train_run

    cfg = make_cfg("joint", epochs=2)
    recorder = _Recorder()
    train_run(cfg, progress=recorder)
    steps = [b[1] for b in recorder.batches]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == recorder.epochs[-1][1]  # 1..total, no gaps
    assert {b[2] for b in recorder.batches} == {recorder.epochs[-1][2]}  # the total is known from the first batch
    first = recorder.batches[0][3]
    assert recorder.batches[0][0] == 0 and {"train_acc_vector", "train_acc_image"} <= set(first)
    assert 0 <= first["train_acc_image"] <= 1
    assert recorder.phases[0] == "evaluating on test" and recorder.phases[1].startswith("Shapley values")
    assert recorder.phases[-1] == "linear probes"


def test_run_id_before_training_is_the_folders(make_cfg):
    from mmbench.run import train_run

    cfg = make_cfg("ogm_ge", epochs=1)
    before = cfg.run_id()
    folder, _ = train_run(cfg)
    assert folder.run_id == before


# ---------------------------------------------------------------------------------------
# stdout and stderr
# ---------------------------------------------------------------------------------------


def test_results_go_to_stdout_diagnostics_to_stderr(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(monkeypatch, capsys, "list", "methods")
    assert code == 0 and "ogm_ge" in out and err == ""
    assert [line for line in out.splitlines() if "ogm" in line]  # mmbench list methods | grep ogm
    _demo_like(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "report", str(tmp_path), "--no-plots", "--format", "csv")
    assert code == 0
    assert "leaderboard" in out and "ogm_ge" in out and "wrote" in out  # mmbench report > out.txt keeps these
    assert "warning:" not in out and "no late-fusion" not in err  # (this block has late fusion)
    code, out, err = run_main(monkeypatch, capsys, "report", "--results-dir", str(tmp_path / "missing"))
    assert out == "" and "error:" in err


def test_report_takes_the_folder_as_positional_or_results_dir(monkeypatch, capsys, tmp_path):
    _demo_like(tmp_path)
    for args in ([str(tmp_path)], ["--results-dir", str(tmp_path)]):
        code, out, _ = run_main(monkeypatch, capsys, "report", *args, "--no-plots", "--format", "csv")
        assert code == 0 and "joint(fusion=late)" in out
    code, err = run_cli(monkeypatch, capsys, "report", str(tmp_path), "--results-dir", str(tmp_path / "b"))
    assert_one_line_error(code, err, "two results folders")


# ---------------------------------------------------------------------------------------
# Help and conventions
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_and_no_bool_placeholders(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"mmbench {command}" in result.output.split("Examples:")[1]
    assert "<bool>" not in result.output


def test_help_shows_brackets_and_one_device_default():
    attack = CliRunner().invoke(app, ["attack", "--help"]).output
    assert "NAME[@VERSION][:VARIANT]" in " ".join(attack.split())
    for command in ("attack", "probe"):
        text = " ".join(CliRunner().invoke(app, [command, "--help"]).output.split())
        assert "[default: auto]" in text
    from mmbench.config import RunConfig

    assert RunConfig().device == "auto"  # train and sweep leave --device to the config


def test_version_completion_and_python_m():
    from mmbench import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mmbench {__version__}"
    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output
    proc = subprocess.run([sys.executable, "-m", "mmbench", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mmbench {__version__}"


# ---------------------------------------------------------------------------------------
# One label column everywhere
# ---------------------------------------------------------------------------------------


def test_one_label_column_in_dataframes_csv_and_json(tmp_path):
    for seed in range(3):
        _fake_run(tmp_path, "joint", seed, 0.90, {"vector": 0.8})
        _fake_run(tmp_path, "joint", seed, 0.70, {"vector": 0.6}, sets=["model.fusion=late"])
    runs, _ = collect(tmp_path)
    means = runs.groupby("method")["test_acc"].mean()
    assert means.to_dict() == pytest.approx({"joint": 0.90, "joint(fusion=late)": 0.70})  # never pooled
    assert set(runs["config.method.name"]) == {"joint"}  # the bare name stays available
    report = build_report(tmp_path)
    write_report(report, tmp_path / "out", ["csv", "json"], plots=False)
    for name in ("leaderboard.csv", "stats.csv", "runs.csv"):
        df = pd.read_csv(tmp_path / "out" / name)
        assert "entry" not in df.columns and set(df["method"]) == {"joint", "joint(fusion=late)"}, name
    doc = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    for key in ("leaderboard", "stats"):
        assert {r["method"] for r in doc[key]} == {"joint", "joint(fusion=late)"} and "entry" not in doc[key][0]
    split = build_report(tmp_path, ReportOptions(group_by=["dataset", "method", "model.fusion"]))
    assert set(split.wide["method"]) == {"joint"} and set(split.wide["config.model.fusion"]) == {"concat", "late"}


def test_latex_symbols_have_one_meaning_and_labels_are_escaped(tmp_path):
    from mmbench.report.renderers import render_latex

    _fake_run(tmp_path, "ogm_ge", 0, 0.9, {"vector": 0.8})
    _fake_run(tmp_path, "joint", 0, 0.8, {"vector": 0.8})
    tex = render_latex(build_report(tmp_path))
    assert r"$^{\S}$" in tex and "fewer than 3 seeds" in tex  # n = 1
    assert r"\ddagger$ fewer" not in tex and r"$^\ddagger$ the method has reconstructed parts" in tex
    assert r"ogm\_ge" in tex and "ogm_ge" not in tex.replace(r"ogm\_ge", "")


# ---------------------------------------------------------------------------------------
# Datasets and recipes
# ---------------------------------------------------------------------------------------


def test_info_prints_the_catalog_entry(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "info", "cremad")
    entry = load_catalog()["cremad"]
    flat = " ".join(out.split())
    assert code == 0
    for key in ("source", "licence", "citation", "layout"):
        assert " ".join(str(entry[key]).split()) in flat, key
    assert all(" ".join(p.split()) in flat for p in entry["pitfalls"])
    assert "train=6698" in flat and "--preset cpu" in flat
    code, err = run_cli(monkeypatch, capsys, "info", "cremd")
    assert_one_line_error(code, err, "did you mean cremad")


def test_prepare_without_root_points_to_info(monkeypatch, capsys, tmp_path):
    code, err = run_cli(monkeypatch, capsys, "prepare", "cremad", "--data-dir", str(tmp_path))
    assert_one_line_error(code, err, "--root RAW_DIR", "mmbench info cremad")


def test_cpu_preset_is_applied_and_flags_win():
    from mmbench.cli import _preset

    preset = load_catalog()["cremad"]["cpu_preset"]
    assert _preset("cremad", "cpu", "prepare") == preset["prepare"]
    sets = _preset("cremad", "cpu", "train") + ["optim.epochs=5"]
    cfg = resolve(flags={"data.dataset": "cremad"}, sets=sets)
    assert cfg.model.encoders == {"audio": "cnn", "visual": "cnn"} and cfg.model.feature_dim == 64
    assert cfg.optim.epochs == 5  # the user's --set comes after the preset
    assert _preset("mfeat", "cpu", "train") == []  # embedded datasets are CPU-sized already
    with pytest.raises(MMBenchError, match="unknown --preset 'gpu'"):
        _preset("cremad", "gpu", "train")


def test_train_flags_beat_the_cpu_preset(monkeypatch, capsys, tmp_path):
    seen = []

    def record(cfg, **_):
        seen.append(cfg)
        raise MMBenchError("recorded")

    monkeypatch.setattr("mmbench.run.train_run", record)
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "cremad", "--method", "joint", "--preset", "cpu",
                        "--epochs", "5", "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "d"))
    assert_one_line_error(code, err, "recorded")
    preset_epochs = [s for s in load_catalog()["cremad"]["cpu_preset"]["train"] if s.startswith("optim.epochs=")]
    assert preset_epochs and preset_epochs != ["optim.epochs=5"]  # the preset has an epochs setting of its own
    assert seen[0].optim.epochs == 5 and seen[0].model.encoders == {"audio": "cnn", "visual": "cnn"}


def test_recipes_by_name_and_by_path_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert "mfeat/ogm_ge" in recipe_names()
    by_name = load_recipe("mfeat/ogm_ge")
    assert by_name["method"]["name"] == "ogm_ge"
    assert load_recipe("recipes/mfeat/ogm_ge.yaml") == by_name  # the README's path works outside the repository
    own = tmp_path / "mine.yaml"
    own.write_text("method: {name: joint}\n")
    assert find_recipe(str(own)) == own
    with pytest.raises(MMBenchError, match="did you mean mfeat/ogm_ge"):
        find_recipe("mfeat/ogm_gee")


def test_recipes_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = Path(__file__).parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mmbench"]
    shipped = {p for pattern in patterns for p in (root / "mmbench").glob(pattern)}
    assert {p for p in (root / "mmbench" / "recipes").rglob("*.yaml")} <= shipped
    assert len(recipe_names()) >= 40


# ---------------------------------------------------------------------------------------
# attack --all
# ---------------------------------------------------------------------------------------


def test_attack_all_skips_runs_the_noise_does_not_fit(monkeypatch, capsys, make_cfg, tmp_path):
    from mmbench.run import train_run

    code, err = run_cli(monkeypatch, capsys, "attack", "--all", "--noise", "gaussian", "--results-dir",
                        str(tmp_path / "empty"))
    assert_one_line_error(code, err, "no complete runs")
    vector_only = make_cfg("unimodal", epochs=1, sets=["method.modality=vector", "data.modalities=[vector]"])
    both = make_cfg("joint", epochs=1)
    (a, _), (b, _) = train_run(vector_only), train_run(both)
    results = both.output.results_dir
    args = ["--noise", "blur", "--modalities", "image", "--levels", "0,1", "--results-dir", results]
    code, out, err = run_main(monkeypatch, capsys, "attack", "--all", *args)
    assert code == 0, err
    assert f"attacked {b.run_id}" in out and a.run_id not in out
    assert re.search(rf"skipped {a.run_id}: .*'image'", err) and len(err.strip().splitlines()) == 1
    assert not (a.path / "attack.csv").exists() and (b.path / "attack.csv").exists()
    code, err = run_cli(monkeypatch, capsys, "attack", a.run_id, *args)
    assert_one_line_error(code, err, "'image'")  # a named run that does not fit is still an error



def test_attack_progress_counts_evaluations_per_run():
    from mmbench.ui import AttackStatus

    with Progress(console=Console(file=io.StringIO()), auto_refresh=False) as progress:
        status = AttackStatus(progress, runs=2)
        update = status.start("run-a")
        update(3, 8)
        task = progress.tasks[0]
        assert (task.completed, task.total, task.fields["status"]) == (3, 8, "run 1/2 run-a")
        status.start("run-b")
        assert (task.completed, task.fields["status"]) == (0, "run 2/2 run-b")


def test_makefile_torch_index_variable():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).parent.parent

    def dry(*args):
        return subprocess.run(["make", "-n", "-B", "-C", str(root), "install", "VENV=/nonexistent", *args],
                              capture_output=True, text=True, timeout=60).stdout

    plain = dry()
    assert "torch==2.13.0" in plain and "--index-url" not in plain
    cpu = dry("TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in cpu
