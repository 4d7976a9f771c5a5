"""The demo: the whole flow on the embedded datasets, then the leaderboard.

On ``synthetic`` (vector dominant, image weak) and on ``mfeat`` pix+mor: ``joint``,
``joint`` with late fusion (MultiBench's reference for effective robustness), ``unimodal``
for each modality and ``ogm_ge``, over several seeds; a Gaussian attack sweep on every run;
then the CLI writes the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmbench.config import resolve

DEMO_DATASETS = {"synthetic": None, "mfeat": ["pix", "mor"]}
ATTACK_LEVELS = [0.0, 0.5, 1.0, 2.0]


@dataclass
class DemoPlan:
    seeds: int = 3
    epochs: int | None = None  # None: the dataset's default
    attack_seeds: int = 2


def demo_configs(plan: DemoPlan, results_dir: str, data_dir: str | None):
    from mmbench.data.store import load_meta

    for dataset, modalities in DEMO_DATASETS.items():
        names = modalities or list(load_meta(dataset, data_dir).modalities)
        variants = ([("joint", []), ("joint", ["model.fusion=late"])]
                    + [("unimodal", [f"method.modality={m}"]) for m in names] + [("ogm_ge", [])])
        for method, sets in variants:
            for seed in range(plan.seeds):
                flags = {"data.dataset": dataset, "data.modalities": modalities, "method.name": method,
                         "seed": seed, "optim.epochs": plan.epochs, "output.results_dir": results_dir,
                         "output.data_dir": data_dir}
                yield resolve(flags=flags, sets=sets)


def run_demo(plan: DemoPlan, results_dir: str, data_dir: str | None,
             on_run: Callable[[object, bool], None] | None = None, progress_factory=None):
    """Train every demo run (skipping complete ones) and attack them all; returns their folders (the
    caller writes the report)."""
    from mmbench.attacks.runner import attack_run
    from mmbench.run import train_run

    resolve(flags={"output.results_dir": results_dir, "output.data_dir": data_dir})  # checked before preparing data
    folders = []
    for cfg in demo_configs(plan, results_dir, data_dir):
        label = f"{cfg.data.dataset} {cfg.method.name} seed {cfg.seed}"
        if progress_factory is not None:
            with progress_factory(label) as progress:
                folder, trained = train_run(cfg, progress=progress)
        else:
            folder, trained = train_run(cfg)
        folders.append(folder)
        if on_run:
            on_run(folder, trained)
    for folder in folders:
        attack_run(folder, ["gaussian"], ATTACK_LEVELS, list(range(plan.attack_seeds)))
    return folders
