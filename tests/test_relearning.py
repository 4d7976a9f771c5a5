"""Diagnosing & Re-learning: purity-gap diagnosis, soft re-init toward the initial weights, its schedule."""

from __future__ import annotations

import ast
import types

import numpy as np
import pytest
import torch

from mmbench.errors import MMBenchError
from mmbench.methods.base import TrainState
from mmbench.methods.relearning import cluster_purity, purity, reinit_strength
from mmbench.run import train_run
from mmbench.testing import assert_same_run
from tests.conftest import tiny_method
from tests.test_resume import FAST, Stop, stop_after


def test_purity_counts_each_clusters_majority_class():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    clusters = np.array([5, 5, 5, 7, 7, 7, 9, 9])  # majorities 0 (2 of 3), 1 (2 of 3), 2 (2 of 2)
    assert purity(labels, clusters) == pytest.approx(6 / 8)
    assert purity(labels, labels) == 1.0


def _split(train, perm_rows: dict[str, torch.Tensor]):
    """``train`` with the rows of the named modalities permuted (features no longer match the labels)."""
    return train.with_inputs({m: x[perm_rows[m]] if m in perm_rows else x for m, x in train.inputs.items()})


def test_better_learnt_modality_is_moved_back_toward_init_more(data_dir):
    method, model, _, train = tiny_method("relearning", data_dir, reinit_epoch=2, reinit_num=2)
    vector, image = train.modalities
    train = train.index(slice(0, 120))
    state = TrainState(model=model, train=train, batch_size=64)
    method.on_epoch_start(state)  # snapshot of the initial weights
    with torch.no_grad():  # "training": every encoder weight moves away from its initial value
        for p in model.encoders.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    # the vector modality separates its training data but not unseen data (val: its rows shuffled);
    # the image modality clusters val exactly as train (val = train): no gap
    state.val = _split(train, {vector: torch.randperm(len(train), generator=torch.Generator().manual_seed(0))})

    def distance(m):
        return torch.cat([(p - method.init_weights[f"{m}.{n}"]).flatten()
                          for n, p in model.encoders[m].named_parameters()]).norm().item()

    before = {m: distance(m) for m in (vector, image)}
    for epoch in (0, 1, 2):  # no re-init before epoch 2 has been trained (release: at the start of epoch 3)
        state.epoch = epoch
        method.on_epoch_start(state)
        method.on_epoch_end(state)
        assert {m: distance(m) for m in (vector, image)} == before
    state.epoch = 3
    method.on_epoch_start(state)
    logs = state.epoch_logs
    a_vec, a_img = logs[f"strength_{vector}"], logs[f"strength_{image}"]
    print(f"purity {vector} {logs[f'purity_train_{vector}']:.3f}/{logs[f'purity_val_{vector}']:.3f}, "
          f"strength {a_vec:.3f}; {image} strength {a_img:.3f}")
    assert logs[f"purity_train_{vector}"] > logs[f"purity_val_{vector}"] + 0.1
    assert a_vec > 0.3 and a_img == 0.0
    assert distance(vector) == pytest.approx((1 - a_vec) * before[vector], rel=1e-5)
    assert distance(image) == pytest.approx(before[image], rel=1e-6)


def test_schedule_follows_reinit_epoch_and_reinit_num(data_dir, monkeypatch):
    def calls(**params):
        method, model, _, _ = tiny_method("relearning", data_dir, **params)
        seen = []
        monkeypatch.setattr(method, "relearn", lambda state: seen.append(state.epoch))
        state = TrainState(model=model)
        for epoch in range(12):
            state.epoch = epoch
            method.on_epoch_start(state)
            method.on_epoch_end(state)
        return seen

    # release: after epochs 3, 6 (not 0, at most twice), applied when the next epoch starts
    assert calls(reinit_epoch=3, reinit_num=2) == [4, 7]
    assert calls(reinit_epoch=3, reinit_num=2, variant="balancemm") == [3, 6]  # before that epoch's validation
    assert calls(reinit_epoch=3, reinit_num=0) == []


