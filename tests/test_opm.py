"""OPM mechanism: the dominant modality's features are dropped per sample with probability
q = q_base (1 + lam tanh(rho - 1)), the weak one's never, the rest rescaled by 1 / (1 - theta)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.base import TrainState, build_method
from mmbench.methods.opm import draw_keep, drop_features, drop_probabilities
from mmbench.models.multimodal import ModelSpec
from mmbench.run import train_run
from mmbench.testing import assert_same_run
from tests.test_resume import FAST, Stop, stop_after


def test_drop_probability_follows_the_release_formula():
    q = drop_probabilities({"audio": torch.tensor(30.0), "visual": torch.tensor(10.0)}, q_base=0.5, lam=0.5)
    assert q["audio"] == pytest.approx(0.5 * (1 + 0.5 * math.tanh(2.0))) and q["visual"] == 0.0
    # equal scores: nobody is dropped; large lam: clipped at 1
    assert drop_probabilities({"a": torch.tensor(5.0), "b": torch.tensor(5.0)}, 0.5, 0.5) == {"a": 0.0, "b": 0.0}
    assert drop_probabilities({"a": torch.tensor(50.0), "b": torch.tensor(1.0)}, 0.5, 10.0)["a"] == 1.0
    # three modalities: over the others' mean (default) or their sum (BalanceMM)
    s = {"a": torch.tensor(6.0), "b": torch.tensor(2.0), "c": torch.tensor(4.0)}
    assert drop_probabilities(s, 0.4, 1.0)["a"] == pytest.approx(0.4 * (1 + math.tanh(6 / 3 - 1)))
    assert drop_probabilities(s, 0.4, 1.0, ratio="sum")["a"] == 0.0  # 6 / (2 + 4) = 1


def test_dominant_features_are_dropped_at_rate_q_and_the_rest_rescaled():
    gen = torch.Generator().manual_seed(0)
    q = {"audio": 0.6, "visual": 0.0}
    keep = draw_keep(q, 20000, gen)
    assert keep[:, 0].float().mean().item() == pytest.approx(0.4, abs=0.015)
    assert keep[:, 1].all()
    feats = {"audio": torch.randn(20000, 8), "visual": torch.randn(20000, 4)}
    cleaned = drop_features(feats, q, keep)
    theta = (8 * 0.6 + 4 * 0.0) / 12
    torch.testing.assert_close(cleaned["visual"], feats["visual"] / (1 - theta))
    torch.testing.assert_close(cleaned["audio"][keep[:, 0]], feats["audio"][keep[:, 0]] / (1 - theta))
    assert (cleaned["audio"][~keep[:, 0]] == 0).all()


def _model(data_dir, **params):
    torch.manual_seed(0)
    batch = load_split("tiny", "train", data_dir).index(slice(0, 64))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=32, feature_dim=16))
    method = build_method(MethodConfig("opm", params))
    model = method.build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):  # make "vector" dominant
        opt.zero_grad()
        F.cross_entropy(model(batch).unimodal_logits["vector"], batch.labels).backward()
        opt.step()
    return batch, method, model


def test_forward_drops_the_dominant_modality_and_the_loss_sees_the_cleaned_prediction(data_dir):
    batch, method, model = _model(data_dir, p_exe=1.0, modulation_starts=0)
    plain = model(batch)
    s = {m: F.softmax(z.detach(), 1)[torch.arange(len(batch)), batch.labels].sum().item()
         for m, z in plain.unimodal_logits.items()}
    q = 0.5 * (1 + 0.5 * math.tanh(s["vector"] / s["image"] - 1))
    gen = torch.Generator().manual_seed(3)
    out = method.forward(model, batch, TrainState(epoch=0, generator=gen))
    loss, logs = method.loss(model, batch, out, TrainState())
    assert logs["q_vector"] == pytest.approx(q, rel=1e-5) and logs["q_image"] == 0.0 and logs["dropped"] == 1.0
    # the same draws, replayed: the fused logits are the head applied to the cleaned features
    gen.manual_seed(3)
    torch.rand((), generator=gen)
    keep = draw_keep({"vector": q, "image": 0.0}, len(batch), gen)
    assert 0 < (~keep[:, 0]).sum() < len(batch) and keep[:, 1].all()
    theta = q / 2  # equal feature dimensions
    expected, _ = model.fuse({"vector": plain.features["vector"] * keep[:, :1] / (1 - theta),
                              "image": plain.features["image"] / (1 - theta)})
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(loss, F.cross_entropy(expected, batch.labels))
    # unimodal predictions (scores, accuracy) stay those of the undropped features
    torch.testing.assert_close(out.unimodal_logits["vector"], plain.unimodal_logits["vector"])


def test_no_drop_before_the_warm_up_ends_or_at_evaluation(data_dir):
    batch, method, model = _model(data_dir, p_exe=1.0)  # default: from epoch 6
    plain = model(batch)
    torch.testing.assert_close(method.forward(model, batch, TrainState(epoch=5)).logits, plain.logits)
    assert not torch.equal(method.forward(model, batch, TrainState(epoch=6)).logits, plain.logits)
    torch.testing.assert_close(method.predict(model, batch).logits, plain.logits)


def test_drop_is_executed_on_a_share_p_exe_of_batches(data_dir):
    batch, method, model = _model(data_dir, p_exe=0.3, modulation_starts=0)
    state = TrainState(epoch=0, generator=torch.Generator().manual_seed(0))
    runs = [method.forward(model, batch, state).extras["dropped"].item() for _ in range(400)]
    assert sum(runs) / len(runs) == pytest.approx(0.3, abs=0.07)


def test_training_with_drop_resumes_identically(make_cfg, tmp_path):
    sets = FAST + ["method.modulation_starts=0", "method.p_exe=1.0"]
    full, _ = train_run(make_cfg("opm", epochs=2, sets=sets))
    assert full.read_metrics()["dropped"].tolist() == [1.0, 1.0]
    cfg = make_cfg("opm", epochs=2, sets=sets)
    cfg.output.results_dir = str(tmp_path / "resumed")
    with pytest.raises(Stop):
        train_run(cfg, progress=stop_after(0))
    resumed, _ = train_run(cfg, resume=True)
    assert_same_run(full, resumed)
