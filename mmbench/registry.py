"""Named registries of components, with lazy entries, wildcards and entry-point plugins.

Every component registers under the exact name the CLI uses. Built-in entries are lazy
``"module:object"`` placeholders (see :mod:`mmbench.components`), so listing names and
descriptions imports neither torch nor the component modules. Third-party packages add
components through the entry-point groups ``mmbench.<kind>`` (e.g. ``mmbench.methods``).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mmbench.errors import MMBenchError


@dataclass
class Entry:
    name: str
    target: str | None  # "module:object" while lazy
    description: str
    obj: Any = None
    origin: str = "builtin"


class Registry:
    """A mapping from CLI names to components of one kind."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    # -- registration ---------------------------------------------------------------
    def register_lazy(self, name: str, target: str, description: str = "", origin: str = "builtin") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, target, description, origin=origin)

    def register(self, name: str, description: str | None = None) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("ogm_ge")``.

        Replaces a lazy placeholder that points at the decorated object; any other
        duplicate name is an error.
        """

        def decorator(obj: Any) -> Any:
            doc = description or _first_line(obj.__doc__)
            entry = self._entries.get(name)
            if entry is not None:
                if entry.obj is not None and entry.obj is not obj:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                if entry.obj is None and entry.target != f"{obj.__module__}:{obj.__qualname__}":
                    raise ValueError(f"{self.kind} {name!r} is registered twice ({entry.target})")
                entry.obj = obj
                entry.description = entry.description or doc
            else:
                self._entries[name] = Entry(name, None, doc, obj=obj, origin=obj.__module__)
            obj.registry_name = name
            return obj

        return decorator

    # -- lookup ---------------------------------------------------------------------
    def _load_plugins(self) -> None:
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self.register_lazy(ep.name, ep.value, "", origin=f"plugin {ep.dist.name if ep.dist else ''}")

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, filtered by a shell-style wildcard as timm's ``list_models``."""
        self._load_plugins()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def entries(self, pattern: str | None = None) -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def get(self, name: str) -> Any:
        """The component registered under ``name``, importing it on first use."""
        self._load_plugins()
        entry = self._entries.get(name)
        if entry is None:
            raise MMBenchError(unknown_name_message(self.kind, name, self.names()))
        if entry.obj is None:
            module_name, _, attr = entry.target.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            entry.obj = obj
            if not entry.description:
                entry.description = _first_line(obj.__doc__)
            if getattr(obj, "registry_name", name) != name:
                raise ValueError(f"{entry.target} is registered as {obj.registry_name!r}, not {name!r}")
        return entry.obj

    def describe(self, name: str) -> str:
        return self._entries[name].description if name in self else ""


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown {kind} {name!r}; {hint}available: {', '.join(available)}"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0].strip()


DATASETS = Registry("dataset", "mmbench.datasets")
ENCODERS = Registry("encoder", "mmbench.encoders")
FUSIONS = Registry("fusion", "mmbench.fusions")
METHODS = Registry("method", "mmbench.methods")
ATTACKS = Registry("attack", "mmbench.attacks")
PROTOCOLS = Registry("protocol", "mmbench.protocols")
EXECUTORS = Registry("executor", "mmbench.executors")

REGISTRIES = {
    "methods": METHODS,
    "datasets": DATASETS,
    "attacks": ATTACKS,
    "encoders": ENCODERS,
    "fusions": FUSIONS,
    "protocols": PROTOCOLS,
    "executors": EXECUTORS,
}

# Built-in lazy entries are declared in one place.
import mmbench.components  # noqa: E402,F401
