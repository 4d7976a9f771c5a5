"""Conformance checks for components, shipped so that a plugin author runs the suite mmbench's own
components pass (scikit-learn's ``estimator_checks``).

Every check is a :class:`Check`: a named callable taking a fresh empty directory (pytest's
``tmp_path``). The generators (:func:`method_checks`, :func:`dataset_checks`, :func:`attack_checks`,
:func:`protocol_checks`, :func:`encoder_checks`, :func:`fusion_checks`) yield one check per
component and property, and :func:`parametrize_with_checks` turns them into one pytest test each::

    from mmbench.testing import parametrize_with_checks

    @parametrize_with_checks(methods=["my_method"], attacks=["my_noise"])
    def test_conformance(check, tmp_path):
        check(tmp_path)

Components are looked up by their registered names, so a plugin must be registered first
(imported, or installed with its entry point). Checks train on tiny synthetic datasets prepared
once per process in a temporary folder. pytest is imported only by :func:`parametrize_with_checks`.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.errors import MMBenchError
from mmbench.registry import ATTACKS, DATASETS, ENCODERS, METHODS

#: the tiny synthetic datasets the checks train on: two modalities (vector, image) and three
TINY = {"num_classes": 3, "num_samples": 240, "shapes": ["8", "1x6x6"], "signal": [3.0, 1.5]}
TINY3 = {"num_classes": 3, "num_samples": 240, "names": ["vector", "image", "sequence"],
         "kinds": ["vector", "image", "sequence"], "shapes": ["8", "1x6x6", "2x12"], "signal": [3.0, 2.0, 1.0],
         "degrade_fraction": [0.0, 0.0, 0.5], "degrade_scale": [0.0, 0.0, 1.0]}
#: small widths and batches: a run of two epochs takes about a second
SMALL = ["model.hidden_dim=16", "model.feature_dim=8", "optim.batch_size=32"]


@dataclass(frozen=True)
class Check:
    """One property of one component: ``check(tmp_path)`` raises ``AssertionError`` when it fails."""

    kind: str  # method, dataset, attack, protocol, encoder, fusion
    name: str  # the registered name
    label: str  # what is checked, with its case
    run: Callable[..., None]
    args: tuple = ()

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}:{self.label}"

    def __call__(self, tmp_path: Path) -> None:
        self.run(self.name, *self.args, tmp_path=Path(tmp_path))


# -- shared fixtures: tiny data, configs, a fitted model ---------------------------------


@functools.cache
def tiny_data_dir() -> Path:
    """A data folder holding the prepared ``tiny`` and ``tiny3`` datasets (once per process)."""
    from mmbench.data.store import prepare

    root = Path(tempfile.mkdtemp(prefix="mmbench-checks-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    prepare("synthetic", data_dir=root, name="tiny", options=TINY)
    prepare("synthetic", data_dir=root, name="tiny3", options=TINY3)
    return root


def tiny_config(method: str, results_dir: Path, dataset: str = "tiny", epochs: int = 2, seed: int = 0,
                sets: Iterable[str] = ()):
    """A resolved config training ``method`` on a tiny dataset into ``results_dir``."""
    from mmbench.config import resolve

    flags = {"data.dataset": dataset, "method.name": method, "optim.epochs": epochs, "seed": seed,
             "output.data_dir": str(tiny_data_dir()), "output.results_dir": str(results_dir)}
    return resolve(flags=flags, sets=[*sets, *SMALL])


def required_modality_sets(name: str, modalities: list[str]) -> list[str]:
    """``--set`` values for a method's required modality parameters (no default): the first modality."""
    return [f"method.{f.name}={modalities[0]}" for f in dataclasses.fields(METHODS.get(name).Params)
            if f.default is None and "modality" in f.name]


