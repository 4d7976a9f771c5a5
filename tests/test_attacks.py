"""Attacks (pure, seeded, level 0 = identity, dtype kept), their mechanisms, protocols, the runner and
robustness metrics. One run is trained per module and copied into each test's own results folder."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbench.attacks.adversarial import fgsm, pgd
from mmbench.attacks.base import AttackContext, token_id, uniform
from mmbench.attacks.multibench import multibench_audio
from mmbench.attacks.noise import (
    blur,
    dropout,
    gaussian,
    occlusion,
    salt_pepper,
    structured_dropout,
    white_noise,
)
from mmbench.attacks.protocols import (
    Step,
    load_protocol_file,
    protocol_from_dict,
    resolve_protocol,
)
from mmbench.attacks.runner import (
    Replay,
    apply_steps,
    attack_run,
    build_curves,
    corrupt,
    derived_generator,
    evaluate_corruption,
    run_curves,
)
from mmbench.attacks.text import token_blank, token_swap
from mmbench.config import resolve
from mmbench.data.store import load_split
from mmbench.data.types import DatasetMeta, ModalitySpec, MultimodalData
from mmbench.errors import MMBenchError
from mmbench.evaluation import evaluate, predict
from mmbench.registry import ATTACKS
from mmbench.report.robustness import effective_robustness, robustness_auc, worst_level
from mmbench.results import RunFolder
from mmbench.run import train_run
from mmbench.testing import fitted_model, sample_tensor, text_source

SPEC = ModalitySpec("vector", "vector", (50,), std=2.0)
IMG8 = ModalitySpec("rgb", "image", (3, 16, 16), dtype="uint8", mean=120.0, std=60.0)
TEXT = ModalitySpec("text", "text", (12,), dtype="int64")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- shared fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy machine two threads spin-wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One 2-epoch joint run on ``tiny`` (vector + image), trained once for the module."""
    flags = {"data.dataset": "tiny", "method.name": "joint", "optim.epochs": 2, "seed": 0,
             "output.data_dir": str(data_dir), "output.results_dir": str(tmp_path_factory.mktemp("atk") / "results")}
    cfg = resolve(flags=flags, sets=["model.hidden_dim=16", "model.feature_dim=8", "optim.batch_size=32"])
    folder, _ = train_run(cfg)
    return folder


@pytest.fixture
def run(trained, tmp_path) -> RunFolder:
    """A private copy of the trained run (its own attack.csv)."""
    dest = tmp_path / "results" / "runs" / trained.run_id
    shutil.copytree(trained.path, dest)
    (dest / "attack.csv").unlink(missing_ok=True)
    return RunFolder(dest)


@pytest.fixture(scope="module")
def fitted():
    """A tiny model trained in plain torch to high accuracy (for the gradient attacks), with its test split."""
    return fitted_model()


# -- Gaussian and friends ------------------------------------------------------------------


def test_gaussian_sigma_is_level_times_training_std():
    x = torch.zeros(400, 50)
    out = gaussian(x, 0.5, gen(0), SPEC)
    assert out.std().item() == pytest.approx(0.5 * 2.0, rel=0.05)
    assert torch.equal(gaussian(x, 0.0, gen(0), SPEC), x)


def test_gaussian_is_pure_and_seeded():
    x = torch.randn(10, 50)
    before = x.clone()
    a = gaussian(x, 1.0, gen(3), SPEC)
    b = gaussian(x, 1.0, gen(3), SPEC)
    c = gaussian(x, 1.0, gen(4), SPEC)
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)


def test_gaussian_pixel_unit_on_uint8_is_qmf_sigma_shared_across_channels():
    x = torch.full((200, 3, 16, 16), 128, dtype=torch.uint8)
    y = gaussian(x, 50.0, gen(0), IMG8, unit="pixel", channel_shared=True, clip="range")
    assert y.dtype == torch.uint8
    d = y.float() - 128
    assert d.std().item() == pytest.approx(50, rel=0.05)  # clipping at 0/255 is beyond 2.5 sigma
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    # float images in [0, 1]: the same sigma on the 0-255 scale
    xf = torch.full((200, 1, 16, 16), 0.5)
    yf = gaussian(xf, 50.0, gen(0), ModalitySpec("i", "image", (1, 16, 16)), unit="pixel")
    assert (yf - 0.5).std().item() == pytest.approx(50 / 255, rel=0.05)


