"""The ``mmbench`` command line. It parses options and calls the library; torch loads lazily."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mmbench.errors import MMBenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark multimodal learning under modality imbalance and data noise.")
_state = {"debug": False}

DataDir = Annotated[str | None, typer.Option("--data-dir", help="Prepared datasets ($MMBENCH_DATA, else ./data).")]
ResultsDir = Annotated[str, typer.Option("--results-dir", help="Run folders and leaderboards.")]


def _split(values: str | None) -> list[str] | None:
    return [v.strip() for v in values.split(",") if v.strip()] if values else None


def _floats(values: str, option: str) -> list[float]:
    try:
        return [float(v) for v in _split(values) or []]
    except ValueError:
        raise MMBenchError(f"{option} must be comma-separated numbers, e.g. 0,0.5,1") from None


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _out(text: str = "") -> None:
    from mmbench.ui import console

    console.print(text, soft_wrap=True)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset builder, e.g. synthetic, mfeat, csv_views.")],
    root: Annotated[str | None, typer.Option(help="Folder with the raw files (not needed for embedded datasets).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the prepared dataset (default: DATASET).")] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated modalities/views to keep.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Builder option key=value (repeatable).")] = None,
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if it exists.")] = False,
) -> None:
    """Turn raw files into a prepared dataset (meta.json + one .npy per split and modality)."""
    from mmbench.config import data_dir as resolve_data_dir
    from mmbench.config import parse_set
    from mmbench.data.store import load_meta
    from mmbench.data.store import prepare as do_prepare

    options = dict(parse_set(o) for o in option or [])
    existed = (resolve_data_dir(data_dir) / (name or dataset) / "meta.json").exists() and not force
    path = do_prepare(dataset, root, data_dir, name, _split(modalities), options, force)
    meta = load_meta(path.name, data_dir)
    mods = ", ".join(f"{m} {s.kind}{list(s.shape)}" for m, s in meta.modalities.items())
    verb = "already prepared (use --force to redo)" if existed else "prepared"
    _out(f"{verb} [bold]{meta.name}[/] in {path}: {meta.num_classes} classes; {escape(mods)}; "
         f"train/val/test = {meta.splits['train']}/{meta.splits['val']}/{meta.splits['test']}")


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="Prepared dataset name.")] = None,
    method: Annotated[str | None, typer.Option(help="Method name (mmbench list methods).")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe YAML file.")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed (repeat for several runs).")] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated subset of modalities.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config key: key=value.")] = None,
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
    force: Annotated[bool, typer.Option(help="Train again even if the run is complete.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train with a method; pick the checkpoint on val; evaluate on test; write a run folder."""
    from mmbench.config import resolve
    from mmbench.training import train_run
    from mmbench.ui import training_progress

    for s in seed or [None]:
        flags = {"data.dataset": dataset, "method.name": method, "seed": s, "data.modalities": _split(modalities),
                 "optim.epochs": epochs, "device": device, "output.results_dir": results_dir,
                 "output.data_dir": data_dir}
        cfg = resolve(recipe, flags, set_)
        label = f"{cfg.data.dataset} {cfg.method.name} seed {cfg.seed}"
        with training_progress(label, enabled=not quiet and sys.stderr.isatty()) as progress:
            folder, trained = train_run(cfg, force=force, progress=progress)
        _report_run(folder, trained)


def _report_run(folder, trained: bool) -> None:
    s = folder.read_summary()
    heads = "  ".join(f"{k[4:]} {v:.3f}" for k, v in s["test"].items() if k.startswith("acc_") and "masked" not in k)
    verb = "trained" if trained else "complete, skipped"
    _out(f"{verb} [bold]{s['run_id']}[/]: test acc {s['test']['acc']:.3f}  f1 {s['test']['f1']:.3f}"
         f"{'  heads: ' + heads if heads else ''}  (best epoch {s['best_epoch']}, {s['train_seconds']:.1f}s)")