def test_training_logs_the_diagnosis_and_resumes_identically(make_cfg, tmp_path):
    sets = [*FAST, "method.reinit_epoch=1", "method.reinit_num=2", "method.n_init=1"]
    full, _ = train_run(make_cfg("relearning", epochs=4, sets=sets))
    metrics = full.read_metrics()
    assert metrics["strength_vector"].notna().tolist() == [False, False, True, True]
    assert metrics[["strength_vector", "strength_image"]].iloc[2:].stack().between(0, 1).all()
    cfg = make_cfg("relearning", epochs=4, sets=sets)
    cfg.output.results_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(1))
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)


@pytest.mark.parametrize("bad", ["method.variant=paper", "method.reinit_epoch=0", "method.move_lambda=-1",
                                 "method.n_init=0"])
def test_bad_options_are_user_errors(make_cfg, bad):
    with pytest.raises(MMBenchError):
        train_run(make_cfg("relearning", sets=[bad]))


def _features(seed: int, n: int = 150, classes: int = 3, spread: float = 1.0):
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    return g.normal(size=(classes, 6))[labels] * 3 + g.normal(scale=spread, size=(n, 6)), labels


def _diagnosis(n_init, train, val, move_lambda):
    """mmbench's strengths for the (audio, visual) features of ``train`` and ``val``."""
    return [reinit_strength(cluster_purity(tr[0], tr[1], 3, n_init), cluster_purity(va[0], va[1], 3, n_init), move_lambda)
            for tr, va in zip(train, val)]


def test_strength_equals_the_official_reinit_score():
    """``reinit_score`` of the release (``code/ours.py``) and of BalanceBenchmark (``ReLearning_trainer.py``),
    executed from the checkouts on identical float64 features."""
    from functools import partial

    from sklearn import preprocessing
    from sklearn.cluster import KMeans
    from sklearn.metrics import accuracy_score

    from tests.reference import reference_dir

    def functions(path, names, **scope):
        nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef) and n.name in names]
        scope.update(np=np, torch=torch, preprocessing=preprocessing, accuracy_score=accuracy_score,
                     print=lambda *a, **k: None)
        exec(compile(ast.Module(nodes, []), str(path), "exec"), scope)
        return scope

    # the release's scikit-learn is not pinned: run it with n_init=10 (the default before 1.4), as mmbench does
    release = functions(reference_dir("Diagnosing_Relearning_ECCV2024") / "code/ours.py",
                        {"purity_score", "reinit_score"}, KMeans=partial(KMeans, n_init=10))
    balancemm = functions(reference_dir("BalanceBenchmark") / "balancemm/trainer/ReLearning_trainer.py",
                          {"purity_score", "reinit_score"}, KMeans=KMeans)  # today's default "auto": 1 restart
    for seed in range(4):
        train = [_features(seed), _features(seed + 10, spread=2.5)]
        val = [_features(seed + 20, spread=3.0), _features(seed + 30, spread=2.0)]
        args = types.SimpleNamespace(n_classes=3, move_lambda=3.0)
        theirs = release["reinit_score"](args, train[0][0], train[1][0], train[0][1].copy(),
                                         val[0][0], val[1][0], val[0][1].copy())
        ours = _diagnosis(10, train, val, 3.0)
        assert ours == pytest.approx([float(t) for t in theirs], abs=1e-12)
        model = types.SimpleNamespace(modalitys=["audio", "visual"], n_classes=3)
        feats = [{"audio": torch.from_numpy(s[0][0]), "visual": torch.from_numpy(s[1][0]),
                  "label": torch.from_numpy(s[0][1].copy())} for s in (train, val)]
        theirs = balancemm["reinit_score"](types.SimpleNamespace(move_lambda=3.0), model, *feats)
        assert _diagnosis(1, train, val, 3.0) == pytest.approx([float(theirs[m]) for m in ("audio", "visual")], abs=1e-12)
