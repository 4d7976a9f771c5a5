import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mmbench.config import RECIPES as SHIPPED
from mmbench.config import load_catalog, load_recipe, recipe_names, resolve
from mmbench.errors import MMBenchError
from mmbench.methods.base import build_method
from tests.cli_helpers import assert_one_line_error, run_cli

RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").rglob("*.yaml")
                 if p.parent.name not in ("_base", "tables"))  # _base/: shared parts; tables/: sweep grids


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_recipe_resolves_and_names_its_dataset_and_method(path):
    cfg = resolve(path)
    assert path.parent.name == cfg.data.dataset and path.name.split(".")[0] == cfg.method.name  # <method>[.preset].yaml
    build_method(cfg.method)  # parameters are valid for the method
    assert path.read_text().lstrip().startswith("#"), "a recipe starts with a comment citing its source"


def test_include_merges_deeply_by_path_and_by_name_and_the_including_file_wins(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.yaml").write_text("optim: {lr: 0.5, epochs: 3, batch_size: 8}\nmethod: {name: joint}\n")
    (tmp_path / "parts" / "b.yaml").write_text("include: a.yaml\noptim: {epochs: 4}\n")  # relative to b.yaml
    own = tmp_path / "own.yaml"
    own.write_text("include: [parts/b.yaml, _base/sgd_step70]\noptim: {batch_size: 16}\nseed: 3\n")
    d = load_recipe(own)
    base = load_recipe(SHIPPED / "_base" / "sgd_step70.yaml")["optim"]
    assert d["optim"] == {**base, "batch_size": 16}  # the later include over the earlier, this file over both
    assert d["method"] == {"name": "joint"} and d["seed"] == 3 and "include" not in d
    assert load_recipe(tmp_path / "parts" / "b.yaml")["optim"] == {"lr": 0.5, "epochs": 4, "batch_size": 8}


def test_shipped_recipes_include_the_shared_optimisers_and_parts_are_not_recipes():
    including = [n for n in recipe_names() if "include" in yaml.safe_load((SHIPPED / f"{n}.yaml").read_text())]
    assert len(including) >= 14
    assert not any(n.startswith("_") for n in recipe_names())
    for name in including:  # a part holds only what it shares: the recipe keeps its data, method and published rows
        d = load_recipe(name)
        assert d["data"]["dataset"] == name.split("/")[0] and d["method"]["name"] == name.split("/")[1].split(".")[0]


@pytest.mark.parametrize("text,message", [
    ("include: missing.yaml\n", "include 'missing.yaml' not found"),
    ("include: self.yaml\n", "include cycle self.yaml -> self.yaml"),
    ("include: other.yaml\n", "include cycle self.yaml -> other.yaml -> self.yaml"),
    ("include: {a: 1}\n", "include must be a recipe path or name, or a list of them"),
])
def test_include_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "self.yaml").write_text(text)
    (tmp_path / "other.yaml").write_text("include: self.yaml\n")
    with pytest.raises(MMBenchError, match=message):
        load_recipe(tmp_path / "self.yaml")
    code, err = run_cli(monkeypatch, capsys, "train", "--recipe", str(tmp_path / "self.yaml"),
                        "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


TEXT_IMAGE_RGBD = ("food101", "mvsa_single", "nyud2", "sun_rgbd")
RGBD_PARTS = {"nyud2": "qmf_nyud2_adam", "sun_rgbd": "qmf_sun_rgbd_adam"}  # the optimiser parts the table grids use


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name in TEXT_IMAGE_RGBD],
                         ids=lambda p: str(p.relative_to(p.parents[1])))
def test_robust_fusion_recipes_keep_the_baselines_encoder_budget(path):
    """A fair comparison: every method's recipe on a text-image or RGB-D dataset trains the encoders that joint
    and late fusion get on it (the catalog's: same encoders, sizes and dropout), and says so."""
    cfg = resolve(path)
    baseline = resolve(flags={"data.dataset": cfg.data.dataset, "method.name": "joint"})
    if cfg.data.dataset in RGBD_PARTS:  # QMF's ImageNet encoders: in every recipe and in the table grids' joint cells
        part = SHIPPED / "_base" / f"{RGBD_PARTS[cfg.data.dataset]}.yaml"
        baseline.model.pretrained = load_recipe(part)["model"]["pretrained"]
        assert load_recipe(part)["model"]["pretrained"] == cfg.model.pretrained == {"rgb": "imagenet", "depth": "imagenet"}
    budget = lambda model: {k: v for k, v in dataclasses.asdict(model).items() if k != "fusion"}  # noqa: E731
    assert budget(cfg.model) == budget(baseline.model)  # the fusion is the method's choice, the encoders are not
    comment = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    assert "Encoder budget" in comment
    named = re.search(r"Encoder budget:.*? recipes? \(([^)]*)\)", comment)  # the recipes it says share the budget
    assert named or cfg.data.dataset not in RGBD_PARTS, "name the other recipes on this dataset"
    if named:  # ...exist, so the check above covers them too
        assert [n for n in named.group(1).split(", ") if not (path.parent / f"{n}.yaml").exists()] == []


#: Multimodal Dynamics' epochs per dataset (github.com/TencentAILabHealthcare/mmdynamics @ 06a2bb8, train_test.py)
MMDYNAMICS_EPOCHS = {"brca": 2500, "rosmap": 1000}


@pytest.mark.parametrize("dataset", sorted(MMDYNAMICS_EPOCHS))
def test_multiomics_recipes_train_with_multimodal_dynamics_published_setting(dataset):
    """Every BRCA / ROSMAP recipe: Adam 1e-4, weight decay 1e-4, StepLR(500, 0.2), the paper's epochs, one full
    batch per epoch, one 1000-unit layer per view; late fusion is a recipe of its own."""
    names = [n for n in recipe_names() if n.startswith(f"{dataset}/")]
    assert {n.split("/")[1] for n in names} >= {"joint", "joint.late", "tmc", "qmf", "micinet", "qadm"}
    train = load_catalog()[dataset]["splits"]["train"]  # before mmbench carves its validation split
    for name in names:
        cfg = resolve(name)
        o = cfg.optim
        assert (o.optimizer, o.lr, o.weight_decay, o.schedule, o.step_size, o.gamma, o.epochs) == \
            ("adam", 1e-4, 1e-4, "step", 500, 0.2, MMDYNAMICS_EPOCHS[dataset]), name
        assert o.batch_size >= train and (cfg.model.depth, cfg.model.feature_dim) == (0, 1000), name
        text = (SHIPPED / f"{name}.yaml").read_text()
        assert "github.com/TencentAILabHealthcare/mmdynamics" in text and "06a2bb8" in text, name  # cites its source
    assert resolve(f"{dataset}/joint.late").model.fusion == "late" and resolve(f"{dataset}/joint").model.fusion != "late"