@functools.cache
def fitted_model() -> tuple[torch.nn.Module, Any, Any]:
    """A tiny joint model trained to high accuracy in plain torch (gradient attacks need one), the
    ``joint`` method and the ``tiny`` test split."""
    import torch.nn.functional as F

    from mmbench.config import ModelConfig
    from mmbench.data.store import load_split
    from mmbench.models.multimodal import ModelSpec, build_model

    torch.manual_seed(0)
    train, test = load_split("tiny", "train", tiny_data_dir()), load_split("tiny", "test", tiny_data_dir())
    model = build_model(ModelSpec(train.meta.modalities, train.meta.num_classes,
                                  ModelConfig(hidden_dim=16, feature_dim=8, depth=1)))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(train).logits, train.labels).backward()
        opt.step()
    return model.eval(), METHODS.get("joint")(), test


# -- methods ---------------------------------------------------------------------------


def method_checks(name: str) -> Iterator[Check]:
    """The model contract, training on two and three modalities (saved, reloaded, deterministic),
    identical resume, and checked string parameters."""
    yield Check("method", name, "output_contract", check_method_output_contract)
    for dataset in ("tiny", "tiny3"):
        yield Check("method", name, f"trains_saves_reloads_deterministically[{dataset}]", check_method_trains, (dataset,))
    yield Check("method", name, "resumes_identically", check_method_resumes_identically)
    for f in dataclasses.fields(METHODS.get(name).Params):
        if f.type in (str, "str"):
            yield Check("method", name, f"string_parameter_is_a_checked_choice[{f.name}]", check_method_string_parameter,
                        (f.name, f.default))


def check_method_output_contract(name: str, tmp_path: Path) -> None:
    """The model returns a ModelOutput of the right shapes; the loss is a finite scalar with gradients."""
    from mmbench.config import MethodConfig, ModelConfig
    from mmbench.data.store import load_split
    from mmbench.methods.base import TrainState, build_method
    from mmbench.models.multimodal import ModelOutput, ModelSpec

    batch = load_split("tiny", "train", tiny_data_dir()).index(slice(0, 16))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(hidden_dim=16, feature_dim=8))
    params = {f.name: batch.modalities[0] for f in dataclasses.fields(METHODS.get(name).Params)
              if f.default is None and "modality" in f.name}
    method = build_method(MethodConfig(name, params))
    model = method.build_model(spec)
    out = model(batch)
    assert isinstance(out, ModelOutput), f"the model returned {type(out).__name__}, not a ModelOutput"
    assert out.logits.shape == (16, batch.meta.num_classes)
    assert set(out.unimodal_logits) <= set(batch.modalities)
    for z in out.unimodal_logits.values():
        assert z.shape == (16, batch.meta.num_classes)
    loss, logs = method.loss(model, batch, out, TrainState())
    assert loss.ndim == 0 and torch.isfinite(loss) and isinstance(logs, dict)
    loss.backward()
    assert any(p.grad is not None for p in model.parameters()), "the loss reaches no parameter"
    assert isinstance(method.predict(model.eval(), batch), ModelOutput)


def check_method_trains(name: str, dataset: str, tmp_path: Path) -> None:
    """Two epochs train and write a complete run; the same config and seed give identical metrics; the
    saved weights reload into the method's model and give the summary's test accuracy. A method
    limited to fewer modalities refuses more with a one-line error."""
    from mmbench.data.store import load_meta
    from mmbench.evaluation import predict
    from mmbench.run import load_trained, train_run

    meta = load_meta(dataset, tiny_data_dir())
    cfg = tiny_config(name, tmp_path / "results", dataset, sets=required_modality_sets(name, list(meta.modalities)))
    limit = METHODS.get(name).max_modalities
    if limit is not None and len(meta.modalities) > limit:
        try:
            train_run(cfg)
        except MMBenchError as e:
            assert f"at most {limit} modalities" in str(e), str(e)
            return
        raise AssertionError(f"{name} declares max_modalities={limit} but trained on {len(meta.modalities)}")
    folder, trained = train_run(cfg)
    assert trained and folder.complete
    metrics = folder.read_metrics()
    assert list(metrics["epoch"]) == [0, 1] and {"train_loss", "val_acc", "val_f1"} <= set(metrics.columns)
    summary = folder.read_summary()
    assert summary["test_samples"] == meta.splits["test"]
    assert 0.0 <= summary["test"]["acc"] <= 1.0

    again = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, results_dir=str(tmp_path / "again")))
    folder2, _ = train_run(again)
    assert (folder2.path / "metrics.csv").read_bytes() == (folder.path / "metrics.csv").read_bytes(), \
        "same config and seed, different metrics.csv"

    _, method, model, test = load_trained(folder)
    logits, _ = predict(model, method, test)
    assert len(logits) == len(test)
    acc = (logits.argmax(1) == test.labels).float().mean().item()
    assert abs(acc - summary["test"]["acc"]) <= 1e-6, "the reloaded weights give another test accuracy"


