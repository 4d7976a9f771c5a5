"""One AttackPlan for every attack request: the same request gives the same plan from the command line,
the runner's arguments and a sweep grid, and a bad one is one error that names the field to fix."""

from __future__ import annotations

import pickle

import pytest

from mmbench.attacks.plan import DEFAULT_LEVELS, AttackPlan
from mmbench.attacks.protocols import resolve_protocol
from mmbench.errors import MMBenchError


def test_the_same_request_gives_the_same_plan_from_cli_runner_and_grid():
    cli = AttackPlan.request(["gaussian"], None, levels=[0.0, 1.0], seeds=range(2), modalities=["image"])
    grid = AttackPlan.from_grid({"noise": "gaussian", "levels": [0, 1], "seeds": 2, "modalities": "image"}, "g")
    runner = AttackPlan.request(("gaussian",), levels=(0.0, 1.0), seeds=[0, 1], modalities=("image",))
    assert cli == grid == runner
    assert cli.levels == (0.0, 1.0) and cli.seeds == (0, 1) and cli.modalities == ("image",)


def test_a_protocol_is_resolved_once_and_names_the_rows():
    plan = AttackPlan.from_grid({"protocol": "qmf@2024:clean", "seeds": [0, 3]}, "g")
    assert plan.protocol == resolve_protocol("qmf@2024:clean")
    assert (plan.rows_protocol, plan.rows_version) == ("qmf", "2024-clean")
    assert plan.levels_to_run() == tuple(plan.protocol.levels)
    assert pickle.loads(pickle.dumps(plan)) == plan  # travels to worker processes and Ray tasks


def test_with_noise_a_grid_protocol_only_labels_the_rows():
    plan = AttackPlan.from_grid({"noise": ["gaussian"], "protocol": "lab@v2:x", "protocol_version": 3}, "g")
    assert plan.protocol is None and (plan.rows_protocol, plan.rows_version) == ("lab@v2:x", "3")
    assert plan.levels_to_run() == DEFAULT_LEVELS


def test_covered_by_rows():
    adhoc = AttackPlan.request(["gaussian"], levels=[0.0, 1.0], seeds=[0])
    rows = {("custom", "gaussian", "all", 0.0, 0), ("custom", "gaussian", "all", 1.0, 0)}
    assert adhoc.covered_by(rows) and not adhoc.covered_by(rows - {("custom", "gaussian", "all", 1.0, 0)})
    protocol = AttackPlan.request(protocol="multibench", seeds=[0, 1])
    assert not protocol.covered_by({("multibench", "x", "all", 0.0, 0)})
    assert protocol.covered_by({("multibench", "x", "all", 0.0, 0), ("multibench", "y", "image", 0.5, 1)})


def test_rows_on_other_modalities_cover_nothing():
    """A run attacked on all modalities has not been attacked on one alone (the sweep must run that plan)."""
    on_all = {("custom", "gaussian", "all", lv, 0) for lv in (0.0, 1.0)}
    image = AttackPlan.request(["gaussian"], levels=[0.0, 1.0], seeds=[0], modalities=["image"])
    assert not image.covered_by(on_all)
    assert image.covered_by({("custom", "gaussian", "image", lv, 0) for lv in (0.0, 1.0)})
    protocol = AttackPlan.request(protocol="multibench", seeds=[0], modalities=["image"])
    assert not protocol.covered_by({("multibench", "x", "all", 0.0, 0), ("multibench", "x", "vector", 0.0, 0)})
    assert protocol.covered_by({("multibench", "x", "image", 0.0, 0)})


BAD = [  # (fields, fragment with command-line names, fragment with the grid's names)
    ({}, "--noise gaussian", "noise gaussian"),
    ({"noise": ["gaussian"], "protocol": "qmf"}, "give --noise or --protocol", "give noise or protocol"),
    ({"noise": ["gausian"]}, "unknown attack 'gausian'", "unknown attack 'gausian'"),
    ({"noise": ["gaussian", "gaussian"]}, "--noise names 'gaussian' twice", "noise names 'gaussian' twice"),
    ({"protocol": "qfm"}, "unknown protocol 'qfm'", "unknown protocol 'qfm'"),
    ({"protocol": "qmf", "fraction": 0.5}, "drop --fraction", "drop fraction"),
    ({"noise": ["gaussian"], "levels": [float("nan")]}, "--levels must be one or more numbers", "levels must be"),
    ({"noise": ["gaussian"], "levels": [2e6]}, "--levels must be", "levels must be"),
    ({"noise": ["gaussian"], "levels": []}, "--levels must be", "levels must be"),
    ({"noise": ["gaussian"], "levels": [True]}, "--levels must be", "levels must be"),
    ({"noise": ["gaussian"], "seeds": []}, "--attack-seeds N >= 1", "attack seeds must be"),
    ({"noise": ["gaussian"], "seeds": [0, 0]}, "distinct integers", "distinct integers"),
    ({"noise": ["gaussian"], "seeds": [-1]}, "distinct integers >= 0", "distinct integers >= 0"),
    ({"noise": ["gaussian"], "fraction": 0}, "--fraction must be in (0, 1]", "fraction must be in (0, 1]"),
    ({"noise": ["gaussian"], "fraction": 1.5}, "--fraction must be in (0, 1]", "fraction must be in (0, 1]"),
    ({"noise": ["gaussian"], "modalities": []}, "--modalities is empty", "modalities is empty"),
    ({"noise": ["gaussian"], "modalities": [3]}, "--modalities must be a list of names", "modalities must be"),
]


@pytest.mark.parametrize("fields, flag_text, grid_text", BAD, ids=[b[1][:28] for b in BAD])
def test_a_bad_request_is_one_line_naming_what_to_fix(fields, flag_text, grid_text):
    with pytest.raises(MMBenchError) as cli:
        AttackPlan.request(**fields)
    assert flag_text in str(cli.value) and "\n" not in str(cli.value)
    if "protocol" in fields and "noise" in fields:
        return  # in a grid, noise with protocol is a label, not an error
    with pytest.raises(MMBenchError) as grid:
        AttackPlan.from_grid(fields, "grid.yaml: attack[0]")
    assert str(grid.value).startswith("grid.yaml: attack[0]: ") and grid_text in str(grid.value)
    assert "--" not in str(grid.value) and "\n" not in str(grid.value)


@pytest.mark.parametrize("entry, text", [("gaussian", "must be a mapping"), ({"noise": "gaussian", "level": [1]},
                                          "unknown key 'level'"), ({"noise": "gaussian", "seeds": 0}, "attack seeds must be")])
def test_a_bad_grid_entry_is_one_line(entry, text):
    with pytest.raises(MMBenchError, match=text):
        AttackPlan.from_grid(entry, "g")


def test_a_sweep_attacks_a_run_again_for_one_modality_after_all(make_cfg):
    from mmbench.attacks.runner import attack_run
    from mmbench.run import train_run
    from mmbench.sweep.worker import attack_done

    folder, _ = train_run(make_cfg("joint", epochs=1))
    image = AttackPlan.request(["gaussian"], levels=[0.0, 1.0], seeds=[0], modalities=["image"])
    attack_run(folder, ["gaussian"], levels=[0.0, 1.0])
    assert attack_done(folder, [AttackPlan.request(["gaussian"], levels=[0.0, 1.0], seeds=[0])])
    assert not attack_done(folder, [image])
    attack_run(folder, ["gaussian"], levels=[0.0, 1.0], modalities=["image"])
    assert attack_done(folder, [image])
