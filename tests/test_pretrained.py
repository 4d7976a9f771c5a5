"""Encoder weights from local files (model.pretrained) and frozen encoders (model.freeze); nothing downloads."""

import re

import pytest
import torch

from mmbench.config import ModelConfig
from mmbench.data import fixtures
from mmbench.data.store import prepare
from mmbench.data.types import ModalitySpec
from mmbench.errors import MMBenchError
from mmbench.models.encoders import ResNet18Encoder
from mmbench.models.multimodal import build_encoder
from mmbench.models.pretrained import IMAGENET_MEAN, innermost
from mmbench.run import train_run
from tests.cli_helpers import assert_one_line_error, run_cli


def torchvision_layout(encoder: ResNet18Encoder) -> dict[str, torch.Tensor]:
    """``encoder``'s weights under torchvision's ResNet-18 names (``conv1``, ``bn1``, ``layerK.J``, ``fc``)."""
    state = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("head."):
            continue
        key = key.replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
        key = re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
        state[key] = value.clone()
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    return state


def _source(channels=3, feature_dim=512, seed=1):
    torch.manual_seed(seed)
    enc = ResNet18Encoder((channels, 32, 32), feature_dim, 0, 0, 0.0)
    for m in enc.modules():  # BatchNorm statistics that are not the defaults, so loading them is visible
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return enc.eval()


def _spec(channels=3, dtype="float32", name="rgb"):
    return ModalitySpec(name, "image", (channels, 32, 32), dtype, 0.0, 1.0)


def test_torchvision_layout_file_loads_every_backbone_weight(tmp_path):
    source = _source()
    torch.save(torchvision_layout(source), tmp_path / "r18.pth")
    cfg = ModelConfig(feature_dim=512, pretrained={"rgb": str(tmp_path / "r18.pth")})
    encoder = build_encoder(_spec(), "resnet18", cfg).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(innermost(encoder).state_dict()[key], value), key
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(encoder(x), source(x), atol=1e-5)
    fresh = build_encoder(_spec(), "resnet18", ModelConfig(feature_dim=512)).eval()
    assert not torch.allclose(fresh(x), source(x), atol=1e-3)  # without the file the output differs


def test_projection_head_keeps_its_initialisation_and_the_backbone_loads(tmp_path):
    torch.save(torchvision_layout(_source()), tmp_path / "r18.pth")
    cfg = ModelConfig(feature_dim=64, pretrained={"rgb": str(tmp_path / "r18.pth")})
    encoder = innermost(build_encoder(_spec(), "resnet18", cfg))
    assert encoder.head[-2].weight.shape == (64, 512)
    assert torch.equal(encoder.stem[0].weight, _source().stem[0].weight)


def test_a_3_channel_file_in_a_1_channel_encoder_sees_grey_as_three_equal_channels(tmp_path):
    source = _source()
    torch.save(torchvision_layout(source), tmp_path / "r18.pth")
    cfg = ModelConfig(feature_dim=512, pretrained={"depth": str(tmp_path / "r18.pth")})
    encoder = build_encoder(_spec(1, name="depth"), "resnet18", cfg).eval()
    grey = torch.randn(4, 1, 32, 32)
    assert torch.allclose(encoder(grey), source(grey.expand(-1, 3, -1, -1)), atol=1e-4)


def test_imagenet_reads_torchvisions_cache_file_and_normalises_with_imagenet_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = ModelConfig(feature_dim=512, pretrained={"rgb": "imagenet"})
    with pytest.raises(MMBenchError, match=r"resnet18-f37072fd\.pth.*download\.pytorch\.org"):
        build_encoder(_spec(dtype="uint8"), "resnet18", cfg)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    source = _source()
    torch.save(torchvision_layout(source), cache / "resnet18-f37072fd.pth")
    encoder = build_encoder(_spec(dtype="uint8"), "resnet18", cfg).eval()
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    assert torch.allclose(encoder(pixels), source((pixels / 255.0 - mean) / std), atol=1e-4)