class _Stop(Exception):
    """Stands in for a crash after an epoch's checkpoint was written."""


def check_method_resumes_identically(name: str, tmp_path: Path) -> None:
    """A run stopped after its first epoch and resumed ends exactly where the uninterrupted run ends."""
    from mmbench.data.store import load_meta
    from mmbench.results import RunFolder
    from mmbench.run import train_run

    sets = ["output.probe=false", "model.dropout=0.2", "optim.schedule=step", "optim.step_size=1", "optim.gamma=0.5",
            *required_modality_sets(name, list(load_meta("tiny", tiny_data_dir()).modalities))]
    full, _ = train_run(tiny_config(name, tmp_path / "full", sets=sets))

    def stop_after_first(epoch, *_):
        if epoch == 0:
            raise _Stop

    cfg = tiny_config(name, tmp_path / "resumed", sets=sets)
    try:
        train_run(cfg, progress=stop_after_first)
        raise AssertionError("the progress callback was not called after the first epoch")
    except _Stop:
        pass
    folder = RunFolder.for_config(cfg)
    assert (folder.path / "checkpoint.pt").exists() and not folder.complete
    assert folder.read_status()["status"] == "failed" and folder.read_status()["epoch"] == 1
    resumed, trained = train_run(cfg, resume=True)
    assert trained and resumed.read_summary()["resumed_from_epoch"] == 1
    assert {p.name for p in resumed.path.iterdir()} == {p.name for p in full.path.iterdir()}
    assert_same_run(full, resumed)


def assert_same_run(a: Any, b: Any) -> None:
    """Two run folders hold the same metrics, test results, weights and per-sample gap records."""
    assert (a.path / "metrics.csv").read_bytes() == (b.path / "metrics.csv").read_bytes(), "metrics.csv differs"
    sa, sb = a.read_summary(), b.read_summary()
    assert sa["test"] == sb["test"] and sa["best_epoch"] == sb["best_epoch"] and sa["val_acc"] == sb["val_acc"]
    wa, wb = a.load_state_dict(), b.load_state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "the weights differ"
    ga, gb = a.load_arrays("gap.npz"), b.load_arrays("gap.npz")
    assert np.array_equal(ga["true_class_prob"], gb["true_class_prob"], equal_nan=True)


def check_method_string_parameter(name: str, field: str, default: str, tmp_path: Path) -> None:
    """A typo in a ``str`` parameter is a one-line error naming the field and listing its default."""
    from mmbench.config import MethodConfig
    from mmbench.methods.base import build_method

    try:
        build_method(MethodConfig(name, {field: default + "_typo"}))
    except MMBenchError as e:
        message = str(e)
        assert f"{field} must be one of" in message and repr(default) in message and "\n" not in message, message
        return
    raise AssertionError(f"{name}: {field}={default + '_typo'!r} was accepted")


# -- datasets --------------------------------------------------------------------------


def dataset_checks(name: str) -> Iterator[Check]:
    """An embedded dataset (no raw files needed) prepares three stratified, finite splits."""
    if DATASETS.get(name).embedded:
        yield Check("dataset", name, "prepares_three_stratified_splits", check_dataset_prepares)


