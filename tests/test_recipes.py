from pathlib import Path

import pytest

from mmbench.config import resolve
from mmbench.methods.base import build_method

RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").rglob("*.yaml") if p.parent.name != "tables")  # tables/: sweep grids


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_recipe_resolves_and_names_its_dataset_and_method(path):
    cfg = resolve(path)
    assert path.parent.name == cfg.data.dataset and path.name.split(".")[0] == cfg.method.name  # <method>[.preset].yaml
    build_method(cfg.method)  # parameters are valid for the method
    assert path.read_text().lstrip().startswith("#"), "a recipe starts with a comment citing its source"


TEXT_IMAGE_RGBD = ("food101", "mvsa_single", "nyud2", "sun_rgbd")


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name in TEXT_IMAGE_RGBD],
                         ids=lambda p: str(p.relative_to(p.parents[1])))
def test_robust_fusion_recipes_keep_the_baselines_encoder_budget(path):
    """A fair comparison: every method's recipe on a text-image or RGB-D dataset trains the encoders that joint
    and late fusion get on it (the catalog's), and says so."""
    cfg = resolve(path)
    baseline = resolve(flags={"data.dataset": cfg.data.dataset, "method.name": "joint"})
    assert cfg.model == baseline.model
    assert "Encoder budget" in path.read_text()
