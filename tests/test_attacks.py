import pytest
import torch

from mmbench.attacks.noise import gaussian
from mmbench.attacks.runner import attack_run, corrupt
from mmbench.data.store import load_split
from mmbench.data.types import ModalitySpec
from mmbench.errors import MMBenchError
from mmbench.registry import ATTACKS
from mmbench.training import train_run

SPEC = ModalitySpec("vector", "vector", (50,), std=2.0)


def test_gaussian_sigma_is_level_times_training_std():
    x = torch.zeros(400, 50)
    out = gaussian(x, 0.5, torch.Generator().manual_seed(0), SPEC)
    assert out.std().item() == pytest.approx(0.5 * 2.0, rel=0.05)
    assert torch.equal(gaussian(x, 0.0, torch.Generator().manual_seed(0), SPEC), x)


def test_gaussian_is_pure_and_seeded():
    x = torch.randn(10, 50)
    before = x.clone()
    a = gaussian(x, 1.0, torch.Generator().manual_seed(3), SPEC)
    b = gaussian(x, 1.0, torch.Generator().manual_seed(3), SPEC)
    c = gaussian(x, 1.0, torch.Generator().manual_seed(4), SPEC)
    assert torch.equal(x, before) and torch.equal(a, b) and not torch.equal(a, c)


def test_every_attack_declares_the_kinds_it_fits():
    for name in ATTACKS.names():
        assert set(ATTACKS.get(name).kinds) <= {"vector", "image", "sequence"}


def test_fraction_corrupts_the_same_samples_in_every_modality(data_dir):
    data = load_split("tiny", "test", data_dir)
    noisy = corrupt(data, gaussian, 1.0, ["vector", "image"], 0.5, torch.Generator().manual_seed(0))
    changed = {m: (noisy.inputs[m] != data.inputs[m]).flatten(1).any(1) for m in data.inputs}
    assert torch.equal(changed["vector"], changed["image"])
    assert 0.3 < changed["vector"].float().mean().item() < 0.7


def test_attack_rows_record_protocol_level_and_seed(make_cfg):
    folder, _ = train_run(make_cfg("joint"))
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


def test_attack_rejects_unknown_modality(make_cfg):
    folder, _ = train_run(make_cfg("joint"))
    with pytest.raises(MMBenchError, match="did you mean image"):
        attack_run(folder, ["gaussian"], [1.0], [0], modalities=["imag"])
