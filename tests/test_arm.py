"""ARM mechanism: histogram estimators, pcmi-ratio re-weighting, label-free evaluation, re-sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbench.config import MethodConfig, ModelConfig
from mmbench.data.store import load_split
from mmbench.methods.arm import (
    contribution_weights,
    joint_histogram,
    ncmi,
    ncmi_from_joint,
    nmi,
    resample_occurrences,
    sample_con,
)
from mmbench.methods.base import TrainState, build_method
from mmbench.models.multimodal import ModelSpec
from mmbench.run import train_run

# -- estimators ----------------------------------------------------------------------------


def _np_entropy(p):
    p = p[p > 0]
    return -(p * np.log(p)).sum()


def test_histogram_is_numpys_histogramdd():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(3, 4, 500))
    x[3] = 7.0  # a constant row: numpy widens its range by +-0.5
    got = joint_histogram(*(torch.from_numpy(v) for v in (x, y, z)), bins=3).numpy()
    for r in range(4):
        counts = np.histogramdd(np.stack([x[r], y[r], z[r]], 1), bins=3)[0]
        np.testing.assert_array_equal(got[r], counts / counts.sum())


def test_nmi_is_one_for_identical_and_near_zero_for_independent_vectors():
    rng = np.random.default_rng(1)
    x, y = torch.from_numpy(rng.normal(size=(2, 20_000)))
    assert nmi(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert nmi(x, -3 * x + 1).item() == pytest.approx(1.0, abs=1e-12)  # any monotone bijection on equal bins
    assert 0 <= nmi(x, y).item() < 0.01
    # correlated data: 2 I / (H_x + H_y) computed here from numpy's histogram2d
    c = 0.7 * x + 0.3 * y
    p = np.histogram2d(x.numpy(), c.numpy(), bins=30)[0]
    p /= p.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * np.log(p[nz] / np.outer(px, py)[nz])).sum()
    assert nmi(x, c, bins=30).item() == pytest.approx(2 * mi / (_np_entropy(px) + _np_entropy(py)), rel=1e-10)


def _hand_table(empty_z_bin: bool = False):
    """A hand-made 2x2x2 joint table P[x, y, z]; optionally with z-bin 1 empty."""
    p = np.array([[[0.20, 0.05], [0.10, 0.15]],
                  [[0.05, 0.00], [0.30, 0.15]]])
    if empty_z_bin:
        p[:, :, 1] = 0
    return p / p.sum()


def test_plugin_ncmi_is_the_conditional_entropy_formula():
    p = _hand_table()
    pz = p.sum((0, 1))

    def cond_entropy(table):  # H(A|Z) = -sum p(a, z) log p(a | z), z the last axis
        joint = table.reshape(-1, table.shape[-1])
        cond = joint / pz
        nz = joint > 0
        return -(joint[nz] * np.log(cond[nz])).sum()

    hx, hy, hxy = cond_entropy(p.sum(1)), cond_entropy(p.sum(0)), cond_entropy(p)
    expected = (hx + hy - hxy) / (hx + hy)
    assert ncmi_from_joint(torch.from_numpy(p)[None]).item() == pytest.approx(expected, rel=1e-12)

    # on samples: X = Y gives CMI = H(X|Z) so NCMI = 1/2; X, Y independent given Z gives ~0
    rng = np.random.default_rng(2)
    z = torch.from_numpy(rng.normal(size=20_000))
    x = z + torch.from_numpy(rng.normal(size=20_000))
    y = z + torch.from_numpy(rng.normal(size=20_000))
    assert ncmi(x, x, z, bins=4).item() == pytest.approx(0.5, abs=1e-12)
    assert abs(ncmi(x, y, z, bins=4).item()) < 0.01
    assert ncmi(x, y, torch.zeros_like(z), bins=4).item() > 0.03  # unconditioned, they share z


def _released_by_hand(p):
    """methods.md section 3.2: p_z floored at 1e-10; the 3-D joint divided along x,
    q[i, j, k] = P[i, j, k] / p_z[i]; the 2-D marginals broadcast, q[m, i, k] = P_xz[i, k] / p_z[m]."""
    b = p.shape[0]
    pz = p.sum((0, 1))
    pz = np.where(pz > 0, pz, 1e-10)

    def h(q):
        q = q[q > 0]
        return -(q * np.log(q)).sum()

    q3 = np.array([[[p[i, j, k] / pz[i] for k in range(b)] for j in range(b)] for i in range(b)])
    pxz, pyz = p.sum(1), p.sum(0)
    qx = np.array([[[pxz[i, k] / pz[m] for k in range(b)] for i in range(b)] for m in range(b)])
    qy = np.array([[[pyz[j, k] / pz[m] for k in range(b)] for j in range(b)] for m in range(b)])
    den = h(qx) + h(qy)
    return (den - h(q3)) / den if den != 0 else 0.0


@pytest.mark.parametrize("empty_z_bin", [False, True])
def test_released_estimator_reproduces_the_axis_bug(empty_z_bin):
    p = _hand_table(empty_z_bin)
    got = ncmi_from_joint(torch.from_numpy(p)[None], "released").item()
    assert got == pytest.approx(_released_by_hand(p), rel=1e-12)
    assert got != pytest.approx(ncmi_from_joint(torch.from_numpy(p)[None], "plugin").item(), rel=1e-3)


def test_degenerate_inputs_give_zero():
    flat = np.zeros((2, 2, 2))
    flat[0, 0, :] = 0.5  # every conditional entropy is 0, in both rules
    for est in ("plugin", "released"):  # zero denominator -> 0, as the release
        assert ncmi_from_joint(torch.from_numpy(flat)[None], est).item() == 0.0
    assert nmi(torch.ones(10), torch.ones(10)).item() == 0.0  # the release divides 0 by 0 here


# -- the batch rule and the fusion ---------------------------------------------------------


def _setup(data_dir, **params):
    torch.manual_seed(0)
    data = load_split("tiny", "train", data_dir)
    spec = ModelSpec(data.meta.modalities, data.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    method = build_method(MethodConfig("arm", params))
    return method, method.build_model(spec), data


def test_weights_are_the_inverse_pcmi_ratio():
    w, clipped = contribution_weights({"a": 0.3, "b": 0.1})
    assert w == {"a": pytest.approx(1 / 3), "b": pytest.approx(3.0)} and not clipped
    w, clipped = contribution_weights({"a": -0.2, "b": -0.1})  # both negative: the release's ratio
    assert w == {"a": pytest.approx(0.5), "b": pytest.approx(2.0)} and not clipped
    w, clipped = contribution_weights({"a": 0.2, "b": -0.1}, floor=1e-6, max_weight=50)  # opposite signs
    assert w["b"] == 50 and w["a"] == pytest.approx(1 / 50) and clipped
    w, clipped = contribution_weights({"a": 0.0, "b": 0.0})
    assert w == {"a": 1.0, "b": 1.0} and clipped


def test_fused_features_are_scaled_by_the_pcmi_ratio(data_dir):
    method, model, data = _setup(data_dir)
    batch = data.index(slice(0, 48))
    batch.ids = torch.arange(48)
    seen = {}

    def capture(module, inputs, output):
        seen["x"] = inputs[0].detach()

    model.fusion.fc_out2.register_forward_hook(capture)
    out = method.forward(model, batch, TrainState())
    loss, logs = method.loss(model, batch, out, TrainState())
    a, b = model.fusion.modalities
    f = {m: out.features[m].detach() for m in (a, b)}
    # the logged quantities, recomputed independently from the flattened features
    fc = model.fusion.fc_c(torch.cat([f[a], f[b]], 1)).detach()
    for m, o in ((a, b), (b, a)):
        assert logs[f"nmi_{m}"] == pytest.approx(nmi(f[m].flatten(), fc.flatten(), 30).item())
        assert logs[f"cnmi_{m}"] == pytest.approx(ncmi(f[m].flatten(), fc.flatten(), f[o].flatten(), 2).item())
        probs = torch.softmax(model.fusion.fc(f[m]), 1)[torch.arange(48), batch.labels].mean().item()
        assert logs[f"p_{m}"] == pytest.approx(probs, rel=1e-5)
        crossed = logs["p_c"] * logs[f"nmi_{m}"] + logs[f"p_{o}"] * (logs[f"nmi_{m}"] - logs[f"cnmi_{m}"])
        assert logs[f"pcmi_{m}"] == pytest.approx(crossed)
    ratio = logs[f"pcmi_{b}"] / logs[f"pcmi_{a}"]
    assert logs[f"w_{a}"] == pytest.approx(ratio) and logs[f"w_{b}"] == pytest.approx(1 / ratio)
    d = f[a].shape[1]
    torch.testing.assert_close(seen["x"][:, :d], ratio * f[a])  # scaled features = ratio x features
    torch.testing.assert_close(seen["x"][:, d:], f[b] / ratio)
    torch.testing.assert_close(out.logits, model.fusion.fc(model.fusion.fc_out2(seen["x"])))
    for m in (a, b):  # unimodal logits: the shared classifier on the raw features
        torch.testing.assert_close(out.unimodal_logits[m], model.fusion.fc(out.features[m]))
    assert loss.item() == pytest.approx(F.cross_entropy(out.logits, batch.labels).item())
    loss.backward()
    assert model.fusion.fc_c.weight.grad is None  # f_c is measured only, as in the release


def test_uncrossed_pairing_uses_each_modalitys_own_confidence(data_dir):
    method, model, data = _setup(data_dir, pairing="own")
    batch = data.index(slice(0, 32))
    _, logs = method.loss(model, batch, method.forward(model, batch, TrainState()), TrainState())
    for m in model.fusion.modalities:
        assert logs[f"pcmi_{m}"] == pytest.approx(logs["p_c"] * logs[f"nmi_{m}"] + logs[f"p_{m}"] * logs[f"ii_{m}"])


def _train_steps(method, model, data, steps=4, epoch=0):
    state = TrainState(model=model, train=data, epoch=epoch, batch_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method.on_epoch_start(state)
    weights = []
    for batch in list(data.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))[:steps]:
        out = method.forward(model, batch, state)
        loss, logs = method.loss(model, batch, out, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
        weights.append([logs[f"w_{m}"] for m in model.fusion.modalities])
    method.on_epoch_end(state)
    return state, torch.tensor(weights, dtype=torch.float64)


def test_evaluation_is_label_free_and_batch_independent(data_dir):
    method, model, data = _setup(data_dir)
    state, weights = _train_steps(method, model, data)
    mean = weights.mean(0)
    torch.testing.assert_close(model.fusion.eval_weights.double(), mean, rtol=1e-6, atol=0)
    assert [state.epoch_logs[f"eval_weight_{m}"] for m in model.fusion.modalities] == pytest.approx(mean.tolist())
    model.eval()
    test = load_split("tiny", "test", data_dir)
    with torch.no_grad():
        full = method.predict(model, test).logits
        shuffled = test.index(slice(None))
        shuffled.labels = torch.randint(0, 3, shuffled.labels.shape)  # different labels
        torch.testing.assert_close(method.predict(model, shuffled).logits, full, rtol=0, atol=0)
        parts = torch.cat([method.predict(model, test.index(slice(i, i + 7))).logits for i in range(0, len(test), 7)])
        torch.testing.assert_close(parts, full, rtol=1e-6, atol=1e-6)
    assert "fusion.eval_weights" in model.state_dict()  # saved with the checkpoint


@pytest.mark.parametrize("rule", ["ema", "ones"])
def test_other_test_time_rules(data_dir, rule):
    method, model, data = _setup(data_dir, eval_weights=rule, ema_momentum=0.5)
    _, weights = _train_steps(method, model, data, steps=3)
    expected = torch.ones(2, dtype=torch.float64)
    if rule == "ema":
        for w in weights:
            expected = 0.5 * expected + 0.5 * w
    torch.testing.assert_close(model.fusion.eval_weights.double(), expected, rtol=1e-5, atol=0)


# -- re-sampling ---------------------------------------------------------------------------


def test_resample_thresholds_and_copies():
    con = torch.tensor([0.2, 0.5, 0.6, 0.9, 0.95, math.nan, -1.0])
    # original + extra copies: con < 0.5 -> 3, 0.5 < con < 0.9 -> 2, otherwise (incl. the bounds, NaN) -> 1
    assert resample_occurrences(con).tolist() == [4, 2, 3, 2, 2, 2, 4]


def test_sample_contribution_crosses_the_interaction_terms():
    torch.manual_seed(3)
    z, za, zv = torch.randn(3, 5, 12)
    y = z.argmax(1)
    y[0] = (y[0] + 1) % 12  # one wrong fused prediction: v_all = 0
    con = sample_con(z, {"a": za, "v": zv}, y, 30, 10)

    def v(logits):
        p = torch.softmax(logits.double(), 1)
        return torch.where(p.argmax(1) == y, p.max(1).values, torch.zeros(5, dtype=torch.float64))

    nmi_a, nmi_v = nmi(za, z, 30), nmi(zv, z, 30)
    ii_a, ii_v = nmi_a - ncmi(z, za, zv, 10), nmi_v - ncmi(z, zv, za, 10)
    expected = (v(z) * nmi_a + v(za) * ii_v + v(z) * nmi_v + v(zv) * ii_a) / 2
    torch.testing.assert_close(con, expected)


def test_resampling_weights_the_loss_and_is_saved(data_dir, make_cfg):
    method, model, data = _setup(data_dir, resample=True, resample_warmup=1)
    state, _ = _train_steps(method, model, data, steps=2)
    occ = method.occurrences
    assert occ.shape == (len(data),) and set(occ.unique().tolist()) <= {2, 3, 4}
    assert "resample_mean_occurrences" in state.epoch_logs
    batch = next(data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(1)))
    out = method.forward(model, batch, state)
    loss, _ = method.loss(model, batch, out, state)
    ce = F.cross_entropy(out.logits, batch.labels, reduction="none")
    assert loss.item() == pytest.approx((occ[batch.ids] * ce).sum().item() / len(batch))

    sets = ["method.resample=true", "method.resample_warmup=1", "output.probe=false"]
    folder, _ = train_run(make_cfg("arm", sets=sets))
    metrics = folder.read_metrics()
    assert {"pcmi_vector", "w_image", "eval_weight_vector", "resample_mean_occurrences"} <= set(metrics.columns)
    assert metrics["resample_mean_occurrences"].between(2, 4).all()
    assert "arm_resample_occurrences" in np.load(folder.path / "artifacts.npz")
