"""The ``mmbench`` command line. It parses options and calls the library; torch loads lazily."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mmbench.config import short_repr
from mmbench.errors import MMBenchError

# plain help (rich_markup_mode=None): "[@VERSION]" and other brackets in help texts are shown as written,
# and flags are listed without a "<bool>" value
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Benchmark multimodal learning under modality imbalance and data noise.",
                  epilog="Examples:\n\n\b\n  mmbench demo\n  mmbench list methods | grep ogm\n"
                         "  mmbench info cremad\n  mmbench COMMAND --help")
_state = {"debug": False, "interrupted": "interrupted"}  # interrupted: the line Ctrl-C prints
DEVICE_HELP = "auto (cuda when available, else cpu), cpu or cuda[:N]."
EXAMPLES = {
    "prepare": ["mmbench prepare mfeat", "mmbench prepare synthetic --name synthetic_noisy -o degrade_fraction=[0,0.3]",
                "mmbench prepare cremad --root /data/CREMA-D --preset cpu"],
    "train": ["mmbench train --dataset mfeat --modalities pix,mor --method ogm_ge --seed 0 --seed 1",
              "mmbench train --recipe mfeat/ogm_ge --set method.alpha=0.3",
              "mmbench train --dataset cremad --method ogm_ge --preset cpu"],
    "attack": ["mmbench attack --all --noise gaussian --levels 0,1,2 --attack-seeds 2",
               "mmbench attack RUN_ID --protocol multibench --modalities mor", "mmbench attack RUN_ID --protocol qmf@1"],
    "report": ["mmbench report", "mmbench report --results-dir runs_b --format latex,json --out paper/",
               "mmbench report --dataset mfeat --metric acc,'gaussian@*' > leaderboard.txt"],
    "probe": ["mmbench probe RUN_ID"],
    "sweep": ["mmbench sweep benchmarks/mfeat_all_methods.yaml --dry-run",
              "mmbench sweep grid.yaml --executor process --max-parallel 2"],
    "list": ["mmbench list", "mmbench list methods 'o*'", "mmbench list datasets -v"],
    "info": ["mmbench info cremad", "mmbench info mfeat"],
    "demo": ["mmbench demo", "mmbench demo --seeds 1 --epochs 5"],
}


def _examples(command: str) -> str:
    """A command's help epilog ("\\b" keeps click from rewrapping the lines)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {e}" for e in EXAMPLES[command])


Preset = Annotated[str | None, typer.Option(help="cpu: the dataset's CPU preset from the catalog (small inputs and "
                                                "encoders; mmbench info DATASET shows it); flags given too win.")]
DataDir = Annotated[str | None, typer.Option("--data-dir", help="Prepared datasets ($MMBENCH_DATA, else ./data).")]
ResultsDir = Annotated[str, typer.Option("--results-dir", help="Run folders and leaderboards.")]


