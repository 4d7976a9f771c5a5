"""Grid cells: a recipe per (dataset, method), attacks per dataset, the shipped paper-table grids
(``recipes/tables/*.yaml``) listed by a dry run, and one clear message per mistake in a cell."""

from __future__ import annotations

import pytest
import yaml

from mmbench.config import RECIPES
from mmbench.sweep import expand
from tests.cli_helpers import assert_one_line_error, run_cli

SMALL = {"optim": {"epochs": 1, "batch_size": 32}, "model": {"hidden_dim": 16, "feature_dim": 8},
         "output": {"probe": False}}


def _write(path, d) -> str:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


@pytest.fixture
def cell_grid(tmp_path):
    """tiny and tiny3; ogm_ge has a recipe per dataset, joint falls back to each dataset's recipe."""
    _write(tmp_path / "ogm_tiny.yaml", {**SMALL, "data": {"dataset": "tiny"}, "method": {"name": "ogm_ge", "alpha": 0.3},
                                         "published": [{"metric": "acc", "value": 61.0, "source": "test"}]})
    _write(tmp_path / "ogm_tiny3.yaml", {**SMALL, "method": {"name": "ogm_ge", "alpha": 0.6}})
    _write(tmp_path / "tiny3_base.yaml", {**SMALL, "optim": {**SMALL["optim"], "lr": 0.02}})
    return tmp_path, {
        "datasets": ["tiny", {"name": "tiny3", "recipe": "tiny3_base.yaml",
                              "attack": [{"noise": "gaussian", "levels": [0, 1], "seeds": 2}]}],
        "methods": ["joint", {"name": "ogm_ge", "recipe": {"tiny": "ogm_tiny.yaml", "tiny3": "ogm_tiny3.yaml"}}],
        "seeds": 2, "recipe": "tiny3_base.yaml", "attack": [{"noise": "gaussian", "levels": [2], "seeds": 1}]}


def test_each_cell_trains_with_its_recipe_and_attacks_with_its_dataset_protocol(cell_grid, data_dir):
    folder, grid = cell_grid
    grid["recipe"] = None  # joint on tiny: the built-in defaults
    runs = expand(_write(folder / "grid.yaml", grid), str(folder / "results"), str(data_dir)).runs
    assert len(runs) == 2 * 2 * 2
    by = {(r.config["data"]["dataset"], r.config["method"]["name"]): r for r in runs}
    assert by["tiny", "ogm_ge"].config["method"]["alpha"] == 0.3
    assert by["tiny3", "ogm_ge"].config["method"]["alpha"] == 0.6
    assert by["tiny", "ogm_ge"].config["published"][0]["value"] == 61.0  # the cell recipe's published figure
    assert by["tiny3", "joint"].config["optim"]["lr"] == 0.02  # the dataset's recipe for a method without one
    assert by["tiny", "joint"].config["optim"]["lr"] != 0.02 and not by["tiny", "joint"].config["published"]
    assert [p.levels_to_run() for p in by["tiny3", "joint"].attacks] == [(0.0, 1.0)]  # the dataset's attacks
    assert [p.levels_to_run() for p in by["tiny", "joint"].attacks] == [(2.0,)]  # the grid's


def test_the_grid_recipe_is_the_last_fallback(cell_grid, data_dir):
    folder, grid = cell_grid
    grid["datasets"] = ["tiny", "tiny3"]
    runs = expand(_write(folder / "grid.yaml", grid), str(folder / "results"), str(data_dir)).runs
    lrs = {(r.config["data"]["dataset"], r.config["method"]["name"]): r.config["optim"]["lr"] for r in runs}
    assert lrs["tiny", "joint"] == lrs["tiny3", "joint"] == 0.02
    assert lrs["tiny", "ogm_ge"] != 0.02


BAD_CELLS = [
    ({"methods": [{"name": "ogm_ge", "recipe": {"tinny": "ogm_tiny.yaml"}}]},
     "recipe names dataset 'tinny', which the grid does not list"),
    ({"methods": [{"name": "ogm_ge", "recipe": {"tiny": "nowhere.yaml"}}]}, "recipe.tiny: recipe 'nowhere.yaml' not found"),
    ({"methods": [{"name": "joint", "recipe": "ogm_tiny.yaml"}]}, "is for method.name 'ogm_ge', not 'joint'"),
    ({"methods": [{"name": "ogm_ge", "recipe": {"tiny3": "ogm_tiny.yaml"}}], "datasets": ["tiny", "tiny3"]},
     "is for data.dataset 'tiny', not 'tiny3'"),
    ({"methods": [{"name": "ogm_ge", "recipe": 3}]}, "recipe must be a recipe file path"),
    ({"datasets": [{"name": "tiny", "attacks": []}]}, "unknown key 'attacks'; a dataset entry has name, modalities"),
    ({"datasets": [{"name": "tiny", "attack": [{"protocol": "qfm"}]}]}, "datasets[0] (tiny): attack[0]: unknown protocol"),
    ({"datasets": [{"name": "tiny", "recipe": "ogm_tiny.yaml"}]}, "is for method.name 'ogm_ge', not 'joint'"),
]