def check_dataset_prepares(name: str, tmp_path: Path) -> None:
    from mmbench.data.store import load_meta, load_split, prepare

    path = prepare(name, data_dir=tmp_path)
    meta = load_meta(path.name, tmp_path)
    assert set(meta.splits) == {"train", "val", "test"} and min(meta.splits.values()) > 0
    labels = {}
    for split in ("train", "val", "test"):
        data = load_split(name, split, tmp_path)
        assert len(data) == meta.splits[split]
        for m, x in data.inputs.items():
            assert tuple(x.shape[1:]) == meta.modalities[m].shape, (m, tuple(x.shape))
            assert torch.isfinite(x).all(), f"{split}/{m} has non-finite values"
        labels[split] = data.labels.numpy()
    assert "seed" in meta.info["split"], "the split's seed is not recorded"
    props = [np.bincount(labels[s], minlength=meta.num_classes) / len(labels[s]) for s in labels]
    assert np.abs(props[0] - props[2]).max() < 0.05, "splits must be stratified"


# -- attacks and protocols -------------------------------------------------------------


def attack_checks(name: str) -> Iterator[Check]:
    """Declarations, then purity, seeding, level 0 = identity, kept dtype and shape, and a monotone
    effect, for every modality kind (and uint8 images) the attack declares."""
    fn = ATTACKS.get(name)
    yield Check("attack", name, "declares_kinds_and_options", check_attack_declarations)
    for kind in getattr(fn, "kinds", ()):
        if getattr(fn, "needs_model", False):
            if kind in ("vector", "image"):  # the kinds of the tiny dataset the fitted model reads
                yield Check("attack", name, f"pure_seeded_identity_at_0[{kind}-model]", check_attack, (kind, "model"))
            continue
        yield Check("attack", name, f"pure_seeded_identity_at_0[{kind}-float32]", check_attack, (kind, "float32"))
        if kind == "image":
            yield Check("attack", name, f"pure_seeded_identity_at_0[{kind}-uint8]", check_attack, (kind, "uint8"))


def check_attack_declarations(name: str, tmp_path: Path) -> None:
    from mmbench.attacks.base import OUTPUTS, attack_options
    from mmbench.data.types import MODALITY_KINDS

    fn = ATTACKS.get(name)
    assert getattr(fn, "kinds", None) and set(fn.kinds) <= set(MODALITY_KINDS), "declare kinds with register_attack"
    assert fn.output in OUTPUTS
    assert isinstance(attack_options(fn), dict)


def sample_tensor(kind: str, dtype: str = "float32"):
    """A seeded batch of one modality of ``kind`` and its spec (text: ids with padding; uint8 images)."""
    from mmbench.data.types import ModalitySpec

    g = torch.Generator().manual_seed(123)
    if kind == "vector":
        return torch.randn(32, 20, generator=g), ModalitySpec("v", "vector", (20,), std=1.0)
    if kind == "sequence":
        return torch.randn(32, 2, 24, generator=g), ModalitySpec("s", "sequence", (2, 24), std=1.0)
    if kind == "text":
        x = torch.randint(2, 60, (32, 12), generator=g)
        x[:, 9:] = 0  # padding
        return x, ModalitySpec("t", "text", (12,), dtype="int64")
    if kind == "video":
        return (torch.randint(0, 256, (16, 2, 3, 8, 8), generator=g, dtype=torch.uint8),
                ModalitySpec("f", "video", (2, 3, 8, 8), dtype="uint8", mean=120.0, std=60.0))
    if dtype == "uint8":
        return (torch.randint(0, 256, (32, 3, 10, 10), generator=g, dtype=torch.uint8),
                ModalitySpec("rgb", "image", (3, 10, 10), dtype="uint8", mean=120.0, std=60.0))
    return torch.rand(32, 1, 10, 10, generator=g), ModalitySpec("i", "image", (1, 10, 10), std=0.3, mean=0.5)


def text_source(x: torch.Tensor):
    """A vocabulary of 5+ letter words for the ids of ``x`` and the raw texts its rows encode."""
    from mmbench.data.media import Vocabulary
    from mmbench.data.textimage import TextSource

    vocab = Vocabulary([f"word{chr(97 + i % 26)}{i}" for i in range(int(x.max()) + 1)])
    texts = [" ".join(vocab.itos[i] for i in row if i != 0) for row in x.tolist()]
    return TextSource(vocab, x.shape[1], texts, np.tile([300, 400], (len(x), 1)))


