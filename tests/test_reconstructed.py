"""The mark ‡: reconstructed parts are declared once, on the method class (never a parameter, so never
in the config, the run id or ``--set``); every run records them in ``summary.json`` and every report
label of a method that has them carries the mark."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from mmbench.config import MethodConfig
from mmbench.errors import MMBenchError
from mmbench.methods.base import build_method, method_label, method_params_dict
from mmbench.registry import METHODS
from mmbench.report import RECONSTRUCTED
from tests.conftest import BUILTIN_METHODS

DOCS = Path(__file__).parent.parent / "docs" / "methods"


def _saved_defaults(name):  # a method's default parameters as a run folder saves them
    return json.loads(json.dumps(method_params_dict(build_method(MethodConfig(name)))))


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_reconstructed_parts_are_declared_on_the_class_and_marked(name):
    cls = METHODS.get(name)
    assert "reconstructed" not in {f.name for f in dataclasses.fields(cls.Params)}
    assert isinstance(cls.reconstructed, tuple) and all(isinstance(p, str) and p for p in cls.reconstructed)
    label = method_label(name, _saved_defaults(name))  # a run without the record: the class decides
    assert label.endswith(RECONSTRUCTED) == bool(cls.reconstructed), label
    assert method_label(name, {}, ["x"]) == name + RECONSTRUCTED  # the run's record decides when it has one
    assert method_label(name, {}, []) == name


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_a_method_documented_as_reconstructed_declares_its_parts(name):
    """A method whose module says no official code is known, or whose page in ``docs/methods/`` is titled
    with the mark, declares its reconstructed parts; a page without the mark means none are declared."""
    cls = METHODS.get(name)
    doc = " ".join((importlib.import_module(cls.__module__).__doc__ or "").split()).lower()
    if "no official code is known" in doc:
        assert cls.reconstructed, f"{name}: no official code, declare the reconstructed parts in 'reconstructed'"
    page = DOCS / f"{name}.md"
    if page.exists():
        title = page.read_text().splitlines()[0]
        assert title.endswith(RECONSTRUCTED) == bool(cls.reconstructed), f"{page}: {title!r} vs {cls.reconstructed}"


def test_reconstructed_is_not_a_setting():
    with pytest.raises(MMBenchError, match="unknown parameter 'method.reconstructed'"):
        build_method(MethodConfig("cal", {"reconstructed": ["x"]}))
    saved = _saved_defaults("cal")
    assert "alpha" in saved and "reconstructed" not in saved


def test_runs_record_the_parts_and_old_runs_fall_back_to_the_class(make_cfg):
    from mmbench.run import train_run

    folder, _ = train_run(make_cfg("cal", epochs=1))
    summary = folder.read_summary()
    assert summary["reconstructed"] == list(METHODS.get("cal").reconstructed)
    assert summary["label"] == {"method": "cal" + RECONSTRUCTED, "reconstructed": True, "variant": {}}
    assert method_label("cal", summary["method_params"], summary["reconstructed"]) == "cal" + RECONSTRUCTED
    # a run from before the record kept the list among its parameters: not shown as a changed setting
    assert method_label("cal", {"reconstructed": ["x"], "alpha": 0.9}) == "cal‡(alpha=0.9)"