def _split(values: str | None, option: str) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; an empty or repeated entry is an error naming ``option``."""
    if values is None:
        return None
    items = [v.strip() for v in values.split(",")]
    if not all(items):
        raise MMBenchError(f"{option} {short_repr(values)} has an empty entry; give comma-separated names, e.g. a,b")
    if len(set(items)) < len(items):
        raise MMBenchError(f"{option} {short_repr(values)} names an entry twice; give each once")
    return items


def _floats(values: str, option: str) -> list[float]:
    try:
        return [float(v) for v in _split(values, option)]
    except ValueError:
        raise MMBenchError(f"{option} must be comma-separated numbers, e.g. 0,0.5,1; got {short_repr(values)}") from None


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _out(text: str = "") -> None:
    """A result line on stdout (``mmbench ... > file`` keeps it)."""
    from mmbench.ui import out

    out.print(text, soft_wrap=True)


def _note(text: str) -> None:
    """A diagnostic line (warning, skipped item) on stderr."""
    from mmbench.ui import console

    console.print(text, soft_wrap=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        from mmbench import __version__

        print(f"mmbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    _state["debug"] = debug
    _state["interrupted"] = "interrupted"


@app.command(epilog=_examples("prepare"))
def prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset builder, e.g. synthetic, mfeat, csv_views.")],
    root: Annotated[str | None, typer.Option(help="Folder with the raw files (not needed for embedded datasets).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the prepared dataset (default: DATASET).")] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated modalities/views to keep.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Builder option key=value (repeatable).")] = None,
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if it exists.")] = False,
    preset: Preset = None,
    verify: Annotated[bool, typer.Option(help="Prepare nothing: hash every file of the prepared dataset in full "
                                         "against meta.json (runs check size and time against the last full hash).")
                      ] = False,
) -> None:
    """Turn raw files into a prepared dataset (meta.json + one .npy per split and modality)."""
    from mmbench.config import parse_set
    from mmbench.data.store import load_meta, prepared_path, verify_prepared
    from mmbench.data.store import prepare as do_prepare

    if verify:
        if force or root or option or modalities:
            raise MMBenchError("--verify checks a dataset already prepared: give it without --force, --root, "
                               "--option or --modalities")
        start = time.perf_counter()
        files, size = verify_prepared(name or dataset, data_dir)
        _out(f"verified [bold]{escape(name or dataset)}[/]: {files} files, {size / 1e9:.2f} GB match meta.json "
             f"({time.perf_counter() - start:.1f}s)")
        return

    options = {**_preset(dataset, preset, "prepare"), **dict(parse_set(o) for o in option or [])}
    existed = (prepared_path(name or dataset, data_dir) / "meta.json").exists() and not force
    path = do_prepare(dataset, root, data_dir, name, _split(modalities, "--modalities"), options, force)
    meta = load_meta(path.name, data_dir)
    mods = ", ".join(f"{m} {s.kind}{list(s.shape)}" for m, s in meta.modalities.items())
    verb = "already prepared (use --force to redo)" if existed else "prepared"
    _out(f"{verb} [bold]{meta.name}[/] in {path}: {meta.num_classes} classes; {escape(mods)}; "
         f"train/val/test = {meta.splits['train']}/{meta.splits['val']}/{meta.splits['test']}")


@app.command(epilog=_examples("train"))
def train(
    dataset: Annotated[str | None, typer.Option(help="Prepared dataset name.")] = None,
    method: Annotated[str | None, typer.Option(help="Method name (mmbench list methods).")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe YAML file.")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Seed (repeat for several runs).", min=0, max=2**32 - 1)] = None,
    modalities: Annotated[str | None, typer.Option(help="Comma-separated subset of modalities.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.", min=1)] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config key: key=value.")] = None,
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
    force: Annotated[bool, typer.Option(help="Train again even if the run is complete.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue a partial run from its last epoch checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    preset: Preset = None,
) -> None:
    """Train with a method; pick the checkpoint on val; evaluate on test; write a run folder."""
    from mmbench.config import resolve
    from mmbench.run import train_run
    from mmbench.ui import training_progress

    _state["interrupted"] = "interrupted; run the same command with --resume to continue from the last finished epoch"
    for s in seed or [None]:
        flags = {"data.dataset": dataset, "method.name": method, "seed": s, "data.modalities": _split(modalities, "--modalities"),
                 "optim.epochs": epochs, "device": device, "output.results_dir": results_dir,
                 "output.data_dir": data_dir}
        cfg = resolve(recipe, flags, set_)
        if preset:  # the preset's settings sit under the flags given (--epochs 5 beats the preset's epochs)
            given = {k for k, v in flags.items() if v is not None}
            sets = [s for s in _preset(cfg.data.dataset, preset, "train") if s.partition("=")[0] not in given]
            cfg = resolve(recipe, flags, sets + list(set_ or []))
        label = f"{cfg.data.dataset} {cfg.method.name} seed {cfg.seed}"
        with training_progress(label, enabled=not quiet and sys.stderr.isatty()) as progress:
            folder, trained = train_run(cfg, force=force, progress=progress, resume=resume)
        _report_run(folder, trained)


def _preset(dataset: str, preset: str | None, step: str):
    """The catalog's ``cpu_preset`` for ``step``: prepare options (a dict) or train ``--set`` items (a list)."""
    empty = {} if step == "prepare" else []
    if preset is None:
        return empty
    if preset != "cpu":
        raise MMBenchError(f"unknown --preset {preset!r}; available: cpu")
    from mmbench.config import load_catalog

    entry = load_catalog().get(dataset) or {}
    if "cpu_preset" not in entry:
        return empty  # embedded datasets are CPU-sized already
    return entry["cpu_preset"].get(step) or empty