@app.command()
def attack(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids or run folders.")] = None,
    noise: Annotated[str, typer.Option(help="Comma-separated attacks (no default: name it), e.g. gaussian.")] = "",
    levels: Annotated[str, typer.Option(help="Comma-separated levels.")] = "0,0.5,1,2",
    modalities: Annotated[str | None, typer.Option(help="Modalities to corrupt together (default: all).")] = None,
    attack_seeds: Annotated[int, typer.Option(help="Number of attack seeds (0..N-1).")] = 1,
    fraction: Annotated[float, typer.Option(help="Share of test samples corrupted.")] = 1.0,
    all_runs: Annotated[bool, typer.Option("--all", help="Attack every complete run in --results-dir.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """Evaluate trained runs on corrupted test data; rows go to each run's attack.csv."""
    from mmbench.attacks.runner import attack_run
    from mmbench.results import resolve_run, run_folders

    if not noise:
        raise MMBenchError("name the noise to apply: --noise gaussian (see mmbench list attacks)")
    if not runs and not all_runs:
        raise MMBenchError("give run ids or folders, or --all to attack every run in --results-dir")
    folders = run_folders(results_dir) if all_runs else [resolve_run(r, results_dir) for r in runs]
    levels_f, attacks = _floats(levels, "--levels"), _split(noise)
    for folder in folders:
        rows = attack_run(folder, attacks, levels_f, list(range(attack_seeds)), _split(modalities), fraction,
                          device=device, data_dir=data_dir)
        by_level = {}
        for r in rows:
            by_level.setdefault((r["attack"], r["level"]), []).append(r["acc"])
        cells = "  ".join(f"{a}@{lv:g} {sum(v) / len(v):.3f}" for (a, lv), v in by_level.items())
        _out(f"attacked [bold]{folder.run_id}[/]: {escape(cells)}")


@app.command()
def report(
    results_dir: Annotated[str, typer.Argument(help="Results folder with runs/.")] = "results",
    out: Annotated[str | None, typer.Option(help="Where to write leaderboard.csv/.md (default: RESULTS_DIR).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only datasets starting with this.")] = None,
    method: Annotated[str | None, typer.Option(help="Only methods starting with this.")] = None,
) -> None:
    """Leaderboards (CSV, Markdown) with mean ± std over seeds, and a table in the terminal."""
    from mmbench.report import formatted, write_leaderboard
    from mmbench.ui import console, rich_table

    if not Path(results_dir).exists():
        raise MMBenchError(f"results folder {results_dir!r} does not exist; train some runs first")
    table, paths = write_leaderboard(results_dir, out, dataset, method)
    if table.empty:
        raise MMBenchError(f"no complete runs in {results_dir}/runs; train some runs first")
    for name, group in formatted(table, sep="±").groupby("dataset", sort=False):
        group = group.loc[:, (group != "–").any()]  # drop columns with no value for this dataset
        console.print(rich_table(group.drop(columns="dataset"), f"{name} (test %, mean ± std)"))
    _out("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def probe(
    runs: Annotated[list[str], typer.Argument(help="Run ids or run folders.")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """Linear-probe each frozen encoder of trained runs (C chosen on val, accuracy on test)."""
    from mmbench.results import resolve_run
    from mmbench.training import probe_run

    for ref in runs:
        folder = resolve_run(ref, results_dir)
        probes = probe_run(folder, device, data_dir)
        cells = "  ".join(f"{m} {p['test']:.3f} (C={p['C']:g})" for m, p in probes.items())
        _out(f"probed [bold]{folder.run_id}[/]: {escape(cells)}")


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Argument(help="methods, datasets, attacks, encoders, fusions, protocols, executors.")] = None,
    pattern: Annotated[str | None, typer.Argument(help="Wildcard filter, e.g. 'o*'.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show defaults (imports the components).")] = False,
) -> None:
    """Show every registered name with its one-line description (and defaults with -v)."""
    from rich.table import Table

    from mmbench.registry import REGISTRIES, unknown_name_message
    from mmbench.ui import console

    if kind is not None and kind not in REGISTRIES:
        raise MMBenchError(unknown_name_message("kind", kind, list(REGISTRIES)))
    for k in [kind] if kind else list(REGISTRIES):
        registry = REGISTRIES[k]
        table = Table(title=k, header_style="bold", title_justify="left")
        table.add_column("name")
        table.add_column("description")
        if verbose:
            table.add_column("defaults")
        entries = registry.entries(pattern)
        if not entries:
            table.add_row("–", "none registered" + (f" matching {pattern!r}" if pattern else ""))
        for entry in entries:
            row = [entry.name, entry.description]
            if verbose:
                row.append(_defaults(registry.get(entry.name)))
            table.add_row(*row)
        console.print(table)


def _defaults(obj) -> str:
    import dataclasses

    for attr in ("Params", "Options"):
        cls = getattr(obj, attr, None)
        if cls is not None and dataclasses.is_dataclass(cls):
            return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cls()).items()) or "-"
    kinds = getattr(obj, "kinds", None)
    return f"kinds: {', '.join(kinds)}" if kinds else "-"


@app.command()
def demo(
    seeds: Annotated[int, typer.Option(help="Training seeds per method.")] = 3,
    epochs: Annotated[int | None, typer.Option(help="Override the datasets' epochs (fewer = faster).")] = None,
    attack_seeds: Annotated[int, typer.Option(help="Attack seeds per level.")] = 2,
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """The whole flow on the embedded datasets (synthetic, mfeat pix+mor), then the leaderboard."""
    from mmbench.demo import DemoPlan, run_demo
    from mmbench.ui import training_progress

    start = time.perf_counter()
    table, paths = run_demo(DemoPlan(seeds, epochs, attack_seeds), results_dir, data_dir,
                            on_run=_report_run,
                            progress_factory=lambda label: training_progress(label, sys.stderr.isatty()))
    report(results_dir)
    _out(f"demo finished in {time.perf_counter() - start:.0f}s")


def main() -> None:
    try:
        app()
    except MMBenchError as e:
        if _state["debug"]:
            raise
        from mmbench.ui import console

        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
