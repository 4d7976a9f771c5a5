"""``mmbench info DATASET``: a catalog entry (``datasets.yaml``) as text a user can act on."""

from __future__ import annotations

from typing import Any

from mmbench.errors import MMBenchError

# catalog key -> heading, in the order a user needs them
FIELDS = (("description", "what"), ("source", "source"), ("licence", "licence"), ("citation", "citation"),
          ("obtain", "how to obtain"), ("layout", "raw layout (--root)"), ("classes", "classes"),
          ("splits", "published splits"), ("modalities", "modalities"), ("options", "prepare options (-o)"),
          ("on_error", "missing files"), ("pitfalls", "pitfalls"), ("cpu_preset", "cpu preset (--preset cpu)"))


def _text(value: Any) -> list[str]:
    if isinstance(value, list):
        return [f"- {_inline(v)}" for v in value]
    if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
        return [f"{k}: {_inline(v)}" for k, v in value.items()]
    return [_inline(value)]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        numbers = all(isinstance(v, (int, float)) for v in value)
        return f"[{', '.join(map(str, value))}]" if numbers else " ".join(str(v) for v in value)
    return str(value)


def describe(dataset: str) -> str:
    """The entry's source, licence, citation, raw layout, splits, pitfalls and CPU preset, one heading each."""
    from mmbench.config import load_catalog
    from mmbench.registry import unknown_name_message

    catalog = load_catalog()
    if dataset not in catalog:
        raise MMBenchError(unknown_name_message("dataset", dataset, list(catalog)))
    entry = catalog[dataset]
    lines = [dataset + (" (embedded: mmbench prepare " + dataset + " needs no files)" if entry.get("embedded")
                        else f" (raw files needed: mmbench prepare {dataset} --root RAW_DIR)")]
    for key, heading in FIELDS:
        if entry.get(key) not in (None, "", [], {}):
            body = _text(entry[key])
            lines += [f"{heading}:", *(f"  {line}" for line in body)]
    return "\n".join(lines)
