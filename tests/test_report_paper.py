"""The paper layout of ``mmbench report``: one row per method, one column per dataset x attack x level,
our mean ± std with the published figure beside it, as a paper's noise table reads."""

from __future__ import annotations

import pytest

from mmbench.report import build_report, display_tables, terminal_tables, write_report
from tests.test_report import _fake_run

PROTOCOL = {"protocol": "qmf", "protocol_version": "2024.1-faithful", "fraction": 0.5}
PUBLISHED = [{"metric": "acc", "value": 55.0, "protocol": "qmf", "protocol_version": "2024.1-faithful",
              "attack": "gaussian", "fraction": 0.5, "level": 5, "source": "Paper, Table 1"}]


@pytest.fixture
def table(tmp_path):
    """joint and qmf on two datasets, attacked at eps 0 and 5; qmf has other options on mfeat (as QMF's
    RGB-D preset on NYUD2) and a published figure on synthetic at eps 5."""
    for seed in range(3):
        for dataset, sets in (("synthetic", ()), ("mfeat", ("method.rank_weight=0.1",))):
            _fake_run(tmp_path, "joint", seed, 0.8, {}, dataset=dataset, protocol=PROTOCOL,
                      attack={(0.0, 0): 0.8, (5.0, 0): 0.4 + 0.01 * seed})
            _fake_run(tmp_path, "qmf", seed, 0.8, {}, sets=sets, dataset=dataset, protocol=PROTOCOL,
                      published=PUBLISHED if dataset == "synthetic" else None,
                      attack={(0.0, 0): 0.8, (5.0, 0): 0.5 + 0.01 * seed})
    return build_report(tmp_path)


def test_rows_are_methods_and_columns_dataset_attack_level_with_the_published_figure(table):
    [paper] = [t for t in display_tables(table) if t.section == "paper"]
    curve = "qmf.v2024.1-faithful/gaussian(frac=0.5)"
    assert paper.headers == ["method", f"mfeat {curve}@0", f"mfeat {curve}@5", f"synthetic {curve}@0",
                             f"synthetic {curve}@5"]
    rows = {r[0].text: [c.text for c in r[1:]] for r in paper.rows}
    assert sorted(rows) == ["joint", "qmf"]  # qmf(rank_weight=0.1) on mfeat is the qmf row too
    assert rows["qmf"] == ["80.0 ± 0.0", "51.0 ± 1.0", "80.0 ± 0.0", "51.0 ± 1.0 (55.0)"]
    assert rows["joint"] == ["80.0 ± 0.0", "41.0 ± 1.0", "80.0 ± 0.0", "41.0 ± 1.0"]


def test_the_paper_layout_reaches_every_format(table, tmp_path):
    write_report(table, tmp_path / "out", ["md", "html", "latex"], plots=False)
    for name in ("leaderboard.md", "report.html", "leaderboard.tex"):
        assert "Paper layout" in (tmp_path / "out" / name).read_text(), name
    assert "51.0 ± 1.0 (55.0)" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert any(title.startswith("paper layout") for title, _ in terminal_tables(table))


def test_one_dataset_without_published_levels_has_no_paper_layout(tmp_path):
    for seed in range(2):
        _fake_run(tmp_path, "joint", seed, 0.8, {}, attack={(0.0, 0): 0.8, (5.0, 0): 0.4}, protocol=PROTOCOL)
    assert not [t for t in display_tables(build_report(tmp_path)) if t.section == "paper"]