def test_gaussian_faithful_fixed_pattern_and_uint8_wraparound_as_qmf():
    x = torch.full((4, 3, 8, 8), 128, dtype=torch.uint8)
    a = gaussian(x, 100.0, gen(0), IMG8, unit="pixel", channel_shared=True, fixed_pattern=True, clip="wrap")
    b = gaussian(x, 100.0, gen(9), IMG8, unit="pixel", channel_shared=True, fixed_pattern=True, clip="wrap")
    assert torch.equal(a, b), "the faithful pattern does not depend on the seed"
    assert all(torch.equal(a[0], a[i]) for i in range(4)), "every image gets the same map"
    np.random.seed(0)
    noise = np.random.normal(0, 100.0, (8, 8, 1))  # QMF's AddGaussianNoise
    img = noise + 128
    img[img > 255] = 255
    expected = torch.from_numpy(img.astype("uint8")[..., 0])  # negative values wrap around
    assert torch.equal(a[0, 0], expected)
    assert (noise[..., 0] + 128 < 0).any(), "the check needs some wrapped pixels"


def test_white_noise_is_one_draw_per_time_step_for_all_channels():
    x = torch.zeros(300, 3, 40)
    y = white_noise(x, 0.5, gen(0), ModalitySpec("s", "sequence", (3, 40), std=2.0))
    assert torch.equal(y[:, 0], y[:, 2])
    assert y.std().item() == pytest.approx(1.0, rel=0.05)


# -- image attacks ----------------------------------------------------------------------------


def test_salt_pepper_density_and_extremes():
    x = torch.full((100, 3, 20, 20), 100, dtype=torch.uint8)
    y = salt_pepper(x, 0.2, gen(0), IMG8)
    changed = (y != x).any(1)  # pixel locations, channels move together
    assert changed.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert set(y[changed.unsqueeze(1).expand_as(y)].unique().tolist()) == {0, 255}
    assert (y == 0).float().mean().item() == pytest.approx((y == 255).float().mean().item(), abs=0.01)


def test_salt_pepper_corrupted_share_is_density_times_fraction(data_dir):
    x = torch.full((2000, 1, 10, 10), 0.5)
    meta = DatasetMeta("d", "x", ("a", "b"), {"img": ModalitySpec("img", "image", (1, 10, 10))}, {"test": 2000})
    data = MultimodalData({"img": x}, torch.zeros(2000, dtype=torch.long), meta)
    noisy = corrupt(data, "salt_pepper", 0.3, ["img"], 0.4, gen(0), pixel_max=1.0)
    share = (noisy.inputs["img"] != x).float().mean().item()
    assert share == pytest.approx(0.3 * 0.4, abs=0.01)
    assert (noisy.inputs["img"] != x).flatten(1).any(1).float().mean().item() == pytest.approx(0.4, abs=0.03)


def test_blur_is_deterministic_and_stronger_with_sigma():
    x, spec = sample_tensor("image", "uint8")
    d1 = (blur(x, 0.5, gen(0), spec).float() - x.float()).abs().mean()
    d2 = (blur(x, 2.0, gen(0), spec).float() - x.float()).abs().mean()
    assert 0 < d1 < d2
    flat = torch.full((2, 1, 8, 8), 7.0)
    assert torch.allclose(blur(flat, 1.5, gen(0), spec), flat)  # a constant image stays constant


def test_occlusion_covers_the_level_share():
    x = torch.ones(50, 3, 20, 20)
    y = occlusion(x, 0.25, gen(0), ModalitySpec("i", "image", (3, 20, 20)))
    per_image = (y == 0).float().mean(dim=(1, 2, 3))
    assert torch.allclose(per_image, torch.full((50,), 0.25))
    corners = (y[:, 0] == 0).nonzero()[:, 1:].float()
    assert corners.std(0).min() > 0, "the rectangle moves between samples"


# -- sequence / vector attacks --------------------------------------------------------------


def test_dropout_share_is_p():
    x = torch.randn(200, 100) + 10
    for p in (0.1, 0.5):
        assert (dropout(x, p, gen(0), SPEC) == 0).float().mean().item() == pytest.approx(p, abs=0.01)


def test_structured_dropout_drops_contiguous_spans_across_channels():
    x = torch.randn(300, 2, 60) + 10
    y = structured_dropout(x, 0.1, gen(0), ModalitySpec("s", "sequence", (2, 60)), span=3)
    dropped = y[:, 0] == 0
    assert torch.equal(dropped, y[:, 1] == 0), "all channels of a step drop together"
    share = dropped.float().mean().item()
    assert 0.6 * (1 - 0.9 ** 3) < share < 1.05 * (1 - 0.9 ** 3)
    assert min(_run_lengths(dropped[:50])) >= 3  # every run of dropped steps is at least one span long


# -- text attacks -------------------------------------------------------------------------------


