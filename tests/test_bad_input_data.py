"""Bad input that could lose data or leave results that cannot be trusted: names that become paths,
raw files, records edited after they were written, data prepared again, interruptions, concurrency.

``test_refused`` holds the one-line cases: each is a command that must end in one ``error:`` line
(exit 2, no traceback) holding the given fragments, and leave every file as it was. The other
tests check what must happen instead of an error (a warning, a run left out of a report, an old
result kept, every row kept).
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmbench.checksums import file_sha256
from mmbench.config import resolve
from mmbench.data.store import STAMPS, prepare
from mmbench.errors import MMBenchError
from mmbench.results import RunFolder, run_folders
from mmbench.run import train_run
from tests.cli_helpers import assert_one_line_error, run_cli, run_main, status_counts
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["optim.batch_size=32", "model.hidden_dim=16", "model.feature_dim=8", "output.probe=false"]


def _train(data: Path, results: Path, epochs: int = 2, seed: int = 0) -> RunFolder:
    cfg = resolve(flags={"data.dataset": "tiny", "method.name": "joint", "optim.epochs": epochs, "seed": seed,
                         "output.data_dir": str(data), "output.results_dir": str(results), "device": "cpu"},
                  sets=SMALL)
    return train_run(cfg)[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace: ``data/tiny`` prepared, ``results`` with one trained and attacked run, ``raw`` csv views."""
    root = tmp_path_factory.mktemp("base")
    prepare("synthetic", data_dir=root / "data", name="tiny", options=TINY)
    folder = _train(root / "data", root / "results")
    from mmbench.attacks.runner import attack_run

    attack_run(folder, ["gaussian"], [0.0, 1.0], data_dir=str(root / "data"))
    _views(root / "raw")
    return root


@pytest.fixture
def ws(base, tmp_path) -> Path:
    """A fresh copy of the workspace (commands may damage it)."""
    shutil.copytree(base, tmp_path / "ws", symlinks=True)
    return tmp_path / "ws"