def check_attack(name: str, kind: str, dtype: str, tmp_path: Path) -> None:
    from mmbench.attacks.base import AttackContext

    fn = ATTACKS.get(name)
    kwargs: dict[str, Any] = {}
    if dtype == "model":
        model, method, test = fitted_model()
        x, spec = test.inputs[kind], test.meta.modalities[kind]
        kwargs["ctx"] = AttackContext(model, method, test.inputs, test.labels, kind, test.meta, 64)
    else:
        x, spec = sample_tensor(kind, dtype)
    if getattr(fn, "needs_text", False):
        kwargs["source"] = text_source(x)

    def gen(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    before = x.clone()
    a = fn(x, 0.3, gen(1), spec, **kwargs)
    b = fn(x, 0.3, gen(1), spec, **kwargs)
    c = fn(x, 0.3, gen(2), spec, **kwargs)
    zero = fn(x, 0.0, gen(1), spec, **kwargs)
    assert torch.equal(x, before), "the input was modified"
    assert torch.equal(a, b), "same seed, different output"
    if fn.output == "mask":
        assert a.dtype == torch.bool and a.shape == (x.shape[0],)
        assert not zero.any()
    else:
        assert a.dtype == x.dtype and a.shape == x.shape
        assert torch.equal(zero, x), "level 0 is not the identity"
        assert not torch.equal(a, x), "level 0.3 changed nothing"
    if fn.stochastic:
        assert not torch.equal(a, c), "different seeds, same output"

    def effect(level: float) -> float:
        y = fn(x, level, gen(1), spec, **kwargs)
        return y.float().mean().item() if fn.output == "mask" else (y.double() - x.double()).abs().mean().item()

    assert effect(0.9) > effect(0.3) > 0, "a higher level should corrupt more"


def protocol_checks(name: str) -> Iterator[Check]:
    yield Check("protocol", name, "builds_validates_and_records_a_version", check_protocol)


def check_protocol(name: str, tmp_path: Path) -> None:
    """The protocol builds, names itself, has a version, levels and conditions of registered attacks,
    and is clean at level 0."""
    from mmbench.attacks.protocols import resolve_protocol

    p = resolve_protocol(name)
    assert p.name == name and p.version and p.levels and p.conditions
    assert p.version_label.startswith(str(p.version))
    for cond in p.conditions:
        for st in cond.steps:
            assert st.attack in ATTACKS, f"unknown attack {st.attack!r}"
            assert st.attack_level(0.0) == 0 or st.sample_fraction(0.0) == 0, "level 0 must be clean"


# -- encoders and fusions --------------------------------------------------------------


def encoder_checks(name: str) -> Iterator[Check]:
    """Every modality kind: mapped to ``[B, feature_dim]`` if declared, refused clearly if not."""
    from mmbench.data.types import MODALITY_KINDS

    for kind in MODALITY_KINDS:
        yield Check("encoder", name, f"maps_to_feature_dim_or_refuses[{kind}]", check_encoder, (kind,))


def kind_specs() -> dict[str, Any]:
    """One modality of every kind, as the store describes it."""
    from mmbench.data.types import ModalitySpec

    return {"vector": ModalitySpec("v", "vector", (12,)), "image": ModalitySpec("i", "image", (2, 8, 8)),
            "sequence": ModalitySpec("s", "sequence", (3, 20)),
            "video": ModalitySpec("f", "video", (2, 3, 8, 8), "uint8", 120.0, 50.0),
            "text": ModalitySpec("t", "text", (7,), "int64", vocab_size=30)}


def example_batch(spec: Any, n: int) -> torch.Tensor:
    """``n`` seeded samples of a modality: token ids with padding, uint8 pixels or normal floats."""
    g = torch.Generator().manual_seed(0)
    if spec.kind == "text":
        x = torch.randint(1, spec.vocab_size, (n, *spec.shape), generator=g)
        x[:, 4:] = 0  # padding
        return x
    if spec.dtype == "uint8":
        return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)
    return torch.randn(n, *spec.shape, generator=g)