@pytest.mark.parametrize("change, message", BAD_CELLS, ids=[m[:30] for _, m in BAD_CELLS])
def test_a_bad_cell_is_one_clear_message(change, message, cell_grid, data_dir, monkeypatch, capsys):
    folder, grid = cell_grid
    grid = {**grid, "datasets": ["tiny"], "methods": ["joint"], "recipe": None, **change}
    path = _write(folder / "bad.yaml", grid)
    code, err = run_cli(monkeypatch, capsys, "sweep", path, "--data-dir", str(data_dir),
                        "--results-dir", str(folder / "results"), "--dry-run")
    assert_one_line_error(code, err, message)


# -- the shipped paper-table grids -------------------------------------------------------------

TABLES = {  # grid: (datasets, methods); every one 5 training seeds
    "qmf": (["food101", "mvsa_single", "nyud2", "sun_rgbd"], ["joint", "tmc", "qmf"]),
    "pdf": (["food101", "mvsa_single", "nyud2", "sun_rgbd"], ["joint", "tmc", "qmf", "pdf"]),
    "cal": (["mvsa_single", "nyud2"], ["joint", "arl", "qmf", "eau", "cal", "pdf"]),
}
RGBD = ("nyud2", "sun_rgbd")


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_paper_table_grid_lists_every_cell_with_its_protocol(table, tmp_path):
    datasets, methods = TABLES[table]
    grid = expand(RECIPES / "tables" / f"{table}.yaml", str(tmp_path / "results"), str(tmp_path / "data"),
                  prepare=False)
    assert len(grid.runs) == len(datasets) * len(methods) * 5 and grid.unprepared == datasets
    cells = {}
    for r in grid.runs:
        cells.setdefault((r.config["data"]["dataset"], r.config["method"]["name"]), []).append(r)
    assert set(cells) == {(d, m) for d in datasets for m in methods}
    for (dataset, _method), runs in cells.items():
        assert sorted(r.config["seed"] for r in runs) == [0, 1, 2, 3, 4]
        [plan] = runs[0].attacks
        assert plan.protocol.name == ("qmf_rgbd" if dataset in RGBD else "qmf")
        assert plan.levels_to_run() == (0.0, 5.0, 10.0) and len(plan.seeds) == 5
    # each cell with a shipped recipe trains with it; the others with QMF's optimiser for the dataset
    for dataset in datasets:
        qmf = cells[dataset, "qmf"][0].config
        shipped = yaml.safe_load((RECIPES / dataset / "qmf.yaml").read_text())
        assert qmf["method"]["rank_weight"] == shipped["method"]["rank_weight"]
        assert qmf["optim"]["batch_size"] == shipped["optim"]["batch_size"]
        assert qmf["published"] == shipped.get("published", [])
        if "tmc" in methods and dataset in RGBD:  # TMC as QMF's RGB-D scripts train it, not TMC's own ETMC
            tmc = cells[dataset, "tmc"][0].config
            assert (tmc["method"]["variant"], tmc["optim"]["batch_size"]) == ("tmc", 32)
        part = {"food101": "textimage", "mvsa_single": "textimage"}.get(dataset, dataset)
        assert cells[dataset, "joint"][0].config["optim"] == {
            **cells[dataset, "joint"][0].config["optim"],
            **yaml.safe_load((RECIPES / "_base" / f"qmf_{part}_adam.yaml").read_text())["optim"]}


def test_a_paper_table_dry_run_needs_no_prepared_data(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "sweep", str(RECIPES / "tables" / "cal.yaml"), "--dry-run",
                        "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"))
    text = " ".join(err.split())
    assert code == 0 and "60 runs: 60 pending; 60 to run" in text
    assert "not prepared: mvsa_single, nyud2" in text and "qmf_rgbd(gaussian)@0,5,10 x5" in text
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()