def test_a_runs_model_file_gives_its_encoder(make_cfg):
    first, _ = train_run(make_cfg("joint", epochs=1))
    cfg = make_cfg("joint", epochs=1, sets=[f"model.pretrained.image={first.path / 'model.pt'}", "optim.lr=1e-9"])
    second, _ = train_run(cfg)
    a, b = first.load_state_dict(), second.load_state_dict()
    image_keys = [k for k in a if k.startswith("encoders.image.") and "running" not in k and "batches" not in k]
    assert image_keys and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in image_keys)
    assert second.read_summary()["pretrained_sha256"]["image"] == first.read_summary()["sha256"]["model.pt"]


def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(make_cfg, tmp_path):
    first, _ = train_run(make_cfg("joint", epochs=1))
    model_pt = first.path / "model.pt"
    cfg = make_cfg("joint", epochs=2, sets=[f"model.pretrained.image={model_pt}", "model.freeze=[image]"])
    run, _ = train_run(cfg)
    before, after = first.load_state_dict(), run.load_state_dict()
    frozen = {k: v for k, v in after.items() if k.startswith("encoders.image.")}
    assert frozen and all(torch.equal(re_key(before, k), v) for k, v in frozen.items())
    vector = [k for k in after if k.startswith("encoders.vector.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in vector)  # the other encoder trains


def re_key(state, key):
    """The tensor of ``key`` (with the :class:`Frozen` wrapper's ``encoder.``) in a state dict without it."""
    return state[key.replace("encoders.image.encoder.", "encoders.image.", 1)]


@pytest.mark.parametrize("sets, fragments", [
    (["model.pretrained.image=/no/such.pth"], ["/no/such.pth", "does not exist"]),
    (["model.pretrained.vector=imagenet"], ["'mlp' has no published ImageNet weights"]),
    (["model.freeze=[sound]"], ["model.freeze", "sound"]),
    (["model.pretrained.sound=/x.pth"], ["model.pretrained", "sound"]),
])
def test_bad_pretrained_settings_are_one_line_errors(monkeypatch, capsys, data_dir, tmp_path, sets, fragments):
    args = ["train", "--dataset", "tiny", "--epochs", "1", "--data-dir", str(data_dir),
            "--results-dir", str(tmp_path / "results")]
    code, err = run_cli(monkeypatch, capsys, *args, *[a for s in sets for a in ("--set", s)])
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "results").exists()


def test_a_file_of_another_architecture_is_a_one_line_error(monkeypatch, capsys, data_dir, tmp_path):
    torch.save({"conv1.weight": torch.randn(8, 3, 3, 3)}, tmp_path / "other.pth")
    code, err = run_cli(monkeypatch, capsys, "train", "--dataset", "tiny", "--epochs", "1", "--data-dir",
                        str(data_dir), "--results-dir", str(tmp_path / "results"),
                        "--set", "model.encoders.image=resnet18", "--set", f"model.pretrained.image={tmp_path}/other.pth")
    assert_one_line_error(code, err, "other.pth", "does not fit the image encoder")


def test_the_nyud2_recipe_trains_with_imagenet_weights_from_a_local_file(tmp_path, monkeypatch, capsys):
    """QMF's NYUD2 setting: ImageNet ResNet-18 for RGB and depth (here a written file in torchvision's layout)."""
    fixtures.nyud2(tmp_path / "raw", num_classes=10, per_split=(1, 1, 1), size=32)
    prepare("nyud2", tmp_path / "raw", tmp_path / "data", options={"image_size": 32})
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision_layout(_source()), cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, err = run_cli(monkeypatch, capsys, "train", "--recipe", "nyud2/qmf", "--epochs", "1", "--data-dir",
                        str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
                        "--set", "optim.batch_size=8", "--set", "output.probe=false")
    assert code == 0, err
    summary = next((tmp_path / "results").glob("runs/*/summary.json")).read_text()
    assert '"rgb"' in summary and "pretrained_sha256" in summary


@pytest.mark.parametrize("method", ["ogm_ge", "mmpareto", "agm", "pmr"])  # methods that read or reshape gradients
def test_gradient_methods_train_beside_a_frozen_encoder(make_cfg, method):
    run, trained = train_run(make_cfg(method, epochs=1, sets=["model.freeze=[image]"]))
    assert trained and run.read_summary()["status"] == "complete"
