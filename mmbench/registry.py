"""Named registries of components, with lazy entries, wildcards, aliases and entry-point plugins.

Every component registers under the exact name the CLI uses, with one decorator in its own
module: ``@METHODS.register("ogm_ge")`` (attacks: ``@register_attack("gaussian", ...)``). That is
the only step. Built-ins are found without importing them: the package's sources are read with
:mod:`ast` for those decorators (:func:`discover`), and each becomes a lazy ``"module:object"``
entry whose description is the first line of the object's docstring, so ``mmbench list`` and
``--help`` import neither torch nor the component modules. The module is imported on
:meth:`Registry.get`, which checks the object's type (``base_cls``) and sets its
``registry_name``. Renamed components keep their old names as aliases
(``register("new", aliases=("old",))``), so old runs' labels still resolve. Third-party
packages add components through the entry-point groups ``mmbench.<kind>`` (e.g.
``mmbench.methods``).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
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
    """A mapping from CLI names to components of one kind.

    ``base_cls`` (``"module:Class"``, resolved only when a component is checked) is the type every
    component must be an instance or subclass of; without it a component must be callable.
    ``helpers`` names decorator functions that register into this registry (``register_attack``),
    so that :func:`discover` finds them too.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None, *, base_cls: str | None = None,
                 helpers: tuple[str, ...] = ()):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.base_cls = base_cls
        self.helpers = helpers
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, tuple[str, bool]] = {}  # alias -> (name, deprecated)
        self._warned: set[str] = set()
        self._plugins_loaded = False

    # -- registration ---------------------------------------------------------------
    def register_lazy(self, name: str, target: str, description: str = "", origin: str = "builtin",
                      aliases: Iterable[str] = (), deprecated: Iterable[str] = ()) -> None:
        entry = self._entries.get(name)
        if entry is not None:
            if _target(entry.obj) == target or entry.target == target:
                return  # the module was imported before discovery reached it
            raise ValueError(f"{self.kind} {name!r} is registered twice ({entry.target or _target(entry.obj)}, {target})")
        self._add_aliases(name, aliases, deprecated)
        self._entries[name] = Entry(name, target, description, origin=origin)

    def register(self, name: str, *, aliases: Iterable[str] = (), deprecated: Iterable[str] = ()) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("ogm_ge")``; the docstring's first line describes it.

        ``aliases`` are other names that find the component (its former names); the ``deprecated``
        ones also warn once when used. Fills in a lazy entry that points at the decorated object;
        any other duplicate name is an error.
        """

        def decorator(obj: Any) -> Any:
            self.check(name, obj)
            entry = self._entries.get(name)
            if entry is not None:
                if entry.obj is not None and entry.obj is not obj:
                    raise ValueError(f"{self.kind} {name!r} is registered twice")
                if entry.obj is None and entry.target != _target(obj):
                    raise ValueError(f"{self.kind} {name!r} is registered twice ({entry.target})")
                entry.obj = obj
            else:
                self._add_aliases(name, aliases, deprecated)
                self._entries[name] = Entry(name, None, describe_object(obj), obj=obj, origin=obj.__module__)
            obj.registry_name = name
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (a test's own components, once its tests are done)."""
        self._entries.pop(self.canonical(name))
        self._aliases = {a: t for a, t in self._aliases.items() if t[0] != name}

    def _add_aliases(self, name: str, aliases: Iterable[str], deprecated: Iterable[str]) -> None:
        deprecated = tuple(deprecated)
        for alias in (*aliases, *deprecated):
            if alias in self._entries or self._aliases.get(alias, (name,))[0] != name:
                raise ValueError(f"{self.kind} alias {alias!r} of {name!r} is already a name")
            self._aliases[alias] = (name, alias in deprecated)

    def check(self, name: str, obj: Any) -> None:
        """A one-line :class:`MMBenchError` unless ``obj`` is of this registry's type."""
        base = _resolve(self.base_cls) if self.base_cls else None
        if base is None:
            ok = callable(obj)
        else:
            ok = issubclass(obj, base) if isinstance(obj, type) else isinstance(obj, base)
        if not ok:
            wanted = f"a subclass of {self.base_cls.replace(':', '.')}" if base is not None else "callable"
            raise MMBenchError(f"{self.kind} {name!r}: {_describe_type(obj)} is not {wanted}")

    # -- lookup ---------------------------------------------------------------------
    def _load_plugins(self) -> None:
        discover_builtins()
        if self._plugins_loaded or self.entry_point_group is None:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self.register_lazy(ep.name, ep.value, "", origin=f"plugin {ep.dist.name if ep.dist else ''}")

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names (not aliases), filtered by a shell-style wildcard as timm's ``list_models``."""
        self._load_plugins()
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names

    def entries(self, pattern: str | None = None) -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        """The name ``name`` stands for: itself, or the component an alias points at."""
        self._load_plugins()
        if name in self._entries:
            return name
        if name not in self._aliases:
            raise MMBenchError(unknown_name_message(self.kind, name, self.names()))
        target, deprecated = self._aliases[name]
        if deprecated and name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"{self.kind} {name!r} is deprecated; use {target!r}", FutureWarning, stacklevel=3)
        return target

    def get(self, name: str) -> Any:
        """The component registered under ``name`` (or an alias), importing and checking it on first use."""
        name = self.canonical(name)
        entry = self._entries[name]
        if entry.obj is None:
            obj = _resolve(entry.target)
            self.check(name, obj)
            own = vars(obj).get("registry_name") if hasattr(obj, "__dict__") else None
            if own is not None and own != name:
                raise ValueError(f"{entry.target} is registered as {own!r}, not {name!r}")
            entry.obj = obj
            entry.description = entry.description or describe_object(obj)
        entry.obj.registry_name = name  # set here too: a plugin subclass must not inherit its parent's name
        return entry.obj

    def describe(self, name: str) -> str:
        return self._entries[self.canonical(name)].description if name in self else ""


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown {kind} {name!r}; {hint}available: {', '.join(available)}"