def _report_run(folder, trained: bool) -> None:
    s = folder.read_summary()
    heads = "  ".join(f"{k[4:]} {v:.3f}" for k, v in s["test"].items() if k.startswith("acc_") and "masked" not in k)
    verb = "trained" if trained else "complete, skipped"
    _out(f"{verb} [bold]{s['run_id']}[/]: test acc {s['test']['acc']:.3f}  f1 {s['test']['f1']:.3f}"
         f"{'  heads: ' + heads if heads else ''}  (best epoch {s['best_epoch']}, {s['train_seconds']:.1f}s)")


@app.command(epilog=_examples("attack"))
def attack(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids or run folders.")] = None,
    noise: Annotated[str, typer.Option(help="Comma-separated attacks (no default: name it), e.g. gaussian.")] = "",
    protocol: Annotated[str | None, typer.Option(
        help="A published protocol NAME[@VERSION][:VARIANT] (qmf, qmf_rgbd, multibench; mmbench list protocols) "
             "or a protocol YAML file, instead of --noise.")] = None,
    levels: Annotated[str | None, typer.Option(
        help="Comma-separated levels (default: 0,0.5,1,2, or the protocol's).")] = None,
    modalities: Annotated[str | None, typer.Option(help="Modalities to corrupt (default: all; with --protocol: "
                                                        "restricts it).")] = None,
    attack_seeds: Annotated[int, typer.Option(help="Number of attack seeds (0..N-1).", min=1)] = 1,
    fraction: Annotated[float | None, typer.Option(help="Share of test samples corrupted (default 1).",
                                                  min=0, max=1)] = None,
    independent: Annotated[bool | None, typer.Option(
        "--independent/--same-samples",
        help="Corrupt each modality on its own random samples, or all on the same samples "
             "(default: same samples; a protocol's own choice).")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Attack every complete run in --results-dir.")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """Evaluate trained runs on corrupted test data; rows go to each run's attack.csv."""
    from mmbench.attacks.plan import AttackPlan
    from mmbench.attacks.runner import run_plan
    from mmbench.results import resolve_run, run_folders

    plan = AttackPlan.request(_split(noise or None, "--noise"), protocol or None,  # checked before any run is loaded
                              levels=_floats(levels, "--levels") if levels is not None else None,
                              seeds=range(attack_seeds), modalities=_split(modalities, "--modalities"),
                              fraction=fraction, independent=independent)
    if not runs and not all_runs:
        raise MMBenchError("give run ids or folders, or --all to attack every run in --results-dir")
    folders = run_folders(results_dir) if all_runs else [resolve_run(r, results_dir) for r in runs]
    if not folders:
        raise MMBenchError(f"no complete runs in {results_dir}/runs to attack; train some runs first "
                           "(or give --results-dir)")
    from mmbench.ui import attack_progress

    skipped = 0
    with attack_progress(len(folders), sys.stderr.isatty()) as progress:
        for folder in folders:
            try:
                rows = run_plan(folder, plan, device, data_dir, progress.start(folder.run_id) if progress else None)
            except MMBenchError as e:
                if not all_runs:
                    raise
                skipped += 1  # this noise does not fit this run (e.g. its modality kinds): say so and go on
                _note(f"skipped {escape(folder.run_id)}: {escape(str(e))}")
                continue
            _attacked(folder, rows)
    if skipped == len(folders):
        raise MMBenchError(f"the attack applies to none of the {len(folders)} runs in {results_dir}/runs")


def _attacked(folder, rows: list[dict]) -> None:
    by_level = {}
    for r in rows:
        name = r["attack"] if r["modalities"] == "all" else f"{r['attack']}:{r['modalities']}"
        by_level.setdefault((name, r["level"]), []).append(r["acc"])
    cells = "  ".join(f"{a}@{lv:g} {sum(v) / len(v):.3f}" for (a, lv), v in by_level.items())
    _out(f"attacked [bold]{folder.run_id}[/]: {escape(cells)}")


@app.command(epilog=_examples("report"))
def report(
    results: Annotated[str | None, typer.Argument(help="Results folder with runs/ (or --results-dir).")] = None,
    results_dir: Annotated[str | None, typer.Option("--results-dir", help="Results folder with runs/ (default: "
                                                    "results).")] = None,
    out: Annotated[str | None, typer.Option(help="Where to write the files (default: RESULTS_DIR).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only these datasets: comma-separated prefixes or wildcards.")] = None,
    method: Annotated[str | None, typer.Option(help="Only these methods: comma-separated prefixes or wildcards.")] = None,
    metric: Annotated[str | None, typer.Option(help="Metrics to show, comma-separated names or wildcards "
                                                    "(acc, f1, 'probe_*', 'gaussian@*'); the first ranks the rows.")] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Row keys, default dataset,method; any config "
                                                 "key too, e.g. dataset,method,model.fusion.")] = None,
    format_: Annotated[list[str] | None, typer.Option("--format", help="csv, md, html, latex, json; repeat or "
                                                      "comma-separate (default csv,md,html).")] = None,
    reference: Annotated[str, typer.Option(help="Method the others are compared with, paired by seed.")] = "joint",
    ci: Annotated[str, typer.Option(help="95% interval of the mean over seeds: t or bootstrap.")] = "t",
    alpha: Annotated[float, typer.Option(help="Significance level of the † marker (Holm-corrected paired t-test).",
                                         min=0, max=1)] = 0.05,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the plots (plots/*.png, embedded in the HTML).")] = True,
) -> None:
    """Leaderboards with mean ± std, 95% intervals and paired tests over seeds; plots; CSV, Markdown, HTML, LaTeX, JSON."""
    from mmbench.report import ReportOptions, build_report, parse_formats, terminal_tables, write_report
    from mmbench.results import status_summary
    from mmbench.ui import print_table

    if results and results_dir and results != results_dir:
        raise MMBenchError(f"two results folders given: {results!r} and --results-dir {results_dir!r}; give one")
    results_dir = results or results_dir or "results"
    formats = parse_formats(format_)
    options = ReportOptions(dataset=dataset, method=method, metrics=_split(metric, "--metric"),
                            group_by=_split(group_by, "--group-by"), reference=reference, ci=ci, alpha=alpha)
    if not Path(results_dir).exists():
        raise MMBenchError(f"results folder {results_dir!r} does not exist; train some runs first")
    result = build_report(results_dir, options)
    if result.empty:
        left = status_summary(result.statuses)
        raise MMBenchError(f"no complete runs in {results_dir}/runs" + (" match the filters" if dataset or method else "")
                           + (f" ({left}; see each run's status.json)" if left else "") + "; train some runs first")
    paths = write_report(result, out or results_dir, formats, plots=plots)
    for title, table in terminal_tables(result):
        print_table(table, title)
    for warning in result.warnings:
        _note(f"[yellow]warning:[/] {escape(warning)}")
    _out("wrote " + ", ".join(str(p) for p in paths if p.parent.name != "plots")
         + (f" and {sum(p.parent.name == 'plots' for p in paths)} plots" if any(p.parent.name == "plots" for p in paths) else ""))


@app.command(epilog=_examples("probe"))
def probe(
    runs: Annotated[list[str], typer.Argument(help="Run ids or run folders.")],
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """Linear-probe each frozen encoder of trained runs (C chosen on val, accuracy on test)."""
    from mmbench.results import resolve_run
    from mmbench.run import probe_run

    for ref in runs:
        folder = resolve_run(ref, results_dir)
        probes = probe_run(folder, device, data_dir)
        cells = "  ".join(f"{m} {p['test']:.3f} (C={p['C']:g})" for m, p in probes.items())
        _out(f"probed [bold]{folder.run_id}[/]: {escape(cells)}")


@app.command(epilog=_examples("sweep"))
def sweep(
    grid: Annotated[str, typer.Argument(help="Grid YAML: datasets, methods (parameter lists), seeds, set, grid, attack.")],
    executor: Annotated[str, typer.Option(help="inline, process or ray (mmbench list executors).")] = "inline",
    max_parallel: Annotated[int | None, typer.Option(help="Runs at once (process: workers; ray: tasks in flight).",
                                                      min=1)] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster: auto or ray://HOST:PORT (default: a local instance).")] = None,
    shared_fs: Annotated[bool, typer.Option("--shared-fs/--no-shared-fs", help="Ray workers write the results directory "
                                            "(shared filesystem), or return the files for the driver to write.")] = True,
    retries: Annotated[int, typer.Option(help="Try a failed run again up to N times (diverged runs are not retried).",
                                          min=0)] = 0,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="Continue partial runs from their last epoch, or "
                                         "train them from the start.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and how many are done; run nothing.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key in every run: key=value.")] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP + " For every run.")] = None,
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
    quiet: Annotated[bool, typer.Option(help="No live progress bar (one line per finished run).")] = False,
) -> None:
    """Run a grid of datasets x methods x seeds; complete runs are skipped, partial ones resumed."""
    from mmbench.sweep import (
        STATE_ORDER,
        SweepProgress,
        check_options,
        expand,
        grid_states,
        make_executor,
        run_sweep,
        verify_datasets,
        write_manifest,
    )
    from mmbench.ui import console

    _state["interrupted"] = "interrupted; run the same sweep again to continue (complete runs are skipped)"
    check_options(executor, max_parallel, address, shared_fs, retries)
    runs = expand(grid, results_dir, data_dir, list(set_ or []), device, prepare=not dry_run)
    states = grid_states(runs)
    counts: dict[str, int] = {}
    for _, state in states:
        counts[state] = counts.get(state, 0) + 1
    dup = f" ({runs.duplicates} duplicate grid points dropped)" if runs.duplicates else ""
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: STATE_ORDER.index(kv[0])))
    pending = [r for r, s in states if s not in ("done", "diverged")]
    if dry_run:
        import pandas as pd

        from mmbench.ui import rich_table

        attacked = any(r.attacks for r in runs.runs)
        table = pd.DataFrame([{"run_id": r.run_id, "run": r.label, "state": s,
                               **({"attack": "; ".join(p.describe() for p in r.attacks) or "–"} if attacked else {})}
                              for r, s in states])
        console.print(rich_table(table, f"{len(runs.runs)} runs in {grid}"))
        console.print(f"{len(runs.runs)} runs{dup}: {summary}; {len(pending)} to run", highlight=False)
        if runs.unprepared:
            console.print(f"not prepared: {', '.join(runs.unprepared)} (listed without their data: run ids change "
                          "once prepared; run mmbench prepare NAME --root RAW_DIR first)", highlight=False)
        return
    verify_datasets(runs)
    write_manifest(runs, results_dir, {"executor": executor, "max_parallel": max_parallel, "address": address,
                                       "shared_fs": shared_fs, "retries": retries})
    ex = make_executor(executor, max_parallel, address, shared_fs)
    try:
        warnings = ex.check_resources(pending)
    except MMBenchError:
        ex.close()
        raise
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    console.print(f"sweep {grid}: {len(runs.runs)} runs{dup}: {summary}; running {len(pending)} on {executor}"
                  f" ({ex.capacity} at a time)", highlight=False)
    with SweepProgress(len(pending), not quiet and sys.stderr.isatty()) as progress:
        report = run_sweep(runs, ex, retries, resume, on_event=progress)
    console.print(f"sweep finished in {report.seconds:.0f}s: {report.done} done ({report.complete} now, "
                  f"{report.skipped} before), {report.failed} failed, {report.diverged} diverged"
                  + (f", {report.retried} retries" if report.retried else "")
                  + (f"; failures are recorded in each run's status.json under {results_dir}/runs"
                     if report.failed or report.diverged else ""), highlight=False)
    if report.failed:
        raise typer.Exit(1)


@app.command("list", epilog=_examples("list"))
def list_(
    kind: Annotated[str | None, typer.Argument(help="methods, datasets, attacks, encoders, fusions, protocols, executors.")] = None,
    pattern: Annotated[str | None, typer.Argument(help="Wildcard filter, e.g. 'o*'.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show defaults (imports the components).")] = False,
) -> None:
    """Show every registered name with its one-line description (and defaults with -v)."""
    from rich.table import Table

    from mmbench.registry import REGISTRIES, unknown_name_message
    from mmbench.ui import out

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
        out.print(table)


def _defaults(obj) -> str:
    import dataclasses

    for attr in ("Params", "Options"):
        cls = getattr(obj, attr, None)
        if cls is not None and dataclasses.is_dataclass(cls):
            return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cls()).items()) or "-"
    kinds = getattr(obj, "kinds", None)
    return f"kinds: {', '.join(kinds)}" if kinds else "-"


@app.command(epilog=_examples("demo"))
def demo(
    seeds: Annotated[int, typer.Option(help="Training seeds per method.", min=1)] = 3,
    epochs: Annotated[int | None, typer.Option(help="Override the datasets' epochs (fewer = faster).", min=1)] = None,
    attack_seeds: Annotated[int, typer.Option(help="Attack seeds per level.", min=1)] = 2,
    data_dir: DataDir = None,
    results_dir: ResultsDir = "results",
) -> None:
    """The whole flow on the embedded datasets (synthetic, mfeat pix+mor), then the leaderboard."""
    from mmbench.demo import DemoPlan, run_demo
    from mmbench.ui import training_progress

    start = time.perf_counter()
    run_demo(DemoPlan(seeds, epochs, attack_seeds), results_dir, data_dir, on_run=_report_run,
             progress_factory=lambda label: training_progress(label, sys.stderr.isatty()))
    report(results_dir=results_dir)
    _note(f"demo finished in {time.perf_counter() - start:.0f}s")


@app.command(epilog=_examples("info"))
def info(dataset: Annotated[str, typer.Argument(help="A dataset of the catalog (mmbench list datasets).")]) -> None:
    """Where a dataset comes from and how to prepare it: source, licence, citation, raw layout, splits, pitfalls."""
    from mmbench.data.catalog import describe

    _out(escape(describe(dataset)))


def _error(text: str) -> None:
    from mmbench.ui import console

    console.print(f"[red]error:[/] {escape(text)}", soft_wrap=True, highlight=False)


def main() -> None:
    """The ``mmbench`` entry point. A user error (a bad option, value, name or file) prints one
    ``error:`` line and exits with code 2; Ctrl-C prints one line saying how to continue and exits
    with code 130 (128 + SIGINT, the shell's convention); ``--debug`` shows the traceback instead."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors (bad option, value or command)
        ctx, message = getattr(e, "ctx", None), e.format_message().rstrip(".")
        if message:  # empty when the help was shown (no arguments)
            _error(f"{message}; see {ctx.command_path if ctx else 'mmbench'} --help")
        code = getattr(e, "exit_code", 2)
    except MMBenchError as e:
        if _state["debug"]:
            raise
        _error(str(e))
        code = 2
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # typer turns a KeyboardInterrupt inside a command into Exit(130)
        from mmbench.ui import console

        console.print(f"[yellow]{escape(_state['interrupted'])}[/]", soft_wrap=True, highlight=False)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
