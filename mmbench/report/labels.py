"""Names the tables use: run labels (method, dataset) read from run records, and metric names with
their kind, better side, unit and header."""

from __future__ import annotations

import re
from typing import Any

METRIC_ALIASES = {"acc": "test_acc", "accuracy": "test_acc", "f1": "test_f1", "macro_f1": "test_f1",
                  "macro-f1": "test_f1", "params": "num_parameters", "parameters": "num_parameters"}
COST_COLUMNS = ("num_parameters", "seconds_per_epoch", "train_seconds")
RECONSTRUCTED = "‡"  # the method has parts mmbench reconstructed


# ---------------------------------------------------------------------------------------
# Run labels
# ---------------------------------------------------------------------------------------


def format_method_label(name: str, variant: dict[str, Any], reconstructed: bool) -> str:
    """``name`` (``‡`` when reconstructed) plus the parameters that name the variant: ``unimodal(modality=image)``."""
    base = name + (RECONSTRUCTED if reconstructed else "")
    return f"{base}({', '.join(f'{k}={v}' for k, v in variant.items())})" if variant else base


def run_method_label(summary: dict[str, Any]) -> str:
    """A run's row label, as its ``summary.json`` records it (``label.method``, written at train time).

    Runs written before that record get the plain method name, ``‡`` when their ``reconstructed``
    list is not empty: their parameters are not compared with the method's defaults, which would
    mean importing the method."""
    label = summary.get("label")
    if isinstance(label, dict) and isinstance(label.get("method"), str):
        return label["method"]
    return format_method_label(str(summary["method"]), {}, bool(summary.get("reconstructed")))


def dataset_label(dataset: str, modalities: list[str] | None) -> str:
    return f"{dataset}[{'+'.join(modalities)}]" if modalities else dataset


def reference_for(entries, reference: str | None) -> str | None:
    """The entry of a block that is the reference: the exact label, else the one label of that method."""
    entries = list(dict.fromkeys(entries))
    if reference is None:
        return None
    if reference in entries:
        return reference
    same_base = [e for e in entries if str(e).split("(")[0].rstrip(RECONSTRUCTED) == reference]
    return same_base[0] if len(same_base) == 1 else None


# ---------------------------------------------------------------------------------------
# Metric names and kinds
# ---------------------------------------------------------------------------------------


def is_cost(metric: str) -> bool:
    return metric in COST_COLUMNS or bool(re.search(r"peak|memory|flops", metric))


def metric_kind(metric: str) -> str:
    """``test``, ``attack`` (accuracy at one level), ``robustness``, ``cost`` or ``val``."""
    if metric.startswith("robust_"):
        return "robustness"
    if "@" in metric:
        return "attack"
    if is_cost(metric):
        return "cost"
    if metric.startswith("test_"):
        return "test"
    return "val"


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 no better side (ranks and best marks skip it)."""
    if is_cost(metric) or "loss" in metric or "imbalance" in metric:
        return -1
    if "shapley" in metric:
        return 0
    return 1


def is_percent(metric: str) -> bool:
    """Shown in percent: accuracies, F1, probes, Shapley contributions (accuracy points), attacks."""
    if metric_kind(metric) in ("attack", "robustness"):
        return True
    return metric_kind(metric) in ("test", "val") and bool(re.search(r"acc|f1|probe|shapley", metric))


def pretty_header(stem: str) -> str:
    if stem == "test_acc":
        return "acc"
    if stem == "test_f1":
        return "macro-F1"
    for prefix, name in (("test_acc_masked_", "only"), ("test_acc_", "acc"), ("test_probe_", "probe"),
                         ("test_shapley_", "φ")):
        if stem.startswith(prefix):
            return f"{name}[{stem[len(prefix):]}]"
    if stem.startswith("robust_"):
        m = re.match(r"robust_(\w+)\[(.*)\]$", stem)
        if m:
            return f"{m.group(2)} {m.group(1)}{'.' if m.group(1) in ('rel', 'eff') else ''}"
    if stem == "num_parameters":
        return "params"
    if stem == "seconds_per_epoch":
        return "s/epoch"
    if stem == "train_seconds":
        return "train s"
    if stem.startswith("test_"):
        return stem[len("test_"):]
    return stem


def metric_order(metric: str) -> tuple:
    """Sort key of test metrics: accuracy, F1, heads, masked, probes, Shapley, imbalance, the rest."""
    order = [("test_acc", 0), ("test_f1", 1), ("test_acc_masked_", 3), ("test_acc_", 2), ("test_probe_", 4),
             ("test_shapley_", 5), ("test_imbalance", 6)]
    for prefix, rank in order:
        if metric == prefix or (prefix.endswith("_") and metric.startswith(prefix)):
            return (rank, metric)
    return (7, metric)

