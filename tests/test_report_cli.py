"""`ferhpo report` as the real command, on a study written by the real baseline and search."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_SPACE, run_cli, write_folder
from ferhpo.data import CLASSES
from test_baseline import TINY_PRESETS
from test_cli import _assert_one_line_error

FIGURES = (
    "optimization_history.png",
    "intermediate_values.png",
    "param_importance.png",
    "parallel_coordinates.png",
    "learning_curves.png",
    "accuracy_vs_params.png",
    "confusion_matrix.png",
)


def _items():
    """10 training and 6 test images per class: 42 test images, enough for a paired test."""
    items, seed = [], 0
    for cls in CLASSES:
        for _ in range(10):
            items.append(("train", cls, "Training", seed))
            seed += 1
        for origin in ("PublicTest", "PrivateTest") * 3:
            items.append(("test", cls, origin, seed))
            seed += 1
    return items


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A tiny baseline study and a two-trial search on the same holdout split."""
    root = tmp_path_factory.mktemp("report-cli")
    data = write_folder(root / "fer", _items())
    (root / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "1"))
    (root / "tiny.toml").write_text(TINY_SPACE)
    baseline = run_cli(
        "baseline",
        "--data",
        str(data),
        "--presets",
        str(root / "presets.toml"),
        "--only",
        "tiny-resnet",
        "--budget",
        "smoke",
        "--protocol",
        "holdout",
        cwd=root,
    )
    assert baseline.returncode == 0, baseline.stderr
    search = run_cli(
        "search",
        "--space",
        str(root / "tiny.toml"),
        "--data",
        str(data),
        "--budget",
        "smoke",
        "--trials",
        "2",
        "--study",
        "s",
        cwd=root,
    )
    assert search.returncode == 0, search.stderr
    return root


def test_report_of_a_search_beside_the_baselines(study_dir):
    result = run_cli("report", "--study", "s", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    out = study_dir / "reports" / "s"
    for name in ("report.md", "report.html", "trials.csv", "trials.json", *FIGURES):
        assert (out / name).is_file(), name
    rows = json.loads((out / "trials.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    reported = sorted(r["test_accuracy"] for r in rows if r["kind"] == "reported")
    assert reported == [0.6627, 0.6652, 0.6828, 0.6909, 0.6934]
    trials = [r for r in rows if r["kind"] == "trial"]
    assert len(trials) == 2
    for row in trials:
        assert row["diff_best_reference_pts"] == pytest.approx(100 * (row["test_accuracy"] - 0.6934))
        assert row["verdict"] in ("beats", "ties", "loses")  # 42 paired test images: a real test
    assert "report written to reports/s/" in result.stdout
    html = (out / "report.html").read_text()
    assert "<img" in html and 'src="data:image/png;base64,' in html and 'src="http' not in html


def test_report_errors_are_one_line_and_write_nothing(study_dir):
    _assert_one_line_error(run_cli("report", "--study", "nosuch", cwd=study_dir), "no study 'nosuch'")
    _assert_one_line_error(run_cli("report", "--study", "s", "--format", "pdf", cwd=study_dir), "unknown report format 'pdf'")
    assert not (study_dir / "reports" / "nosuch").exists()