def describe_object(obj: Any) -> str:
    """A component's one-line description: its docstring's first line, without the final period."""
    return first_line(getattr(obj, "__doc__", None))


def first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0].strip().removesuffix(".")


def _target(obj: Any) -> str | None:
    return None if obj is None else f"{obj.__module__}:{obj.__qualname__}"


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _describe_type(obj: Any) -> str:
    return f"class {obj.__module__}.{obj.__name__}" if isinstance(obj, type) else f"{type(obj).__name__} {obj!r:.60}"


DATASETS = Registry("dataset", "mmbench.datasets", base_cls="mmbench.data.base:DatasetBuilder")
ENCODERS = Registry("encoder", "mmbench.encoders", base_cls="torch.nn:Module")
FUSIONS = Registry("fusion", "mmbench.fusions", base_cls="torch.nn:Module")
METHODS = Registry("method", "mmbench.methods", base_cls="mmbench.methods.base:Method")
ATTACKS = Registry("attack", "mmbench.attacks", helpers=("register_attack",))
PROTOCOLS = Registry("protocol", "mmbench.protocols")
EXECUTORS = Registry("executor", "mmbench.executors", base_cls="mmbench.sweep.executors:Executor")

REGISTRIES = {
    "methods": METHODS,
    "datasets": DATASETS,
    "attacks": ATTACKS,
    "encoders": ENCODERS,
    "fusions": FUSIONS,
    "protocols": PROTOCOLS,
    "executors": EXECUTORS,
}

#: how the sources name each registry: ``METHODS.register`` and the helper decorators (``register_attack``)
_VARIABLES = {"DATASETS": DATASETS, "ENCODERS": ENCODERS, "FUSIONS": FUSIONS, "METHODS": METHODS,
              "ATTACKS": ATTACKS, "PROTOCOLS": PROTOCOLS, "EXECUTORS": EXECUTORS}
DECORATORS = {f"{v}.register": r for v, r in _VARIABLES.items()} | {h: r for r in _VARIABLES.values() for h in r.helpers}


# -- discovery of the built-ins --------------------------------------------------------------


def discover(root: Path, package: str, decorators: dict[str, Registry]) -> int:
    """Register a lazy entry for every top-level class or function under ``root`` (the sources of
    ``package``) decorated with ``@<decorator>("name", ...)``, where ``<decorator>`` is a key of
    ``decorators`` (``"METHODS.register"``, ``"register_attack"``); returns how many were found.

    Nothing is imported, and only the decorated definitions' heads (decorators, signature,
    docstring) are parsed; the description is the docstring's first line.
    """
    found = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))
        for node in _decorated(text, decorators, str(path)):
            for dec in node.decorator_list:
                hit = _registration(dec, decorators)
                if hit is not None:
                    registry, name, options = hit
                    registry.register_lazy(name, f"{module}:{node.name}", first_line(ast.get_docstring(node)),
                                           **options)
                    found += 1
    return found


_DECORATOR_LINE = re.compile(r"^@([\w.]+)\(", re.M)
_HEADER = re.compile(r"^(?:async\s+)?(?:def|class)\s", re.M)
_HEADER_END = re.compile(r":[ \t]*(?:#[^\n]*)?\n")
_DOCSTRING = re.compile(r"\s*[rRuU]?(\"\"\"|\'\'\')")


def _decorated(text: str, decorators: dict[str, Registry], filename: str) -> list[ast.ClassDef | ast.FunctionDef]:
    """The top-level definitions of ``text`` with one of ``decorators``, each parsed from its head
    alone (decorators, signature, docstring): parsing whole modules would cost more than the rest
    of ``mmbench list``. Unusual layouts fall back to parsing the whole file."""
    nodes, pos = [], 0
    for m in _DECORATOR_LINE.finditer(text):
        if m.start() < pos or m.group(1) not in decorators:
            continue
        header = _HEADER.search(text, m.end())
        end = header and _HEADER_END.search(text, header.end())
        if end is None:
            break
        doc = _DOCSTRING.match(text, end.end())
        close = text.find(doc.group(1), doc.end()) if doc else -1
        head = text[m.start():close + 3] if close >= 0 else text[m.start():end.end()] + "    pass\n"
        try:
            nodes.append(ast.parse(head, filename).body[0])
        except (SyntaxError, IndexError):
            break
        pos = end.end()
    else:
        return nodes
    body = ast.parse(text, filename).body
    return [n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.decorator_list]


def _registration(dec: ast.expr, decorators: dict[str, Registry]) -> tuple[Registry, str, dict] | None:
    """``(registry, name, {aliases, deprecated})`` when ``dec`` is ``@<decorator>("name", ...)``."""
    if not isinstance(dec, ast.Call) or not dec.args or not isinstance(dec.args[0], ast.Constant):
        return None
    registry = decorators.get(ast.unparse(dec.func))
    if registry is None or not isinstance(dec.args[0].value, str):
        return None
    options = {k.arg: tuple(ast.literal_eval(k.value)) for k in dec.keywords if k.arg in ("aliases", "deprecated")}
    return registry, dec.args[0].value, options


_discovered = False


def discover_builtins() -> None:
    """Find mmbench's own components, once per process (on the first lookup)."""
    global _discovered
    if not _discovered:
        _discovered = True
        discover(Path(__file__).parent, __package__, DECORATORS)