def test_token_blank_probability_padding_and_token_ids():
    x = torch.randint(2, 100, (400, 20), generator=gen(5))
    x[:, 15:] = 0
    y = token_blank(x, 0.5, gen(0), TEXT)
    assert torch.equal(y[:, 15:], x[:, 15:]), "padding is never blanked"
    blanked = (y[:, :15] == 1)
    assert blanked.float().mean().item() == pytest.approx(0.5, abs=0.02)  # default unk id 1
    assert torch.equal(token_blank(x, 1.0, gen(0), TEXT)[:, :15], torch.ones(400, 15, dtype=torch.long))
    spec = SimpleNamespace(kind="text", blank_id=7, pad_id=3, mean=0.0, std=1.0)
    assert token_id(spec, "blank") == 7 and token_id(spec, "pad") == 3 and token_id(spec, "unk") == 1
    assert token_id(SimpleNamespace(tokens={"unk": 5}), "blank") == 5
    x3 = torch.where(x == 3, 4, x)
    x3[:, 15:] = 3
    y3 = token_blank(x3, 1.0, gen(0), spec)
    assert (y3[:, :15] == 7).all() and (y3[:, 15:] == 3).all()


def test_token_swap_keeps_the_tokens_and_the_padding():
    x = torch.arange(2, 14).repeat(300, 1)
    x[:, 10:] = 0
    y = token_swap(x, 0.3, gen(0), TEXT)
    assert torch.equal(y.sort(1).values, x.sort(1).values)
    assert torch.equal(y[:, 10:], x[:, 10:])
    moved = (y != x).float().mean().item()
    assert 0.2 < moved < token_swap(x, 0.9, gen(0), TEXT).ne(x).float().mean().item()


# -- fraction and independence ----------------------------------------------------------------


def test_fraction_corrupts_the_same_samples_in_every_modality(data_dir):
    data = load_split("tiny", "test", data_dir)
    noisy = corrupt(data, gaussian, 1.0, ["vector", "image"], 0.5, gen(0))
    changed = {m: (noisy.inputs[m] != data.inputs[m]).flatten(1).any(1) for m in data.inputs}
    assert torch.equal(changed["vector"], changed["image"])
    assert 0.3 < changed["vector"].float().mean().item() < 0.7