def check_encoder(name: str, kind: str, tmp_path: Path) -> None:
    from mmbench.config import ModelConfig
    from mmbench.data.types import MODALITY_KINDS
    from mmbench.models.multimodal import build_encoder

    spec = kind_specs()[kind]
    example = getattr(ENCODERS.get(name), "example_folder", None)  # an encoder built from a folder (bert)
    folder = example is not None and kind in ENCODERS.get(name).kinds
    cfg = ModelConfig(hidden_dim=16, feature_dim=8, depth=2,
                      pretrained={spec.name: str(example(tmp_path))} if folder else {})
    if kind not in getattr(ENCODERS.get(name), "kinds", MODALITY_KINDS):
        try:
            build_encoder(spec, name, cfg)
        except MMBenchError as e:
            assert "takes" in str(e) and "modalities" in str(e), str(e)
            return
        raise AssertionError(f"{name} does not declare {kind} but accepted it")
    out = build_encoder(spec, name, cfg)(example_batch(spec, 5))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    out.sum().backward()


def fusion_checks(name: str) -> Iterator[Check]:
    yield Check("fusion", name, "forward_masking_and_decomposition", check_fusion)


def check_fusion(name: str, tmp_path: Path) -> None:
    """Shapes; decomposable fusions sum (``late``: average) their unimodal logits; masking ignores the
    masked modality's content; every modality masked gives one constant prediction."""
    from mmbench.config import ModelConfig
    from mmbench.data.store import load_split
    from mmbench.models.multimodal import ModelSpec, build_model

    batch = load_split("tiny", "val", tiny_data_dir()).index(slice(0, 10))
    spec = ModelSpec(batch.meta.modalities, batch.meta.num_classes, ModelConfig(fusion=name, hidden_dim=16, feature_dim=8))
    model = build_model(spec).eval()
    out = model(batch)
    assert out.logits.shape == (10, batch.meta.num_classes)
    assert set(out.unimodal_logits) == set(batch.modalities)
    if model.fusion.decomposable:
        stacked = torch.stack(list(out.unimodal_logits.values()))
        combined = stacked.mean(0) if name == "late" else stacked.sum(0)
        torch.testing.assert_close(combined, out.logits)
    else:
        assert model.heads is not None
    masked = model(batch, mask=["image"])
    assert set(masked.unimodal_logits) == {"vector"} and "image" not in masked.features
    noisy = batch.with_inputs({**batch.inputs, "image": torch.randn_like(batch.inputs["image"])})
    torch.testing.assert_close(model(noisy, mask=["image"]).logits, masked.logits)
    nothing = model(batch, mask=batch.modalities)
    assert nothing.logits.shape == out.logits.shape and not nothing.unimodal_logits
    assert torch.allclose(nothing.logits, nothing.logits[:1].expand_as(nothing.logits))


# -- pytest ----------------------------------------------------------------------------

GENERATORS = {"methods": method_checks, "datasets": dataset_checks, "attacks": attack_checks,
              "protocols": protocol_checks, "encoders": encoder_checks, "fusions": fusion_checks}


def all_checks(**components: Iterable[str]) -> list[Check]:
    """Every check of the named components: ``all_checks(methods=["ogm_ge"], attacks=["gaussian"])``."""
    unknown = set(components) - set(GENERATORS)
    if unknown:
        raise TypeError(f"unknown component kinds {sorted(unknown)}; choose among {list(GENERATORS)}")
    return [check for kind, names in components.items() for name in names for check in GENERATORS[kind](name)]


def parametrize_with_checks(**components: Iterable[str]):
    """A pytest decorator: one test per component and check, its id ``kind:name:check[case]``."""
    import pytest

    checks = all_checks(**components)
    return pytest.mark.parametrize("check", checks, ids=[c.id for c in checks])
