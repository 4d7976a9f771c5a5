"""End-to-end tests of the ``mmbench`` command line: prepare -> train -> attack -> report, help
and listing, and the one-line errors (exit code 2, no traceback) for inputs a user gets wrong.

Successful commands go through ``typer.testing.CliRunner``; errors go through ``mmbench.cli.main``
(which turns ``MMBenchError`` into exit code 2), in-process with a patched ``sys.argv``, plus one
real subprocess. Everything lives in ``tmp_path``; training is 2 epochs on 240 samples.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.runtime import tune_cpu
from tests.cli_helpers import assert_one_line_error, run_main

NUM_SAMPLES = 240
TINY_OPTIONS = ["-o", f"num_samples={NUM_SAMPLES}", "-o", "shapes=8,1x6x6"]
LEVELS = [0.0, 1.0]
ATTACK_SEEDS = 2
RUN_FILES = ["config.yaml", "env.json", "metrics.csv", "summary.json", "model.pt", "attack.csv"]

runner = CliRunner()


def invoke(*args: str):
    """Run the app in-process and fail loudly (with its output) if it does not exit 0."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def prepare_tiny(data_dir, name="tiny"):
    return invoke("prepare", "synthetic", "--name", name, *TINY_OPTIONS, "--data-dir", str(data_dir))


# ---------------------------------------------------------------------------------------
# The whole flow, once per module
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    base = tmp_path_factory.mktemp("flow")
    data, results = base / "data", base / "results"
    out = {"data": data, "results": results}
    out["prepare"] = prepare_tiny(data)
    common = ["--dataset", "tiny", "--epochs", "2", "--data-dir", str(data), "--results-dir", str(results), "--quiet"]
    out["train_joint"] = invoke("train", "--method", "joint", *common)
    out["train_uni"] = invoke("train", "--method", "unimodal", "--set", "method.modality=image", *common)
    out["train_args"] = common
    runs = sorted((results / "runs").iterdir())
    out["runs"] = {json.loads((r / "summary.json").read_text())["method"]: r for r in runs}
    out["attack"] = invoke("attack", *[r.name for r in runs], "--noise", "gaussian",
                           "--levels", ",".join(f"{v:g}" for v in LEVELS),
                           "--attack-seeds", str(ATTACK_SEEDS), "--results-dir", str(results))
    out["report"] = invoke("report", str(results))
    return out


def test_prepare_writes_the_dataset(flow):
    meta = json.loads((flow["data"] / "tiny" / "meta.json").read_text())
    assert sum(meta["splits"].values()) == NUM_SAMPLES
    shapes = {m["name"]: m["shape"] for m in meta["modalities"]}
    assert shapes == {"vector": [8], "image": [1, 6, 6]}
    assert "prepared" in flow["prepare"].output and "tiny" in flow["prepare"].output


def test_two_run_folders_with_every_file(flow):
    assert set(flow["runs"]) == {"joint", "unimodal"}
    for method, folder in flow["runs"].items():
        for f in RUN_FILES:
            assert (folder / f).is_file(), (method, f)
        assert not list(folder.glob("*.tmp")), "temporary files left behind"
        assert folder.name in flow["train_joint" if method == "joint" else "train_uni"].output