def _run_lengths(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True along each row of a boolean ``[N, T]`` mask."""
    runs = []
    for row in mask.tolist():
        length = 0
        for v in row + [False]:
            if v:
                length += 1
            elif length:
                runs.append(length)
                length = 0
    return runs


def _two_images(n=4000):
    spec = ModalitySpec("rgb", "image", (3, 2, 2), dtype="uint8", std=50.0)
    meta = DatasetMeta("d", "x", ("a", "b"), {"rgb": spec, "depth": ModalitySpec("depth", "image", (3, 2, 2),
                                                                            dtype="uint8", std=50.0)}, {"test": n})
    x = torch.full((n, 3, 2, 2), 128, dtype=torch.uint8)
    return MultimodalData({"rgb": x, "depth": x.clone()}, torch.zeros(n, dtype=torch.long), meta)


def test_independent_modalities_are_hit_on_independent_samples():
    data = _two_images()
    st = Step("gaussian", fraction=0.5, options={"unit": "pixel"})
    for independent, both in ((True, 0.25), (False, 0.5)):
        c = apply_steps(data, [(st, ["rgb", "depth"])], 20.0, seed=0, independent=independent)
        hit = {m: (c.data.inputs[m] != data.inputs[m]).flatten(1).any(1) for m in data.inputs}
        assert (hit["rgb"] & hit["depth"]).float().mean().item() == pytest.approx(both, abs=0.03)
        assert c.shares["rgb"] == pytest.approx(0.5, abs=0.03)


def test_a_modality_draws_do_not_depend_on_the_other_modalities_attacked():
    data = _two_images(100)
    st = Step("gaussian", options={"unit": "pixel"})
    alone = apply_steps(data, [(st, ["depth"])], 10.0, seed=3, independent=True, key="k").data.inputs["depth"]
    both = apply_steps(data, [(st, ["rgb", "depth"])], 10.0, seed=3, independent=True, key="k").data.inputs["depth"]
    assert torch.equal(alone, both)


# -- draws made once per curve and attack seed -----------------------------------------------


def _replay_cases(data_dir):
    tiny = load_split("tiny", "test", data_dir)
    for name in ATTACKS.names():
        fn = ATTACKS.get(name)
        if fn.needs_model:
            continue
        for data in (tiny, _text_image(300)):
            for m in data.modalities:
                if data.meta.modalities[m].kind in fn.kinds:
                    yield name, data, m


def test_replayed_draws_equal_fresh_draws_at_every_level(data_dir):
    cases = list(_replay_cases(data_dir))
    assert {name for name, _, _ in cases} == {n for n in ATTACKS.names() if not ATTACKS.get(n).needs_model}
    for name, data, m in cases:
        for fraction, independent in ((1.0, False), (0.5, True)):
            st = Step(name, fraction=fraction)
            replay = Replay()
            texts = {m: text_source(data.inputs[m])} if data.meta.modalities[m].kind == "text" else None
            for level in (0.2, 0.5, 0.9):
                a = apply_steps(data, [(st, [m])], level, 3, independent, key="k", replay=replay, texts=texts)
                b = apply_steps(data, [(st, [m])], level, 3, independent, key="k", texts=texts)
                assert torch.equal(a.data.inputs[m], b.data.inputs[m]), (name, m, fraction, level)
                assert a.missing.keys() == b.missing.keys() and all(torch.equal(a.missing[k], b.missing[k])
                                                                    for k in a.missing), name
                assert a.shares == b.shares


def test_a_level_sweep_draws_once_per_attack_seed(fitted, monkeypatch):
    model, method, test = fitted
    curves = build_curves(test, attacks=["gaussian"], modalities=["vector"])
    fresh = [run_curves(model, method, test, curves, [lv], [0, 1]) for lv in (0.0, 0.5, 1.0, 2.0)]
    calls = []
    real = torch.randn
    monkeypatch.setattr(torch, "randn", lambda *a, **k: calls.append(a) or real(*a, **k))
    rows = run_curves(model, method, test, curves, [0.0, 0.5, 1.0, 2.0], [0, 1])
    assert len(calls) == 2, "one standard-normal draw per attack seed, scaled at every level"
    assert [(r["level"], r["attack_seed"]) for r in rows] == [(lv, s) for lv in (0.0, 0.5, 1.0, 2.0) for s in (0, 1)]
    assert [r["acc"] for r in rows] == [r["acc"] for f in fresh for r in f]


def test_a_missing_sweep_predicts_each_mask_once(fitted, monkeypatch):
    import mmbench.attacks.runner as runner

    model, method, test = fitted
    curve = build_curves(test, attacks=["missing"], modalities=["image"])[0]
    expected = {}
    for level in (0.3, 0.6):
        for seed in (0, 1):
            c = apply_steps(test, curve.steps, level, seed, curve.independent, key=f"{curve.name}:{curve.label}")
            expected[level, seed] = evaluate_corruption(model, method, c)
    calls = []
    real = runner.predict
    monkeypatch.setattr(runner, "predict", lambda *a, **k: calls.append(k.get("mask")) or real(*a, **k))
    rows = run_curves(model, method, test, [curve], [0.3, 0.6], [0, 1])
    assert sorted(map(tuple, calls)) == [(), ("image",)], "one prediction per mask for the whole sweep"
    for r in rows:
        want = expected[r["level"], r["attack_seed"]]
        assert {k: r[k] for k in want} == pytest.approx(want)


def test_replay_falls_back_to_fresh_draws():
    r = Replay()

    def fresh(key, n):
        return torch.rand(n, generator=derived_generator(1, key))

    def direct(g):  # draws without the helpers: the runner cannot replay it
        return torch.rand(5, generator=g)

    assert torch.equal(r.call("d", 1, "cpu", direct), fresh("d", 5))
    assert torch.equal(r.call("d", 1, "cpu", direct), fresh("d", 5)) and "d" in r.direct
    size = {"n": 4}

    def changing(g):  # a draw whose shape depends on the call
        return uniform((size["n"],), g)

    assert torch.equal(r.call("c", 1, "cpu", changing), fresh("c", 4))
    size["n"] = 6
    assert torch.equal(r.call("c", 1, "cpu", changing), fresh("c", 6))  # not recorded: drawn afresh
    assert torch.equal(r.call("c", 1, "cpu", changing), fresh("c", 6))  # recorded again

    def in_place(g):  # an attack may write into its draws: the recording stays intact
        return uniform((5,), g).mul_(2)

    assert torch.equal(r.call("i", 1, "cpu", in_place), 2 * fresh("i", 5))
    assert torch.equal(r.call("i", 1, "cpu", in_place), 2 * fresh("i", 5))


# -- protocols reproduce their documented numbers --------------------------------------------


def _text_image(n=4000):
    meta = DatasetMeta("d", "x", ("a", "b"), {"image": ModalitySpec("image", "image", (3, 8, 8), dtype="uint8"),
                                              "text": TEXT}, {"test": n})
    image = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)
    text = torch.randint(2, 100, (n, 12), generator=gen(1))
    return MultimodalData({"image": image, "text": text}, torch.zeros(n, dtype=torch.long), meta)


def _run_curve(protocol, name, data, eps, seed=0):
    curves = {c.name: c for c in build_curves(data, protocol=protocol)}
    c = curves[name]
    return apply_steps(data, c.steps, eps, seed, c.independent, key=name)


@pytest.mark.parametrize("variant", ["faithful", "clean"])
def test_qmf_gaussian_eps5_is_sigma50_on_half_the_images_plus_text_blanking(variant):
    data = _text_image()
    p = resolve_protocol(f"qmf@2024:{variant}")  # tokens blanked in place (2024.1: on the raw text, tested apart)
    assert p.levels == (0.0, 5.0, 10.0) and p.version_label == f"2024-{variant}"
    c = _run_curve(p, "gaussian", data, 5.0)
    img_hit = (c.data.inputs["image"] != data.inputs["image"]).flatten(1).any(1)
    assert img_hit.float().mean().item() == pytest.approx(0.5, abs=0.03)
    d = c.data.inputs["image"][img_hit].float() - 128
    if variant == "clean":
        assert d.std().item() == pytest.approx(50, rel=0.05)
    else:  # the same map for every image, QMF's seed-0 draw
        assert torch.equal(c.data.inputs["image"][img_hit][0], c.data.inputs["image"][img_hit][-1])
    txt_hit = (c.data.inputs["text"] != data.inputs["text"]).any(1)
    assert txt_hit.float().mean().item() == pytest.approx(0.5, abs=0.03)
    blanked = (c.data.inputs["text"][txt_hit] == 1).float().mean().item()
    assert blanked == pytest.approx(0.5, abs=0.03)  # p = 0.1 eps
    both = (img_hit & txt_hit).float().mean().item()
    assert both == pytest.approx(0.25, abs=0.03), "image and text are drawn independently"
    c10 = _run_curve(p, "gaussian", data, 10.0)
    hit10 = (c10.data.inputs["text"] != data.inputs["text"]).any(1)
    assert (c10.data.inputs["text"][hit10] == 1).all(), "eps = 10 blanks every word"
    c0 = _run_curve(p, "gaussian", data, 0.0)
    assert all(torch.equal(c0.data.inputs[m], data.inputs[m]) for m in data.inputs)


@pytest.mark.parametrize("version,share", [("2024", 0.5), ("2025", 0.05)])
def test_qmf_salt_pepper_versions(version, share):
    data = _text_image()
    c = _run_curve(resolve_protocol(f"qmf@{version}"), "salt_pepper", data, 10.0)
    hit = (c.data.inputs["image"] != data.inputs["image"]).flatten(1).any(1)
    assert hit.float().mean().item() == pytest.approx(share, abs=0.02)
    pixels = (c.data.inputs["image"][hit] != 128).any(1).float().mean().item()
    assert pixels == pytest.approx(0.1, abs=0.01)  # density 0.1
    half = _run_curve(resolve_protocol(f"qmf@{version}"), "salt_pepper", data, 5.0)
    hit5 = (half.data.inputs["image"] != data.inputs["image"]).flatten(1).any(1).float().mean().item()
    assert hit5 == pytest.approx(share / 2, abs=0.02)


def test_qmf_rgbd_splits_pairs_into_quarters():
    data = _two_images()
    p = resolve_protocol("qmf_rgbd:clean")
    c = _run_curve(p, "gaussian", data, 5.0)
    hit = {m: (c.data.inputs[m] != data.inputs[m]).flatten(1).any(1) for m in data.inputs}
    r, d = hit["rgb"], hit["depth"]
    for share in ((r & d), (r & ~d), (~r & d), (~r & ~d)):
        assert share.float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (c.data.inputs["rgb"][r].float() - 128).std().item() == pytest.approx(5, rel=0.1)  # sigma = eps


def test_multibench_curves_per_modality_and_all(data_dir):
    test = load_split("tiny", "test", data_dir)
    p = resolve_protocol("multibench")
    assert p.levels == tuple(i / 10 for i in range(10)) and resolve_protocol("multibench:imdb").levels[-1] == 1.0
    curves = {(c.name, tuple(c.modalities)): c for c in build_curves(test, protocol=p)}
    assert set(curves) == {("tabular", ("vector",)), ("visual", ("image",)), ("all", ("vector", "image"))}
    assert [st.attack for st, _ in curves["tabular", ("vector",)].steps] == ["dropout", "entry_swap"]
    assert all(st.attack_level(0.9) == pytest.approx(0.3) for st, _ in curves["all", ("vector", "image")].steps)
    only = build_curves(test, protocol=p, modalities=["image"])
    assert {(c.name, tuple(c.modalities)) for c in only} == {("visual", ("image",)), ("all", ("image",))}


def _audio_visual(n=200):
    meta = DatasetMeta("d", "x", ("a", "b"), {
        "audio": ModalitySpec("audio", "image", (1, 8, 30), std=2.0),
        "visual": ModalitySpec("visual", "video", (2, 3, 6, 6), dtype="uint8", mean=120.0, std=60.0)}, {"test": n})
    g = gen(7)
    return MultimodalData({"audio": torch.randn(n, 1, 8, 30, generator=g) + 5,
                           "visual": torch.randint(0, 256, (n, 2, 3, 6, 6), generator=g, dtype=torch.uint8)},
                          torch.zeros(n, dtype=torch.long), meta)


def test_multibench_audio_one_of_three_noises_on_a_share_p_of_samples():
    x = torch.randn(6000, 1, 8, 40) + 5
    spec = ModalitySpec("audio", "image", (1, 8, 40), std=2.0)
    y = multibench_audio(x, 0.6, gen(0), spec)
    changed = (y != x).flatten(1).any(1)
    assert changed.float().mean().item() == pytest.approx(0.6, abs=0.03)  # per sample with probability p
    assert torch.equal(y[~changed], x[~changed]), "unhit samples stay as they are (MultiBench zeroes them)"
    zeroed = (y == 0).all(2).squeeze(1)  # [N, T]: whole time steps (every frequency bin) dropped
    assert torch.equal((y == 0).any(2).squeeze(1), zeroed), "dropout zeroes whole time steps"
    dropped, noisy = zeroed.any(1), changed & ~zeroed.any(1)
    assert noisy.float().mean().item() == pytest.approx(0.2, abs=0.03)  # one of three, uniformly
    assert (y - x)[noisy].std().item() == pytest.approx(0.6 * 2.0, rel=0.05)  # sigma = p x training std
    assert torch.equal(y[noisy] != x[noisy], torch.ones_like(y[noisy], dtype=torch.bool))
    runs = _run_lengths(zeroed[dropped][:400])  # single steps (random dropout) or runs of >= 10 (structured)
    assert 1 in runs and max(runs) >= 10


def test_multibench_v2_gives_audio_its_own_noise_and_keeps_the_visual_chain_for_images():
    data = _audio_visual()
    curves = {(c.name, tuple(c.modalities)): c for c in build_curves(data, protocol=resolve_protocol("multibench@2"))}
    assert set(curves) == {("visual", ("visual",)), ("audio", ("audio",)), ("all", ("audio", "visual"))}
    assert [st.attack for st, _ in curves["audio", ("audio",)].steps] == ["multibench_audio"]
    assert {st.attack: ms for st, ms in curves["all", ("audio", "visual")].steps} == {
        "multibench_visual": ["visual"], "multibench_audio": ["audio"]}
    assert resolve_protocol("multibench@2").version_label == "2-affect"
    old = {(c.name, tuple(c.modalities)) for c in build_curves(data, protocol=resolve_protocol("multibench@1"))}
    assert ("visual", ("audio",)) in old, "version 1 (the first release) gave spectrograms the visual chain"
    c = _run_curve(resolve_protocol("multibench@2"), "audio", data, 0.5)
    assert torch.equal(c.data.inputs["visual"], data.inputs["visual"])
    assert 0.3 < c.shares["audio"] < 0.7


def test_protocol_targets_leave_modalities_out():
    data = _audio_visual()
    p = protocol_from_dict({"name": "x", "version": 1, "levels": [0, 1], "conditions": [
        {"attack": "dropout", "target": ["all", "!kind:audio"]},
        {"attack": "gaussian", "target": ["kind:audio"]}]})
    curves = {c.name: c.modalities for c in build_curves(data, protocol=p)}
    assert curves == {"dropout": ["visual"], "gaussian": ["audio"]}
    with pytest.raises(MMBenchError, match="only exclusions"):
        protocol_from_dict({"name": "x", "version": 1, "levels": [0], "conditions": [
            {"attack": "dropout", "target": ["!audio"]}]})


# -- adversarial ------------------------------------------------------------------------------


def _loss(model, method, data, m, x):
    with torch.no_grad():
        out = method.predict(model, data.with_inputs({**data.inputs, m: x}))
        return F.cross_entropy(out.logits, data.labels).item()


def test_fgsm_raises_the_loss_within_the_budget_and_pgd_is_at_least_as_strong(fitted):
    model, method, test = fitted
    m, spec = "vector", test.meta.modalities["vector"]
    ctx = AttackContext(model, method, test.inputs, test.labels, m, test.meta, 64)
    x = test.inputs[m]
    clean = _loss(model, method, test, m, x)
    assert evaluate(model, method, test)["acc"] > 0.8, "the tiny model should be trained"
    eps = 0.3 * spec.std
    a = fgsm(x, 0.3, gen(0), spec, ctx=ctx)
    b = pgd(x, 0.3, gen(0), spec, ctx=ctx)
    assert (a - x).abs().max().item() <= eps + 1e-5 and (b - x).abs().max().item() <= eps + 1e-5
    adv_f, adv_p = _loss(model, method, test, m, a), _loss(model, method, test, m, b)
    assert adv_f > clean
    assert adv_p >= adv_f - 1e-6


def test_gradient_attacks_need_one_modality(run):
    with pytest.raises(MMBenchError, match="one modality"):
        attack_run(run, ["fgsm"], [0.1], [0])


# -- the runner ---------------------------------------------------------------------------------


def test_missing_equals_masking(fitted):
    model, method, test = fitted
    c = apply_steps(test, [(Step("missing"), ["image"])], 1.0, seed=0)
    assert c.missing["image"].all() and torch.equal(c.data.inputs["image"], test.inputs["image"])
    masked, _ = predict(model, method, test, mask=["image"])
    got = evaluate_corruption(model, method, c)
    assert got["acc"] == pytest.approx((masked.argmax(1) == test.labels).float().mean().item())
    assert got["acc_image"] == 0.0  # the missing modality's head predicts nothing
    half = apply_steps(test, [(Step("missing", level=None), ["image"])], 0.5, seed=0)
    lost = half.missing["image"]
    assert 0 < lost.float().mean() < 1
    full, _ = predict(model, method, test)
    expected = torch.where(lost.unsqueeze(1), masked, full).argmax(1)
    assert evaluate_corruption(model, method, half)["acc"] == pytest.approx(
        (expected == test.labels).float().mean().item())


def test_attack_rows_record_protocol_level_and_seed(run):
    folder = run
    rows = attack_run(folder, ["gaussian"], [0.0, 1.0], [0, 1], modalities=["image"])
    assert len(rows) == 4
    for r in rows:
        assert {"run_id", "protocol", "protocol_version", "attack", "modalities", "level", "fraction",
                "attack_seed", "acc", "f1"} <= set(r)
    clean = [r["acc"] for r in rows if r["level"] == 0.0]
    assert clean == pytest.approx([folder.read_summary()["test"]["acc"]] * 2)
    # re-running replaces rows instead of duplicating them
    attack_run(folder, ["gaussian"], [0.0, 1.0], [0, 1], modalities=["image"])
    assert len(folder.read_attack()) == 4
    # with attacks, a protocol string is a label (sweep grids), positional order kept
    labelled = attack_run(folder, ["gaussian"], [1.0], [0], None, 1.0, "grid", "3")
    assert [(r["protocol"], r["protocol_version"], r["modalities"]) for r in labelled] == [("grid", "3", "all")]


def test_attack_rejects_unknown_modality(run):
    with pytest.raises(MMBenchError, match="did you mean image"):
        attack_run(run, ["gaussian"], [1.0], [0], modalities=["imag"])


def test_protocol_rows_record_name_version_seed_and_shares(run):
    rows = attack_run(run, protocol="qmf@2024:clean", attack_seeds=[0, 1, 2])  # 2024: float images too
    assert {r["attack"] for r in rows} == {"gaussian", "salt_pepper"}
    assert len(rows) == 2 * 3 * 3
    assert {r["protocol"] for r in rows} == {"qmf"} and {r["protocol_version"] for r in rows} == {"2024-clean"}
    assert sorted({r["attack_seed"] for r in rows}) == [0, 1, 2]
    g5 = [r for r in rows if r["attack"] == "gaussian" and r["level"] == 5.0]
    assert all(0.3 < r["hit_image"] < 0.7 and r["hit_vector"] == 0 for r in g5)
    assert all(r["modalities"] == "image" and r["fraction"] == 0.5 for r in rows)
    csv = run.read_attack()
    assert len(csv) == len(rows) and set(csv["protocol_version"]) == {"2024-clean"}


def test_attack_needs_noise_or_protocol_and_protocol_fixes_fraction(run):
    with pytest.raises(MMBenchError, match="--noise"):
        attack_run(run)
    with pytest.raises(MMBenchError, match="fixes the fraction"):
        attack_run(run, protocol="qmf", fraction=0.3)
    with pytest.raises(MMBenchError, match="did you mean qmf"):
        resolve_protocol("qmff")
    with pytest.raises(MMBenchError, match="variant"):
        resolve_protocol("qmf:exact")


# -- user protocols from YAML ---------------------------------------------------------------


GOOD = """
name: mine
version: 2
levels: [0, 0.5, 1]
conditions:
  - name: noisy
    independent: true
    steps:
      - {attack: gaussian, target: kind:image, fraction: 0.5, options: {unit: std}}
      - {attack: dropout, target: vector, level_scale: 0.5}
  - attack: blank
    target: all
"""


def test_yaml_protocol_loads_and_runs(run, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    p = load_protocol_file(path)
    assert p.version_label == "2" and [c.name for c in p.conditions] == ["noisy", "blank"]
    rows = attack_run(run, protocol=str(path), attack_seeds=[0])
    assert {(r["protocol"], r["protocol_version"]) for r in rows} == {("mine", "2")}
    assert len(rows) == 2 * 3


@pytest.mark.parametrize("text,message", [
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gausian}]", "did you mean gaussian"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gaussian, fracton: 0.5}]", "did you mean 'fraction'"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gaussian, fraction: 1.5}]", "fraction: must be in (0.0, 1.0]"),
    ("name: x\nversion: 1\nconditions: [{attack: gaussian}]", "missing required key 'levels'"),
    ("name: x\nlevels: [0]\nconditions: [{attack: gaussian}]", "missing required key 'version'"),
    ("name: x\nversion: 1\nlevels: [-1]\nconditions: [{attack: gaussian}]", "levels[0]"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gaussian, options: {sigma: 2}}]", "unknown option 'sigma'"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gaussian, target: 'kind:hologram'}]", "modality kind"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{attack: gaussian}, {attack: gaussian}]", "two conditions"),
    ("name: x\nversion: 1\nlevels: [0]\nconditions: [{name: c, split: sideways, attack: gaussian}]", "split"),
    ("name: [x\n", "not valid YAML"),
])
def test_yaml_protocol_validation_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MMBenchError) as e:
        load_protocol_file(path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_protocol_from_dict_rejects_a_missing_file_and_a_non_mapping(tmp_path):
    with pytest.raises(MMBenchError, match="not found; give a file or one of"):
        load_protocol_file(tmp_path / "none.yaml")
    with pytest.raises(MMBenchError, match="must be a mapping"):
        protocol_from_dict(["not", "a", "mapping"])


# -- robustness metrics ---------------------------------------------------------------------


def test_robustness_metrics_against_hand_computed_values():
    f = [0.9, 0.8, 0.6, 0.5]
    lf = [0.8, 0.6, 0.5, 0.3]
    # ER = sum f_i - (LF_i + f_0 - LF_0): shifted LF = [0.9, 0.7, 0.6, 0.4] -> gaps 0, 0.1, 0, 0.1
    assert effective_robustness(f, lf) == pytest.approx(0.2)
    assert effective_robustness(lf, lf) == pytest.approx(0.0)
    levels = [0.0, 0.1, 0.2, 0.3]
    # MultiBench's relative robustness (step 0.1): 0.1 * ((0.9+0.8)/2 + (0.8+0.6)/2 + (0.6+0.5)/2) = 0.21
    assert robustness_auc(levels, f, normalize=False) == pytest.approx(0.21)
    assert robustness_auc(levels, f) == pytest.approx(0.7)
    assert robustness_auc([0, 5, 10], [0.8, 0.6, 0.2]) == pytest.approx((5 * 0.7 + 5 * 0.4) / 10)
    assert robustness_auc([10, 0, 5], [0.2, 0.8, 0.6]) == pytest.approx(0.55)  # unsorted levels
    assert worst_level([0, 5, 10], [0.8, 0.2, 0.2]) == (5.0, 0.2)
    with pytest.raises(ValueError):
        effective_robustness([0.9], [0.9, 0.8])


# -- the command line ----------------------------------------------------------------------------


def test_cli_attack_with_a_protocol_and_independent_modalities(run):
    from typer.testing import CliRunner

    from mmbench.cli import app

    results = str(run.path.parent.parent)
    out = CliRunner().invoke(app, ["attack", run.run_id, "--protocol", "qmf_rgbd@2024:clean", "--levels", "0,5,20",
                                   "--attack-seeds", "2", "--results-dir", results])
    assert out.exit_code == 0, out.output
    rows = run.read_attack()
    assert len(rows) == 3 * 2 and set(rows["protocol"]) == {"qmf_rgbd"} and set(rows["attack_seed"]) == {0, 1}
    out = CliRunner().invoke(app, ["attack", run.run_id, "--noise", "dropout", "--levels", "0.5", "--fraction", "0.5",
                                   "--independent", "--results-dir", results])
    assert out.exit_code == 0, out.output
    drop = run.read_attack().query("attack == 'dropout'")
    assert len(drop) == 1 and bool(drop["independent"].iloc[0]) and drop["fraction"].iloc[0] == 0.5
    both = CliRunner().invoke(app, ["attack", run.run_id, "--noise", "gaussian", "--protocol", "qmf",
                                    "--results-dir", results])
    assert both.exit_code != 0 and "not both" in str(both.exception)