def _views(raw: Path, labels_tr=None, labels_te=None, a_tr=None) -> Path:
    """csv_views raw files: views a (4 columns) and b (3), 60 train and 20 test rows, labels 0..2."""
    rng = np.random.default_rng(0)
    raw.mkdir(parents=True, exist_ok=True)
    for suffix, n, labels, a in (("tr", 60, labels_tr, a_tr), ("te", 20, labels_te, None)):
        y = np.arange(n) % 3 if labels is None else np.asarray(labels)
        x = rng.normal(size=(n, 4)) + y[:, None] if a is None else np.asarray(a, dtype=float)
        np.savetxt(raw / f"a_{suffix}.csv", x, delimiter=",")
        np.savetxt(raw / f"b_{suffix}.csv", rng.normal(size=(n, 3)) + y[:, None], delimiter=",")
        np.savetxt(raw / f"labels_{suffix}.csv", y, fmt="%d")
    return raw


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (hidden ones too) with its kind, mode and content; checksum stamps left out."""
    snap = {}
    for p in sorted(root.rglob("*")):
        if p.name == STAMPS:  # a prepared dataset's checksum stamps: a cache of hashes a load may renew, not data
            continue
        st = p.lstat()
        content = os.readlink(p) if p.is_symlink() else p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        snap[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content)
    return snap


def _run_dir(ws: Path) -> Path:
    return next((ws / "results" / "runs").iterdir())


def _run_id(ws: Path) -> str:
    return _run_dir(ws).name


def _edit_yaml(path: Path, change) -> None:
    d = yaml.safe_load(path.read_text())
    change(d)
    path.write_text(yaml.safe_dump(d))


def _edit_json(path: Path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _symlink(path: Path, target: str) -> None:
    path.unlink()
    path.symlink_to(target)


def _user_folder(ws: Path) -> None:
    (ws / "data" / "mine").mkdir()
    (ws / "data" / "mine" / "notes.txt").write_text("a user's own file")


def _reprepare(ws: Path) -> None:
    prepare("synthetic", data_dir=ws / "data", name="tiny", options={**TINY, "seed": 1}, force=True)


def _disk_full(monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)


def _loop(ws: Path) -> None:
    (ws / "loop").symlink_to(ws / "loop")


def _csv(ws: Path, name: str, text: str) -> None:
    (ws / "raw" / name).write_text(text)


def _rows(values: str, n: int = 60) -> str:
    """``n`` rows of view ``a`` (4 columns) whose third row is ``values``."""
    rows = ["1,2,3,4"] * n
    rows[2] = values
    return "\n".join(rows) + "\n"


TRAIN = ["train", "--dataset", "tiny", "--method", "joint", "--epochs", "2", "--device", "cpu", "--quiet",
         *[a for s in SMALL for a in ("--set", s)]]
CSV = ["prepare", "csv_views", "--root", "{ws}/raw"]

# (case, setup(ws, monkeypatch), command ({ws} and {run} filled in), fragments of the one error line)
REFUSED = [
    ("name-dot", None, ["prepare", "synthetic", "--name", "."], ["'.'", "not a valid name"]),
    ("name-dotdot", None, ["prepare", "synthetic", "--name", ".."], ["'..'", "not a valid name"]),
    ("name-parent", None, ["prepare", "synthetic", "--name", "../x"], ["'../x'", "no path separators"]),
    ("name-300", None, ["prepare", "synthetic", "--name", "a" * 300], ["300 characters long", "at most 100"]),
    ("name-user-folder", lambda ws, mp: _user_folder(ws), ["prepare", "synthetic", "--name", "mine", "--force"],
     ["data/mine exists and is not a dataset prepared by mmbench"]),
    ("name-builtin", None, [*CSV, "--name", "mfeat"], ["'mfeat' is a built-in dataset"]),
    ("dataset-outside", None, ["train", "--dataset", "../outside/x", "--method", "joint"], ["'../outside/x'"]),
    ("dataset-300", None, ["train", "--dataset", "d" * 300, "--method", "joint"], ["300 characters long"]),
    ("csv-nan", lambda ws, mp: _csv(ws, "a_tr.csv", _rows("1,nan,3,4")), CSV,
     ["a_tr.csv: row 3, column 2 holds nan", "-o on_nonfinite=mean"]),
    ("csv-inf", lambda ws, mp: _csv(ws, "a_tr.csv", _rows("1,2,-inf,4")), CSV, ["row 3, column 3 holds -inf"]),
    ("csv-1e300", lambda ws, mp: _csv(ws, "a_tr.csv", _rows("1e300,2,3,4")), CSV, ["row 3, column 1 holds 1e+300"]),
    ("csv-bad-option", None, [*CSV, "-o", "on_nonfinite=drop"], ["on_nonfinite must be error or mean"]),
    ("csv-empty-view", lambda ws, mp: _csv(ws, "b_te.csv", ""), CSV, ["b_te.csv is empty"]),
    ("labels-two-columns", lambda ws, mp: _csv(ws, "labels_tr.csv", "0,1\n" * 60), CSV,
     ["labels_tr.csv has 2 columns", "one integer label per row"]),
    ("labels-negative", lambda ws, mp: _csv(ws, "labels_te.csv", "-1\n" + "0\n" * 19), CSV, ["non-negative"]),
    ("labels-one-class", lambda ws, mp: (_csv(ws, "labels_tr.csv", "0\n" * 60), _csv(ws, "labels_te.csv", "0\n" * 20)),
     CSV, ["1 class", "at least two"]),
    ("disk-full", lambda ws, mp: _disk_full(mp), ["prepare", "synthetic", "--name", "new"],
     ["cannot write the prepared dataset", "No space left on device", "nothing was changed"]),
    ("meta-edited", lambda ws, mp: _edit_json(ws / "data/tiny/meta.json",
                                                lambda d: d["modalities"][0].update(std=9.0)),
     TRAIN, ["meta.json changed after prepare"]),
    ("meta-dev-zero", lambda ws, mp: _symlink(ws / "data/tiny/meta.json", "/dev/zero"), TRAIN,
     ["meta.json is not a regular file"]),
    ("model-dev-zero", lambda ws, mp: _symlink(_run_dir(ws) / "model.pt", "/dev/zero"),
     ["attack", "{run}", "--noise", "gaussian"], ["model.pt is not a regular file"]),
    ("summary-edited", lambda ws, mp: _edit_json(_run_dir(ws) / "summary.json",
                                                   lambda d: d["test"].update(acc=0.99)),
     TRAIN, ["summary.json changed after the run was written", "--force"]),
    ("config-structure", lambda ws, mp: _edit_yaml(_run_dir(ws) / "config.yaml", lambda d: d.update(optim=[1, 2])),
     ["attack", "{run}", "--noise", "gaussian"], ["run {run}: checksum mismatch", "{run}/config.yaml"]),
    ("config-edited", lambda ws, mp: _edit_yaml(_run_dir(ws) / "config.yaml", lambda d: d["optim"].update(lr=0.5)),
     ["attack", "{run}", "--noise", "gaussian"], ["run {run}: checksum mismatch", "{run}/config.yaml"]),
    ("attack-csv-garbage", lambda ws, mp: (_run_dir(ws) / "attack.csv").write_bytes(b"\x00\xff garbage\n1,2\n"),
     ["attack", "{run}", "--noise", "gaussian"], ["{run}: attack.csv is damaged"]),
    ("data-prepared-again", lambda ws, mp: _reprepare(ws), ["attack", "{run}", "--noise", "gaussian"],
     ["{run} was trained on other data", "prepared again since?"]),
    ("summary-no-digest", lambda ws, mp: _edit_json(_run_dir(ws) / "summary.json", lambda d: d.pop("digest")),
     ["attack", "{run}", "--noise", "gaussian"], ["summary.json has no digest"]),
    ("run-300", None, ["attack", "r" * 300, "--noise", "gaussian"], ["not found"]),
    ("next-not-ours", lambda ws, mp: (_run_dir(ws) / ".next").mkdir(), [*TRAIN, "--force"],
     ["/.next is in the way", "not made by mmbench"]),
    ("checkpoint-dev-zero", lambda ws, mp: (_run_dir(ws) / "summary.json").unlink() or
     (_run_dir(ws) / "checkpoint.pt").symlink_to("/dev/zero"), [*TRAIN, "--resume"],
     ["checkpoint.pt is not a regular file"]),
    ("results-symlink-loop", lambda ws, mp: _loop(ws), [*TRAIN, "--results-dir", "{ws}/loop"],
     ["loop"]),
]


RECORDS_FAILURE = {"checkpoint-dev-zero"}  # refused once the run is under way: recorded as failed


@pytest.mark.parametrize("case, setup, command, fragments", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(ws, monkeypatch, capsys, case, setup, command, fragments):
    if setup is not None:
        setup(ws, monkeypatch)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("MMBENCH_DATA", str(ws / "data"))
    before = _snapshot(ws)
    run = _run_id(ws)
    args = [a.format(ws=ws, run=run) for a in command]
    if args[0] in ("train", "attack"):  # the copied run's config.yaml names the original data
        args += ["--data-dir", str(ws / "data")] + ([] if "--results-dir" in args else ["--results-dir", str(ws / "results")])
    code, err = run_cli(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *(f.format(ws=ws, run=run) for f in fragments))
    after = _snapshot(ws)
    if case in RECORDS_FAILURE:  # the run's status.json says why it stopped (and the files it rewrote first)
        before, after = ({k: v for k, v in snap.items() if Path(k).name not in ("status.json", "env.json", "config.yaml")}
                         for snap in (before, after))
    assert after == before, "a refused command changed files"


# -- raw files that prepare, with what the user must know ------------------------------------------------


@pytest.mark.parametrize("labels_tr, labels_te, classes, values, warning", [
    ([1, 2, 3] * 20, [1, 2, 3] * 6 + [1, 2], ["1", "2", "3"], [1, 2, 3], "labels {1, 2, 3} are not 0..2"),
    ([0, 7] * 30, [0, 7] * 10, ["0", "7"], [0, 7], "labels {0, 7} are not 0..1"),
    ([0, 10**9] * 30, [0, 10**9] * 10, ["0", "1000000000"], [0, 10**9], "labels {0, 1e+09} are not 0..1"),
    ([0, 1] * 30, [0, 1, 2] * 6 + [0, 1], ["0", "1", "2"], None, "1 class(es) have no training sample (2)"),
], ids=["one-based", "sparse", "huge", "test-only-class"])
def test_labels_numbered_in_order_with_a_warning(tmp_path, monkeypatch, capsys, caplog, labels_tr, labels_te,
                                                 classes, values, warning):
    raw = _views(tmp_path / "raw", labels_tr=labels_tr, labels_te=labels_te)
    code, out, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--root", str(raw), "--data-dir",
                              str(tmp_path / "data"))
    assert code == 0 and "Traceback" not in err, err
    assert warning in caplog.text  # logged as a warning (on stderr outside pytest)
    meta = json.loads((tmp_path / "data/csv_views/meta.json").read_text())
    assert meta["classes"] == classes and meta["info"].get("label_values") == values
    stored = np.concatenate([np.load(tmp_path / f"data/csv_views/{s}/labels.npy") for s in ("train", "val", "test")])
    assert stored.min() == 0 and stored.max() == len(classes) - 1  # numbered 0..K-1, whatever the values


def test_nonfinite_values_replaced_only_when_asked(tmp_path, monkeypatch, capsys):
    raw = _views(tmp_path / "raw")
    rows = (raw / "a_tr.csv").read_text().splitlines()
    rows[2] = "nan,inf,1e300," + rows[2].split(",", 3)[3]
    (raw / "a_tr.csv").write_text("\n".join(rows) + "\n")
    code, _, err = run_main(monkeypatch, capsys, "prepare", "csv_views", "--root", str(raw), "--data-dir",
                            str(tmp_path / "data"), "-o", "on_nonfinite=mean", "-o", "standardize=false")
    assert code == 0, err
    meta = json.loads((tmp_path / "data/csv_views/meta.json").read_text())
    assert meta["info"]["nonfinite"]["replaced"] == 3
    train = np.loadtxt(raw / "a_tr.csv", delimiter=",")
    finite = np.delete(train, 2, axis=0)[:, :3].mean(0)  # the columns' means over the other training rows
    stored = np.concatenate([np.load(tmp_path / f"data/csv_views/{s}/a.npy") for s in ("train", "val")])
    assert np.isfinite(stored).all()
    for col in range(3):
        assert np.isclose(stored[:, col], finite[col], rtol=1e-6).any()


def test_prepared_folder_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = prepare("synthetic", data_dir=tmp_path, name="shared", options=TINY)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755  # not mkdtemp's 0700: colleagues can read it


def test_prepare_replaces_only_its_own_folder(ws):
    path = prepare("synthetic", data_dir=ws / "data", name="tiny", options=TINY, force=True)
    assert (path / ".mmbench").read_text().strip() == "prepared dataset"
    assert sorted(p.name for p in (ws / "data").iterdir()) == ["tiny"]  # nothing left beside it


# -- records that can be trusted -------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["summary", "config", "metrics", "summary-garbage"])
def test_report_leaves_out_an_altered_run_and_names_it(ws, monkeypatch, capsys, edit):
    other = _train(ws / "data", ws / "results", seed=1)
    run = _run_dir(ws) if _run_dir(ws) != other.path else sorted((ws / "results/runs").iterdir())[1]
    if edit == "summary":
        _edit_json(run / "summary.json", lambda d: d["test"].update(acc=0.99))
    elif edit == "config":
        _edit_yaml(run / "config.yaml", lambda d: d["optim"].update(lr=0.5))
    elif edit == "metrics":
        (run / "metrics.csv").write_text((run / "metrics.csv").read_text().replace("0.", "0.9", 1))
    else:
        (run / "summary.json").write_text("{not json")
    assert status_counts(ws / "results")["altered"] == 1
    code, out, err = run_main(monkeypatch, capsys, "report", str(ws / "results"), "--no-plots", "--format", "csv")
    assert code == 0, err
    text = " ".join(err.split())
    assert f"left out run {run.name}" in text and "1 run is not in the tables: 1 altered" in text
    board = pd.read_csv(ws / "results" / "runs.csv")
    assert set(board["run_id"]) == {other.run_id}


@pytest.mark.parametrize("edit", [lambda d: d.update(optim=[1, 2]), lambda d: d.update(data=5),
                                  lambda d: d["model"].update(encoders=[1]), lambda d: d.clear()],
                         ids=["list", "scalar", "field-type", "empty"])
def test_structurally_damaged_config_is_one_error_naming_the_run(ws, edit):
    run = RunFolder(_run_dir(ws))
    _edit_yaml(run.path / "config.yaml", edit)
    with pytest.raises(MMBenchError, match=f"run {run.run_id}: config.yaml is damaged"):
        run.read_config()


@pytest.mark.parametrize("garbage", ["status.json", "gap.npz"])
def test_garbage_side_files_do_not_stop_a_report(ws, monkeypatch, capsys, garbage):
    run = _run_dir(ws)
    (run / garbage).write_bytes(b"[1, 2" if garbage == "status.json" else b"PK\x03\x04 garbage")
    code, out, err = run_main(monkeypatch, capsys, "report", str(ws / "results"), "--format", "csv")
    assert code == 0 and "Traceback" not in err + out, err
    assert set(pd.read_csv(ws / "results" / "runs.csv")["run_id"]) == {run.name}


# -- stale results: a run belongs to the data it was trained on ------------------------------------------


def test_data_prepared_again_is_never_taken_for_the_old_run(ws, monkeypatch, capsys):
    old = _run_id(ws)
    _reprepare(ws)
    code, out, err = run_main(monkeypatch, capsys, *TRAIN, "--data-dir", str(ws / "data"),
                              "--results-dir", str(ws / "results"))
    assert code == 0, err
    assert out.startswith("trained ") and old not in out  # a new run, not "complete, skipped"
    assert len(list((ws / "results/runs").iterdir())) == 2


# -- interruptions -----------------------------------------------------------------------------------


def test_interrupted_forced_retrain_keeps_the_complete_run(ws, monkeypatch, capsys):
    from mmbench import training

    run = _run_dir(ws)
    before = _snapshot(run)
    calls = []

    def interrupted(self, train, steps, *progress):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_train_epoch", interrupted)
    code, _, err = run_main(monkeypatch, capsys, *TRAIN, "--force", "--data-dir", str(ws / "data"),
                            "--results-dir", str(ws / "results"))
    assert calls and code == 130
    assert {k: v for k, v in _snapshot(run).items() if not k.startswith(".next")} == before
    assert [f.run_id for f in run_folders(ws / "results")] == [run.name]
    assert RunFolder(run).status == "complete"
    monkeypatch.undo()
    # the next forced retrain completes: new record swapped in, old attack rows (of the old model) gone
    code, out, err = run_main(monkeypatch, capsys, *TRAIN, "--force", "--data-dir", str(ws / "data"),
                              "--results-dir", str(ws / "results"))
    assert code == 0, err
    assert not (run / ".next").exists() and not (run / "attack.csv").exists()
    assert RunFolder(run).status == "complete"
    assert (run / "summary.json").read_bytes() != before["summary.json"][2]


def test_a_commit_cut_short_is_finished_by_the_next_user(ws):
    """Killed while swapping the new files in: the next lock of the run finishes the swap."""
    run = RunFolder(_run_dir(ws))
    nxt = run.next()
    for name in ("config.yaml", "env.json", "metrics.csv", "model.pt", "gap.npz", "summary.json"):
        shutil.copy(run.path / name, nxt.path / name)
    (nxt.path / "metrics.csv").write_text("epoch\n0\n")
    summary = json.loads((nxt.path / "summary.json").read_text())
    summary.pop("digest")
    summary["sha256"]["metrics.csv"] = file_sha256(nxt.path / "metrics.csv")
    nxt.write_summary(summary)
    os.replace(nxt.path / "metrics.csv", run.path / "metrics.csv")  # the swap was killed after one file
    assert run.status == "altered"
    with run.lock(timeout=0):
        pass
    assert run.status == "complete" and not (run.path / ".next").exists()
    assert (run.path / "metrics.csv").read_text() == "epoch\n0\n" and not (run.path / "attack.csv").exists()


def test_sigterm_during_prepare_leaves_nothing_the_next_prepare_does_not_clean(tmp_path):
    data = tmp_path / "data"
    prepare("synthetic", data_dir=data, name="big", options=TINY)
    script = (
        "import time, numpy as np\n"
        "from mmbench.data.store import prepare\n"
        "save = np.save\n"
        "def slow(*a, **k):\n"
        "    save(*a, **k); time.sleep(30)\n"
        "np.save = slow\n"
        f"prepare('synthetic', data_dir={str(data)!r}, name='big', options={TINY!r}, force=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not list(data.glob(".big.*/train/*.npy")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        proc.kill()
    assert list(data.glob(".big.*"))  # SIGTERM ended it before it could clean up
    prepare("synthetic", data_dir=data, name="big", options=TINY, force=True)
    assert sorted(p.name for p in data.iterdir()) == ["big"]


# -- concurrency ---------------------------------------------------------------------------------------


def _attack_rows(path: str, attack: str, n: int) -> None:
    folder = RunFolder(Path(path))
    for level in range(n):
        folder.write_attack_rows([{"run_id": folder.run_id, "attack": attack, "level": level, "acc": 0.5}],
                                 ["run_id", "attack", "level"])


def test_attacks_at_once_on_one_run_keep_every_row(ws):
    run = _run_dir(ws)
    (run / "attack.csv").unlink()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_attack_rows, args=(str(run), attack, 25)) for attack in ("gaussian", "blank")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = pd.read_csv(run / "attack.csv")
    assert len(rows) == 50 and set(rows["attack"]) == {"gaussian", "blank"}


def test_a_config_written_before_the_newer_keys_reads_back_with_its_run_id(ws):
    """Runs trained before deterministic, optim.amp, data.load, model.pretrained and model.freeze existed."""
    run = RunFolder(_run_dir(ws))
    before = run.read_config().run_id()

    def strip(d):
        d.pop("deterministic")
        d["optim"].pop("amp")
        d["data"].pop("load")
        d["model"].pop("pretrained")
        d["model"].pop("freeze")

    _edit_yaml(run.path / "config.yaml", strip)
    assert run.read_config().run_id() == before
