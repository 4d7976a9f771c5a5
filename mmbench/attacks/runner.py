"""Evaluate a trained run on corrupted test data, for every attack, level and attack seed."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmbench.data.types import MultimodalData
from mmbench.errors import MMBenchError
from mmbench.evaluation import evaluate
from mmbench.registry import ATTACKS, unknown_name_message
from mmbench.results import RunFolder
from mmbench.training import load_trained

ROW_KEY = ["run_id", "protocol", "protocol_version", "attack", "modalities", "level", "fraction", "attack_seed"]


def corrupt(data: MultimodalData, attack: Callable, level: float, modalities: list[str], fraction: float,
            generator: torch.Generator) -> MultimodalData:
    """Apply ``attack`` to the chosen modalities of a ``fraction`` of the samples (the same samples for all)."""
    n = len(data)
    hit = torch.rand(n, generator=generator, device=generator.device).to(data.labels.device) < fraction
    inputs = dict(data.inputs)
    for m in modalities:
        x = inputs[m]
        noisy = attack(x, level, generator, data.meta.modalities[m])
        inputs[m] = torch.where(hit.view(-1, *[1] * (x.dim() - 1)), noisy, x)
    return data.with_inputs(inputs)


def attack_run(folder: RunFolder, attacks: list[str], levels: list[float], attack_seeds: list[int],
               modalities: list[str] | None = None, fraction: float = 1.0, protocol: str = "custom",
               protocol_version: str = "1", device: str = "cpu", data_dir: str | None = None,
               progress: Callable | None = None) -> list[dict]:
    """Rows of corrupted-test metrics; also merged into the run's ``attack.csv``."""
    if not 0 < fraction <= 1:
        raise MMBenchError(f"--fraction must be in (0, 1], got {fraction}")
    cfg, method, model, test = load_trained(folder, device, data_dir)
    chosen = modalities or test.modalities
    for m in chosen:
        if m not in test.modalities:
            raise MMBenchError(unknown_name_message(f"modality of run {folder.run_id}", m, test.modalities))
    fns = {name: ATTACKS.get(name) for name in attacks}
    for name, fn in fns.items():
        bad = [m for m in chosen if test.meta.modalities[m].kind not in fn.kinds]
        if bad:
            raise MMBenchError(f"attack {name!r} applies to {', '.join(fn.kinds)} modalities, "
                               f"not {bad[0]!r} ({test.meta.modalities[bad[0]].kind}); choose --modalities")
    rows = []
    base = {"run_id": folder.run_id, "dataset": cfg.data.dataset, "method": cfg.method.name, "seed": cfg.seed,
            "protocol": protocol, "protocol_version": protocol_version,
            "modalities": "+".join(chosen) if modalities else "all",
            "fraction": fraction}
    total, done = len(fns) * len(levels) * len(attack_seeds), 0
    for name, fn in fns.items():
        for level in levels:
            for seed in attack_seeds:
                generator = torch.Generator(device=test.labels.device).manual_seed(seed)
                noisy = corrupt(test, fn, level, chosen, fraction, generator)
                metrics = evaluate(model, method, noisy, cfg.optim.batch_size * 4)
                rows.append({**base, "attack": name, "level": float(level), "attack_seed": seed, **metrics})
                done += 1
                if progress:
                    progress(done, total)
    folder.write_attack_rows(rows, ROW_KEY)
    return rows
