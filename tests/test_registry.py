import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from mmbench.errors import MMBenchError
from mmbench.registry import REGISTRIES, Registry, discover


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


def test_registry_name_is_set_on_lookup_so_a_plugin_subclass_does_not_inherit_its_parents(monkeypatch):
    registry = Registry("method", "mmbench.test_plugins", base_cls="mmbench.methods.base:Method")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [_FakeEntryPoint("my_joint", "tests.plugin_method:JointChild")]
                        if group == registry.entry_point_group else [])
    from mmbench.methods.joint import Joint

    cls = registry.get("my_joint")
    assert issubclass(cls, Joint) and cls.registry_name == "my_joint" and Joint.registry_name == "joint"


def test_type_check_rejects_a_wrong_object_with_a_one_line_error(monkeypatch):
    registry = Registry("method", "mmbench.test_plugins", base_cls="mmbench.methods.base:Method")
    monkeypatch.setattr(metadata, "entry_points", lambda group: [_FakeEntryPoint("wrong", "tests.plugin_method:helper")]
                        if group == registry.entry_point_group else [])
    with pytest.raises(MMBenchError, match=r"^method 'bad': class tests\.test_registry\.NotAMethod is not a subclass of "
                                           r"mmbench\.methods\.base\.Method$"):
        @registry.register("bad")
        class NotAMethod:
            """Not a method."""
    assert "bad" not in registry
    with pytest.raises(MMBenchError, match="method 'wrong': function .* is not a subclass"):
        registry.get("wrong")
    callables = Registry("attack")
    with pytest.raises(MMBenchError, match="attack 'x': int 3 is not callable"):
        callables.register("x")(3)


def test_aliases_find_the_component_and_deprecated_ones_warn_once():
    registry = Registry("thing")

    @registry.register("new", aliases=("renamed",), deprecated=("old",))
    def new():
        """The new name."""

    assert registry.names() == ["new"] and "old" in registry and "renamed" in registry
    assert registry.get("renamed") is new and registry.canonical("renamed") == "new"
    with pytest.warns(FutureWarning, match="thing 'old' is deprecated; use 'new'"):
        assert registry.get("old") is new
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.get("old") is new  # once only
    assert new.registry_name == "new" and registry.describe("old") == "The new name"
    with pytest.raises(ValueError, match="already a name"):
        registry.register("other", aliases=("new",))(lambda: None)


def test_discover_finds_decorated_definitions_without_importing_them(tmp_path):
    pkg = tmp_path / "scanned"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "focal.py").write_text(
        'raise RuntimeError("imported")\n\n\n'
        '@THINGS.register("focal",\n                 aliases=("focal_loss",))\n'
        'class Focal(  # a comment\n        Base):\n\n    """Focal loss on the fused prediction.\n\n    More.\n    """\n\n    x = 1\n\n\n'
        '@helper("plain")\nasync def plain(a: int,\n          b: str = ":") -> int:\n    return 1\n\n\n'
        '@OTHER.register("not_ours")\ndef other():\n    """Another registry."""\n')
    things = Registry("thing", helpers=("helper",))
    decorators = {"THINGS.register": things, "helper": things}
    assert discover(pkg, "scanned", decorators) == 2
    assert things.names() == ["focal", "plain"]
    focal, plain = things.entries()
    assert (focal.target, focal.description) == ("scanned.sub.focal:Focal", "Focal loss on the fused prediction")
    assert (plain.target, plain.description) == ("scanned.sub.focal:plain", "")
    assert things.canonical("focal_loss") == "focal"


def test_a_new_decorated_module_alone_is_a_registered_method(tmp_path):
    """The contributor's whole step: one decorated module in ``mmbench/methods`` (here in a copy of the package)."""
    root = Path(__file__).parent.parent / "mmbench"
    shutil.copytree(root, tmp_path / "mmbench", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "mmbench" / "methods" / "focal.py").write_text(
        'import torch.nn.functional as F\n\nfrom mmbench.methods.base import Method\nfrom mmbench.registry import METHODS\n\n\n'
        '@METHODS.register("focal")\nclass Focal(Method):\n    """Focal: cross-entropy on the fused prediction."""\n\n'
        '    def loss(self, model, batch, out, state):\n        return F.cross_entropy(out.logits, batch.labels), {}\n')
    code = ("import sys; from mmbench.registry import METHODS; import mmbench; "
            "assert mmbench.__file__.startswith(sys.argv[1]), mmbench.__file__; "
            "assert 'focal' in METHODS.names() and 'torch' not in sys.modules; "
            "assert METHODS.describe('focal') == 'Focal: cross-entropy on the fused prediction'; "
            "assert METHODS.get('focal').registry_name == 'focal'")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, cwd=tmp_path)