def test_run_folder_contents(flow):
    meta = json.loads((flow["data"] / "tiny" / "meta.json").read_text())
    for method, folder in flow["runs"].items():
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert cfg["method"]["name"] == method
        assert cfg["data"]["dataset"] == "tiny"
        assert cfg["optim"]["epochs"] == 2
        env = json.loads((folder / "env.json").read_text())
        assert env["torch"] == torch.__version__
        assert env["device"] == "cpu" and env["cpu_tuning"] == tune_cpu()  # what the process applied, recorded
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            assert env["cpu_tuning"] == {"malloc": "M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1, M_ARENA_MAX=1"}
        metrics = pd.read_csv(folder / "metrics.csv")
        assert metrics["epoch"].tolist() == [0, 1]
        assert {"train_loss", "val_acc"} <= set(metrics.columns)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_id"] == folder.name
        assert summary["test_samples"] == meta["splits"]["test"]
        assert 0.0 <= summary["test"]["acc"] <= 1.0
        assert summary["best_epoch"] in (0, 1)
        assert summary["val_acc"] == pytest.approx(metrics["val_acc"].max())
        state = torch.load(folder / "model.pt", weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    uni = yaml.safe_load((flow["runs"]["unimodal"] / "config.yaml").read_text())
    assert uni["method"]["modality"] == "image"
    uni_summary = json.loads((flow["runs"]["unimodal"] / "summary.json").read_text())
    assert "acc_vector" not in uni_summary["test"], "the image-only model has no vector head"


def test_attack_rows_one_per_level_and_seed(flow):
    for method, folder in flow["runs"].items():
        rows = pd.read_csv(folder / "attack.csv")
        assert {"protocol", "level", "attack_seed", "attack", "acc"} <= set(rows.columns)
        assert len(rows) == len(LEVELS) * ATTACK_SEEDS
        assert sorted(zip(rows["level"], rows["attack_seed"])) == sorted(
            (lv, s) for lv in LEVELS for s in range(ATTACK_SEEDS))
        assert rows["protocol"].notna().all() and (rows["protocol"].astype(str) != "").all()
        assert (rows["attack"] == "gaussian").all()
        # level 0 is no corruption at all: every seed reproduces the clean test accuracy
        clean = json.loads((folder / "summary.json").read_text())["test"]["acc"]
        for acc in rows.loc[rows["level"] == 0, "acc"]:
            assert acc == pytest.approx(clean, abs=1e-6), method
        assert folder.name in flow["attack"].output


def test_attacking_again_replaces_rows_instead_of_adding(flow):
    folder = flow["runs"]["joint"]
    before = pd.read_csv(folder / "attack.csv")
    invoke("attack", folder.name, "--noise", "gaussian", "--levels", ",".join(f"{v:g}" for v in LEVELS),
           "--attack-seeds", str(ATTACK_SEEDS), "--results-dir", str(flow["results"]))
    after = pd.read_csv(folder / "attack.csv")
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(after.sort_values(["level", "attack_seed"]).reset_index(drop=True),
                                  before.sort_values(["level", "attack_seed"]).reset_index(drop=True))


def test_report_writes_leaderboards_with_method_names(flow):
    results = flow["results"]
    csv, md = results / "leaderboard.csv", results / "leaderboard.md"
    assert csv.is_file() and md.is_file()
    table = pd.read_csv(csv)
    assert len(table) == 2
    assert (table["dataset"] == "tiny").all()
    methods = table["method"].tolist()
    assert "joint" in methods
    assert any(m.startswith("unimodal") for m in methods)
    assert (table["n"] == 1).all()
    assert any("gaussian" in c for c in table.columns), list(table.columns)
    text = md.read_text()
    assert "joint" in text and "unimodal" in text
    assert "joint" in flow["report"].output and "leaderboard.csv" in flow["report"].output


def test_demo_runs_the_whole_flow_with_late_fusion_as_the_robustness_reference(tmp_path):
    from mmbench.demo import ATTACK_LEVELS

    data, results = tmp_path / "data", tmp_path / "results"
    out = invoke("demo", "--seeds", "1", "--epochs", "1", "--attack-seeds", "1", "--data-dir", str(data),
                 "--results-dir", str(results)).output
    assert "demo finished" in out and "no late-fusion runs" not in out
    table = pd.read_csv(results / "leaderboard.csv")
    common = {"joint", "joint(fusion=late)", "ogm_ge"}
    assert {d: set(g["method"]) for d, g in table.groupby("dataset")} == {
        "synthetic": common | {"unimodal(modality=vector)", "unimodal(modality=image)"},
        "mfeat[pix+mor]": common | {"unimodal(modality=pix)", "unimodal(modality=mor)"}}
    late = table[table["method"] == "joint(fusion=late)"]
    assert (late["robust_eff[gaussian]_mean"] == 0).all()  # the reference, relative to itself
    runs = list((results / "runs").iterdir())
    assert len(runs) == len(table)
    for run in runs:
        attack = pd.read_csv(run / "attack.csv")
        assert sorted(attack["level"].unique()) == ATTACK_LEVELS and set(attack["attack"]) == {"gaussian"}
    assert {"leaderboard.md", "report.html"} <= {p.name for p in results.iterdir()}


def test_rerun_without_force_skips_and_keeps_metrics(flow):
    folder = flow["runs"]["joint"]
    metrics = folder / "metrics.csv"
    before, mtime = metrics.read_bytes(), metrics.stat().st_mtime_ns
    result = invoke("train", "--method", "joint", *flow["train_args"])
    assert "skipped" in result.output
    assert folder.name in result.output
    assert metrics.read_bytes() == before
    assert metrics.stat().st_mtime_ns == mtime
    assert len(list((flow["results"] / "runs").iterdir())) == 2


def test_different_seed_is_a_different_run(flow, tmp_path):
    # separate results dir: the shared flow keeps exactly two runs
    args = list(flow["train_args"])
    args[args.index("--results-dir") + 1] = str(tmp_path / "results")
    invoke("train", "--method", "joint", "--seed", "0", "--seed", "1", *args)
    runs = sorted(p.name for p in (tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 2
    assert flow["runs"]["joint"].name in runs  # same config and seed -> same id, wherever it is written


# ---------------------------------------------------------------------------------------
# Help and listing
# ---------------------------------------------------------------------------------------

COMMANDS = sorted(get_command(app).commands)


def test_top_level_help():
    result = invoke("--help")
    for name in ("prepare", "train", "attack", "report", "list"):
        assert name in COMMANDS
        assert name in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command):
    result = invoke(command, "--help")
    assert "Usage" in result.output and command in result.output


def test_list_methods_with_wildcard():
    result = invoke("list", "methods", "o*")
    assert "ogm_ge" in result.output
    assert "joint" not in result.output and "unimodal" not in result.output


def test_list_everything():
    result = invoke("list")
    for name in ("joint", "ogm_ge", "synthetic", "csv_views", "gaussian", "mlp", "concat"):
        assert name in result.output


# ---------------------------------------------------------------------------------------
# Errors a user can cause: exit code 2, one line naming the fix, no traceback
# ---------------------------------------------------------------------------------------


def test_unknown_method_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmbench.cli", "train", "--method", "ogm", "--epochs", "2",
         "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "ogm_ge")
    assert not (tmp_path / "results").exists()


@pytest.fixture
def train_args(tmp_path):
    return ["--dataset", "tiny", "--epochs", "2", "--data-dir", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results"), "--quiet"]


def test_unknown_method(monkeypatch, capsys, train_args):
    code, _, err = run_main(monkeypatch, capsys, "train", "--method", "ogm_gee", *train_args)
    assert_one_line_error(code, err, "'ogm_gee'", "did you mean ogm_ge")


def test_malformed_recipe_yaml(monkeypatch, capsys, tmp_path, train_args):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("optim:\n  lr: [0.1, 0.2\nmethod: joint\n")
    code, _, err = run_main(monkeypatch, capsys, "train", "--recipe", str(recipe), *train_args)
    assert_one_line_error(code, err, "broken.yaml", "not valid YAML")


def test_recipe_with_unknown_key(monkeypatch, capsys, tmp_path, train_args):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("optim: {lrr: 0.1}\n")
    code, _, err = run_main(monkeypatch, capsys, "train", "--recipe", str(recipe), *train_args)
    assert_one_line_error(code, err, "optim.lrr", "did you mean optim.lr")


def test_missing_recipe_file(monkeypatch, capsys, tmp_path, train_args):
    code, _, err = run_main(monkeypatch, capsys, "train", "--recipe", str(tmp_path / "nope.yaml"), *train_args)
    assert_one_line_error(code, err, "nope.yaml", "not found")


def test_unknown_set_key(monkeypatch, capsys, train_args):
    code, _, err = run_main(monkeypatch, capsys, "train", "--method", "joint", "--set", "optim.lrate=0.1",
                            *train_args)
    assert_one_line_error(code, err, "optim.lrate", "optim.lr")


def test_set_without_equals(monkeypatch, capsys, train_args):
    code, _, err = run_main(monkeypatch, capsys, "train", "--method", "joint", "--set", "optim.lr", *train_args)
    assert_one_line_error(code, err, "key=value")


def test_unknown_method_parameter(monkeypatch, capsys, train_args):
    code, _, err = run_main(monkeypatch, capsys, "train", "--method", "ogm_ge", "--set", "method.alpah=1",
                            *train_args)
    assert_one_line_error(code, err, "method.alpah", "did you mean method.alpha")


def test_prepare_csv_views_without_root(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "csv_views", "--root")


def test_prepare_root_that_does_not_exist(monkeypatch, capsys, tmp_path):
    missing = tmp_path / "no_such_dir"
    code, _, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--root", str(missing),
                            "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "no_such_dir", "does not exist")


def test_corrupt_npy_after_prepare(monkeypatch, capsys, tmp_path, train_args):
    prepare_tiny(tmp_path / "data")
    labels = tmp_path / "data" / "tiny" / "train" / "labels.npy"
    data = bytearray(labels.read_bytes())
    data[-8:] = b"\xff" * 8  # same size, same header, different values
    labels.write_bytes(bytes(data))
    code, _, err = run_main(monkeypatch, capsys, "train", "--method", "joint", *train_args)
    assert_one_line_error(code, err, "checksum mismatch", "labels.npy", "--force")
    assert not list((tmp_path / "results").glob("runs/*/summary.json"))


def _csv_views_root(root, labels_tr, labels_te, classes_txt=None):
    root.mkdir()
    rng = np.random.default_rng(0)
    for suffix, labels in (("tr", labels_tr), ("te", labels_te)):
        np.savetxt(root / f"rna_{suffix}.csv", rng.normal(size=(len(labels), 3)), delimiter=",")
        np.savetxt(root / f"labels_{suffix}.csv", labels, fmt="%d")
    if classes_txt:
        (root / "classes.txt").write_text(classes_txt)
    return root


def test_csv_views_labels_out_of_range(monkeypatch, capsys, tmp_path):
    # three classes declared, but the files use label 3 as well
    root = _csv_views_root(tmp_path / "raw", np.arange(40) % 4, np.arange(12) % 4, classes_txt="a b c\n")
    code, _, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--root", str(root), "--name", "omics",
                            "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "labels", "[0, 3)")
    assert not (tmp_path / "data" / "omics").exists()


def test_csv_views_single_negative_label(monkeypatch, capsys, tmp_path):
    labels_tr = np.arange(40) % 2
    labels_tr[5] = -1
    root = _csv_views_root(tmp_path / "raw", labels_tr, np.arange(12) % 2)
    code, _, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--root", str(root), "--name", "omics",
                            "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "labels")


def test_attack_without_noise(monkeypatch, capsys, flow):
    run = flow["runs"]["joint"].name
    code, _, err = run_main(monkeypatch, capsys, "attack", run, "--results-dir", str(flow["results"]))
    assert_one_line_error(code, err, "--noise")


def test_attack_unknown_run(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "attack", "tiny-joint-s0-0000000000", "--noise", "gaussian",
                            "--results-dir", str(tmp_path / "results"))
    assert_one_line_error(code, err, "tiny-joint-s0-0000000000", "not found")


def test_attack_unknown_attack_name(monkeypatch, capsys, flow):
    folder = flow["runs"]["joint"]
    before = (folder / "attack.csv").read_bytes()
    code, _, err = run_main(monkeypatch, capsys, "attack", folder.name, "--noise", "gausian",
                            "--results-dir", str(flow["results"]))
    assert_one_line_error(code, err, "'gausian'", "did you mean gaussian")
    assert (folder / "attack.csv").read_bytes() == before


def test_report_of_missing_results_dir(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "report", str(tmp_path / "nothing"))
    assert_one_line_error(code, err, "does not exist")


def test_list_unknown_kind(monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "list", "method")
    assert_one_line_error(code, err, "did you mean methods")


def test_prepare_option_list_with_numeric_item(tmp_path):
    result = runner.invoke(app, ["prepare", "synthetic", "--name", "tiny", "-o", f"num_samples={NUM_SAMPLES}",
                                 "-o", "shapes=[8,1x6x6]", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "data" / "tiny" / "meta.json").read_text())
    assert {m["name"]: m["shape"] for m in meta["modalities"]} == {"vector": [8], "image": [1, 6, 6]}
