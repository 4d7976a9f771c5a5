from __future__ import annotations

import math

import pytest
import torch

from mmbench.config import ModelConfig, OptimConfig, resolve
from mmbench.data.store import load_split
from mmbench.errors import TrainingDiverged
from mmbench.evaluation import evaluate, predict
from mmbench.methods.base import Method
from mmbench.methods.joint import Joint
from mmbench.models.multimodal import ModelSpec, build_model
from mmbench.run import train_run
from mmbench.training import Trainer, build_optimizer, build_scheduler


def test_different_seeds_give_different_runs(make_cfg):
    a, _ = train_run(make_cfg("joint", seed=0))
    b, _ = train_run(make_cfg("joint", seed=1))
    assert a.run_id != b.run_id
    assert (a.path / "metrics.csv").read_bytes() != (b.path / "metrics.csv").read_bytes()


def test_checkpoint_is_chosen_on_validation_and_test_is_not_logged(make_cfg):
    folder, _ = train_run(make_cfg("joint", epochs=5))
    metrics = folder.read_metrics()
    summary = folder.read_summary()
    assert summary["best_epoch"] == int(metrics["val_acc"].idxmax())  # first epoch with the best val acc
    assert summary["val_acc"] == pytest.approx(metrics["val_acc"].max())
    assert not any(c.startswith("test") for c in metrics.columns)
    for col in ("train_acc", "train_acc_vector", "train_acc_image", "val_acc_vector", "val_acc_image", "lr"):
        assert col in metrics.columns


def test_complete_runs_are_skipped_and_forced_runs_retrained(make_cfg):
    cfg = make_cfg("joint")
    folder, trained = train_run(cfg)
    assert trained
    before = (folder.path / "summary.json").stat().st_mtime_ns
    _, trained = train_run(cfg)
    assert not trained and (folder.path / "summary.json").stat().st_mtime_ns == before
    _, trained = train_run(cfg, force=True)
    assert trained


def test_run_folder_contents(make_cfg):
    folder, _ = train_run(make_cfg("joint"))
    names = {p.name for p in folder.path.iterdir()}
    assert {"config.yaml", "env.json", "metrics.csv", "summary.json", "model.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    cfg = folder.read_config()
    assert cfg.run_id() == folder.run_id
    summary = folder.read_summary()
    for key in ("acc", "f1", "acc_vector", "acc_image", "acc_masked_vector", "acc_masked_image"):
        assert 0 <= summary["test"][key] <= 1


def test_evaluation_sees_every_sample_whatever_the_batch_size(data_dir):
    data = load_split("tiny", "test", data_dir)
    model = build_model(ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=8, feature_dim=4)))
    for batch_size in (7, len(data), len(data) + 5):
        logits, unimodal = predict(model, Joint(), data, batch_size)
        assert len(logits) == len(data) and all(len(z) == len(data) for z in unimodal.values())
    full = evaluate(model, Joint(), data, 7)
    assert full["acc"] == pytest.approx((predict(model, Joint(), data, 1000)[0].argmax(1) == data.labels).float().mean().item())


class _NaNLoss(Method):
    def loss(self, model, batch, out, state):
        return out.logits.sum() * float("nan"), {}


def test_divergence_is_reported_with_its_epoch(data_dir):
    train = load_split("tiny", "train", data_dir)
    model = build_model(ModelSpec(train.meta.modalities, train.meta.num_classes, ModelConfig(hidden_dim=8, feature_dim=4)))
    trainer = Trainer(_NaNLoss(), model, OptimConfig(epochs=2), torch.device("cpu"))
    with pytest.raises(TrainingDiverged, match="epoch 0, step 0"):
        trainer.fit(train, load_split("tiny", "val", data_dir))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine"])
def test_optimizers_and_schedules(optimizer, schedule):
    cfg = OptimConfig(optimizer=optimizer, schedule=schedule, lr=0.1, epochs=4, step_size=2, gamma=0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    expected = {"none": [0.1] * 4, "step": [0.1, 0.1, 0.05, 0.05],
                "cosine": [0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]}[schedule]
    assert lrs == pytest.approx(expected)


def test_grad_clip_bounds_the_update(make_cfg):
    folder, _ = train_run(make_cfg("joint", sets=["optim.grad_clip=0.001", "optim.lr=1.0", "optim.momentum=0"]))
    assert folder.read_metrics()["train_loss"].notna().all()


def test_synthetic_defaults_reproduce_modality_imbalance(tmp_path):
    """After joint training the weak modality's head is clearly worse than the same encoder trained alone."""
    flags = {"data.dataset": "synthetic", "output.data_dir": str(tmp_path / "data"),
             "output.results_dir": str(tmp_path / "results"), "optim.epochs": 15}
    joint, _ = train_run(resolve(flags={**flags, "method.name": "joint"}))
    alone, _ = train_run(resolve(flags={**flags, "method.name": "unimodal"}, sets=["method.modality=image"]))
    weak_in_joint = joint.read_summary()["test"]["acc_image"]
    weak_alone = alone.read_summary()["test"]["acc"]
    chance = 1 / 6
    assert weak_alone > chance + 0.2, "the weak modality must be learnable on its own"
    assert weak_alone - weak_in_joint > 0.15
