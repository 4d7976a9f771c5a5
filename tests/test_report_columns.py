"""Every attack level measured reaches the report's tables: per-modality curves keep their level 0,
also when that level is the metric ``--metric`` ranks by (in the files and in the terminal)."""

from __future__ import annotations

import pandas as pd
import pytest

from mmbench.report import ReportOptions, build_report, display_tables, terminal_tables
from tests.test_report import _fake_run

LEVELS = (0.0, 0.5, 2.0)
CURVES = ("all", "image", "vector")  # modalities attacked: all at once, then each one alone


@pytest.fixture
def results(tmp_path):
    """joint and qmf, 3 seeds, gaussian on all modalities and on each one alone, levels 0, 0.5 and 2."""
    for seed in range(3):
        for method, acc in (("joint", 0.8), ("qmf", 0.82)):
            folder = _fake_run(tmp_path, method, seed, acc, {})
            rows = [{"attack": "gaussian", "modalities": mod, "level": lv, "attack_seed": s,
                     "acc": acc - lv * (0.1 + 0.05 * i) - 0.001 * s}
                    for i, mod in enumerate(CURVES) for lv in LEVELS for s in range(2)]
            pd.DataFrame(rows).to_csv(folder / "attack.csv", index=False)
    return tmp_path


def _level_columns() -> set[str]:
    return {f"{'gaussian' if m == 'all' else f'gaussian:{m}'}@{lv:g}" for m in CURVES for lv in LEVELS}


@pytest.mark.parametrize("metrics", [None, ["gaussian:*"], ["gaussian:image@*"], ["gaussian*"]])
def test_every_attack_level_is_a_column_of_the_robustness_table(results, metrics):
    report = build_report(results, ReportOptions(metrics=metrics))
    measured = set(report.stats.loc[report.stats["kind"] == "attack", "metric"])
    assert measured <= _level_columns() and measured  # the rows chosen were read
    [robust] = [t for t in display_tables(report) if t.section == "robustness"]
    assert measured <= set(robust.headers), sorted(measured - set(robust.headers))
    if metrics:  # levels chosen with --metric are shown in the terminal too, the ranked one in the leaderboard
        tables = dict(terminal_tables(report))
        shown = {c for title, df in tables.items() if "robustness" in title for c in df.columns}
        assert measured <= shown, sorted(measured - shown)
        leaderboard = next(df for title, df in tables.items() if "leaderboard" in title)
        assert report.primary in leaderboard.columns


def test_the_default_terminal_robustness_table_summarises_curves(results):
    tables = dict(terminal_tables(build_report(results)))
    robust = next(df for title, df in tables.items() if "robustness" in title)
    assert "gaussian:image clean" in robust.columns and not [c for c in robust.columns if "@" in c]
