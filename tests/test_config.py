import pytest
import yaml

from mmbench.config import RunConfig, load_catalog, parse_set, resolve
from mmbench.errors import MMBenchError


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_precedence_defaults_catalog_recipe_flags_set(tmp_path):
    builtin = RunConfig().optim.epochs
    catalog = load_catalog()["synthetic"]["defaults"]["optim"]["epochs"]
    assert builtin != catalog
    recipe = _recipe(tmp_path, "data: {dataset: synthetic}\noptim: {epochs: 7, lr: 0.5}\n")
    assert resolve(flags={"data.dataset": "mfeat"}).optim.epochs == load_catalog()["mfeat"]["defaults"]["optim"]["epochs"]
    assert resolve(flags={"data.dataset": "csv_views"}).optim.epochs == builtin
    assert resolve(flags={"data.dataset": "synthetic"}).optim.epochs == catalog
    assert resolve(recipe).optim.epochs == 7
    assert resolve(recipe, {"optim.epochs": 5}).optim.epochs == 5
    cfg = resolve(recipe, {"optim.epochs": 5}, ["optim.epochs=3"])
    assert cfg.optim.epochs == 3 and cfg.optim.lr == 0.5


def test_unset_flags_do_not_override(tmp_path):
    recipe = _recipe(tmp_path, "seed: 4\n")
    assert resolve(recipe, {"seed": None}).seed == 4


def test_method_params_sit_beside_the_name(tmp_path):
    recipe = _recipe(tmp_path, "method: {name: ogm_ge, alpha: 0.3}\n")
    cfg = resolve(recipe, sets=["method.modulation_ends=9"])
    assert cfg.method.name == "ogm_ge" and cfg.method.params == {"alpha": 0.3, "modulation_ends": 9}
    assert cfg.to_dict()["method"] == {"name": "ogm_ge", "alpha": 0.3, "modulation_ends": 9}


@pytest.mark.parametrize("text, hint", [
    ("optim: {lrr: 0.1}\n", "optim.lr"),
    ("optimizer: {lr: 0.1}\n", "optim"),
    ("model: {fusoin: sum}\n", "model.fusion"),
])
def test_unknown_recipe_keys_name_close_matches(tmp_path, text, hint):
    with pytest.raises(MMBenchError, match=f"did you mean {hint}"):
        resolve(_recipe(tmp_path, text))


def test_unknown_set_key_is_an_error():
    with pytest.raises(MMBenchError, match="--set: unknown config key 'optim.epoch'"):
        resolve(sets=["optim.epoch=3"])


def test_malformed_recipe_is_an_error(tmp_path):
    with pytest.raises(MMBenchError, match="not valid YAML"):
        resolve(_recipe(tmp_path, "optim: {epochs: 3\n"))
    with pytest.raises(MMBenchError, match="must be a mapping"):
        resolve(_recipe(tmp_path, "- a\n- b\n"))
    with pytest.raises(MMBenchError, match="not found"):
        resolve(tmp_path / "missing.yaml")


def test_types_are_checked_and_harmless_cases_converted():
    cfg = resolve(sets=["optim.lr=1", "data.modalities=pix,mor", "optim.grad_clip=null"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.data.modalities == ["pix", "mor"] and cfg.optim.grad_clip is None
    with pytest.raises(MMBenchError, match="optim.epochs"):
        resolve(sets=["optim.epochs=many"])
    with pytest.raises(MMBenchError, match="must look like key=value"):
        parse_set("optim.lr")


def test_run_id_depends_on_config_and_seed_not_on_output():
    a = resolve(flags={"seed": 1})
    b = resolve(flags={"seed": 1, "output.results_dir": "elsewhere"})
    c = resolve(flags={"seed": 2})
    d = resolve(flags={"seed": 1}, sets=["optim.lr=0.5"])
    assert a.run_id() == b.run_id()
    assert len({a.run_id(), c.run_id(), d.run_id()}) == 3


def test_round_trip_through_yaml():
    cfg = resolve(sets=["method.name=ogm_ge", "method.alpha=0.2", "model.encoders={image: mlp}"])
    again = RunConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg and again.run_id() == cfg.run_id()


def test_published_block_is_validated_and_not_part_of_the_run_id(tmp_path):
    good = _recipe(tmp_path, "published:\n  - {metric: test_acc, value: 62.2, source: 'Peng et al. CVPR 2022, Table 1'}\n")
    cfg = resolve(good)
    assert cfg.published[0]["value"] == 62.2 and cfg.run_id() == resolve().run_id()
    with pytest.raises(MMBenchError, match="published entries need"):
        resolve(_recipe(tmp_path, "published:\n  - {metric: test_acc, value: high}\n"))
