import subprocess
import sys
from importlib import metadata

import pytest

from mmbench.errors import MMBenchError
from mmbench.registry import REGISTRIES, Registry


def test_unknown_name_lists_close_matches():
    with pytest.raises(MMBenchError, match="did you mean [^;]*ogm_ge"):
        REGISTRIES["methods"].get("ogm")


def test_wildcard_filter():
    names = REGISTRIES["methods"].names("o*")
    assert "ogm_ge" in names and "joint" not in names


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_every_lazy_entry_resolves_to_the_object_registered_under_its_name(kind):
    registry = REGISTRIES[kind]
    for name in registry.names():
        obj = registry.get(name)
        assert obj.registry_name == name
        assert registry.describe(name), f"{kind} {name} has no description"


def test_listing_and_help_do_not_import_torch():
    code = ("import sys; from mmbench.registry import REGISTRIES; import mmbench.cli; "
            "[r.entries() for r in REGISTRIES.values()]; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


class _FakeEntryPoint:
    def __init__(self, name, value):
        self.name, self.value, self.dist = name, value, None


def test_entry_point_plugins_are_registered_lazily(monkeypatch):
    registry = Registry("method", "mmbench.test_plugins")

    def fake_entry_points(group):
        return [_FakeEntryPoint("plugin_joint", "tests.plugin_method:PluginJoint")] if group == registry.entry_point_group else []

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    assert registry.names() == ["plugin_joint"]
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent.parent))
    cls = registry.get("plugin_joint")
    assert cls.__name__ == "PluginJoint"


def test_duplicate_registration_is_an_error():
    registry = Registry("thing")

    @registry.register("a")
    class A:
        """An a."""

    with pytest.raises(ValueError, match="registered twice"):
        @registry.register("a")
        class B:
            """Another a."""
