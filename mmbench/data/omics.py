"""BRCA and ROSMAP as published with MOGONET: presets of :mod:`mmbench.data.csv_views`.

Raw layout (one folder per dataset, https://github.com/txWang/MOGONET): ``1_tr.csv``, ``2_tr.csv``,
``3_tr.csv`` and ``*_te.csv`` (comma-separated floats, no header, one sample per row, already
preprocessed), ``labels_tr.csv`` / ``labels_te.csv`` (one 0-based class per line), and
``{1,2,3}_featname.csv`` (feature names: Ensembl genes, ``cg`` probes, ``hsa-`` miRNAs).
View 1 is mRNA expression, 2 DNA methylation, 3 miRNA expression; they are named ``mRNA``,
``methylation`` and ``miRNA``. The test split is ``_te``; a stratified validation split is carved
from ``_tr`` with a recorded seed (MOGONET itself has no validation split and prints test metrics
during training). Views are standardised with training statistics (``-o standardize=false`` keeps
MOGONET's values). The published widths (BRCA 1000 / 1000 / 503, ROSMAP 200 / 200 / 200) are checked
(``-o check_widths=false`` accepts other feature selections).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmbench.data.base import select_modalities
from mmbench.data.csv_views import CsvViewsDataset
from mmbench.errors import MMBenchError
from mmbench.registry import DATASETS

VIEWS = {"mRNA": "1", "methylation": "2", "miRNA": "3"}
MOGONET_LAYOUT = ("ROOT/{1,2,3}_tr.csv, ROOT/{1,2,3}_te.csv, ROOT/labels_tr.csv, ROOT/labels_te.csv "
                  "(MOGONET's BRCA/ or ROSMAP/ folder)")


class MogonetDataset(CsvViewsDataset):
    classes: tuple[str, ...] = ()
    widths: dict[str, int] = {}
    citation = ("Wang, T., Shao, W., Huang, Z., Tang, H., Zhang, J., Ding, Z. & Huang, K. (2021). MOGONET "
                "integrates multi-omics data using graph convolutional networks allowing patient classification "
                "and biomarker identification. Nature Communications 12, 3445.")

    @dataclass
    class Options(CsvViewsDataset.Options):
        check_widths: bool = True  # the published feature counts per view

    def view_files(self, root: Path, modalities: list[str] | None) -> dict[str, str]:
        views = select_modalities(self.registry_name, modalities, tuple(VIEWS))
        missing = [f"{VIEWS[v]}_{s}.csv" for v in views for s in ("tr", "te") if not (root / f"{VIEWS[v]}_{s}.csv").exists()]
        if missing:
            raise MMBenchError(f"{self.registry_name}: {', '.join(missing)} not found in {root}; expected layout: "
                               f"{MOGONET_LAYOUT}")
        return {v: VIEWS[v] for v in views}

    def class_names(self, root: Path, num_classes: int) -> list[str] | None:
        if num_classes > len(self.classes):
            raise MMBenchError(f"{self.registry_name}: labels go up to {num_classes - 1}, but the dataset has "
                               f"{len(self.classes)} classes ({', '.join(self.classes)}); is --root the right folder?")
        return list(self.classes)

    def check(self, root: Path, splits: dict, classes: list[str]) -> None:
        if not self.options.check_widths:
            return
        for view, x in splits["train"][0].items():
            if x.shape[1] != self.widths[view]:
                raise MMBenchError(f"{self.registry_name}: view {view} ({VIEWS[view]}_tr.csv) has {x.shape[1]} features, "
                                   f"the published files have {self.widths[view]}; pass -o check_widths=false "
                                   "for another feature selection")

    def info(self) -> dict:
        return {"source": "https://github.com/txWang/MOGONET", "citation": self.citation, "layout": MOGONET_LAYOUT,
                "views": {v: f"{VIEWS[v]}_*.csv" for v in VIEWS}}


@DATASETS.register("brca")
class BrcaDataset(MogonetDataset):
    """BRCA (TCGA breast cancer): mRNA, methylation, miRNA views, 5 PAM50 subtypes; MOGONET files (needs --root)."""

    classes = ("Normal-like", "Basal-like", "HER2-enriched", "Luminal A", "Luminal B")
    widths = {"mRNA": 1000, "methylation": 1000, "miRNA": 503}


@DATASETS.register("rosmap")
class RosmapDataset(MogonetDataset):
    """ROSMAP: mRNA, methylation, miRNA views, Alzheimer's disease vs normal control; MOGONET files (needs --root)."""

    classes = ("Normal Control", "Alzheimer's Disease")
    widths = {"mRNA": 200, "methylation": 200, "miRNA": 200}
