"""Reading YAML a user gives (recipes, grids, protocol files, ``--set`` values, run configs), bounded.

``yaml.safe_load`` builds no Python objects, but it follows its input wherever it goes: a
document nested thousands of levels deep exhausts Python's recursion limit, an integer of
thousands of digits exceeds Python's conversion limit, and a few lines of aliases ("billion
laughs") stand for 9**9 strings once anything walks them. :func:`parse` refuses such input
before it is turned into Python values, with one short message: at most :data:`MAX_BYTES` of
text, :data:`MAX_DEPTH` levels of nesting, :data:`MAX_NODES` values counted with every alias
expanded, and integers of at most :data:`MAX_DIGITS` characters. A configuration never needs more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mmbench.errors import MMBenchError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_DIGITS = 100


class YAMLTooLarge(MMBenchError):
    """The YAML text exceeds one of the bounds (size, depth, expanded values, digits)."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer stops at :data:`MAX_DEPTH` levels and whose ints are length-checked."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLTooLarge(f"nested more than {MAX_DEPTH} levels deep{_line(self.peek_event().start_mark)}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if len(text) > MAX_DIGITS:
            raise YAMLTooLarge(f"a number of {len(text)} characters (at most {MAX_DIGITS}){_line(node.start_mark)}")
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _line(mark) -> str:
    return f" at line {mark.line + 1}" if mark is not None else ""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values ``node`` stands for with every alias expanded (shared nodes are counted once per use)."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise YAMLTooLarge(f"an alias refers to a value that contains it{_line(node.start_mark)}")
        return sizes[key]
    sizes[key] = -1  # in progress: meeting it again is a cycle
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        n = 1
    if n > MAX_NODES:
        raise YAMLTooLarge(f"stands for more than {MAX_NODES} values once its aliases are expanded"
                           f"{_line(node.start_mark)}")
    sizes[key] = n
    return n


def parse(text: str) -> Any:
    """``text`` as plain Python values; :class:`YAMLTooLarge` past a bound, ``yaml.YAMLError`` if invalid."""
    if len(text) > MAX_BYTES:
        raise YAMLTooLarge(f"larger than {MAX_BYTES // 1024} KiB")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_text(text: str, what: str) -> Any:
    """:func:`parse`, with any problem as a one-line :class:`MMBenchError` naming ``what`` was read."""
    try:
        return parse(text)
    except YAMLTooLarge as e:
        raise MMBenchError(f"{what} is refused: {e}; simplify it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = str(getattr(e, "problem", None) or "unreadable")[:200]
        raise MMBenchError(f"{what} is not valid YAML{_line(mark)} ({problem}); fix the file") from None


def load_file(path: str | os.PathLike, what: str, missing_hint: str) -> Any:
    """A user's YAML file: missing, not a regular file, too large or invalid is a one-line :class:`MMBenchError`."""
    path = Path(path)
    if not path.is_file():
        raise MMBenchError(f"{what} {str(path)!r} not found; {missing_hint}")
    if path.stat().st_size > MAX_BYTES:
        raise MMBenchError(f"{what} {str(path)!r} is refused: larger than {MAX_BYTES // 1024} KiB; simplify it")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MMBenchError(f"{what} {str(path)!r} cannot be read ({e.__class__.__name__}); fix the file") from None
    return load_text(text, f"{what} {str(path)!r}")
