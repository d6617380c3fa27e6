"""The full FER2013 at ../shared/fer2013 (or $FERHPO_TEST_DATA); skipped when absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from ferhpo.data import load_fer2013
from ferhpo.splits import make_splits

pytestmark = pytest.mark.real_data

# Published in the dataset's README (facts of the data, not measurements of ours).
TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171}
TEST = {"angry": 958, "disgust": 111, "fear": 1024, "happy": 1774, "neutral": 1233, "sad": 1247, "surprise": 831}
CHECKSUM = "6298fbe23b47162156fa77de7a39d80d72155b9f4baeb82f11ce05c5a2c19141"


@pytest.fixture(scope="module")
def summaries(real_data, tmp_path_factory):
    """Two `ferhpo data summary --json` runs on one fresh cache: cold, then warm."""
    cache = tmp_path_factory.mktemp("real-cache")
    runs = []
    for _ in range(2):
        result = run_cli("data", "summary", "--data", str(real_data), "--cache-dir", str(cache), "--json")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout))
    return runs


def test_counts_match_the_dataset_readme(summaries):
    info = summaries[0]
    assert info["format"] == "folder"
    assert info["counts"]["train"] == TRAIN and info["counts"]["test"] == TEST
    assert info["totals"]["train"] == 28_709 and info["totals"]["test"] == 7_178
    assert info["totals"]["public_test"] == info["totals"]["private_test"] == 3_589
    assert info["converted"] == 0 and info["skipped"] == 0


def test_fingerprint_is_the_readme_checksum(summaries):
    assert summaries[0]["fingerprint"] == summaries[1]["fingerprint"] == CHECKSUM


def test_second_summary_is_served_from_the_cache(summaries):
    # The load time itself is measured in benchmarks/, not asserted here.
    assert summaries[0]["cache"]["hit"] is False
    assert summaries[1]["cache"]["hit"] is True
    assert summaries[1]["cache"]["path"] == summaries[0]["cache"]["path"]


def test_protocol_sizes_on_the_full_dataset(real_data, summaries):
    data = load_fer2013(real_data, summaries[0]["cache"]["path"].rsplit("/", 1)[0])
    assert data.info.cache_hit
    sizes = {p: make_splits(data, p, seed=0).sizes() for p in ("seed-densenet", "seed-resnet", "holdout", "canonical")}
    assert sizes["seed-densenet"]["val"] == 7_178
    assert sizes["seed-resnet"]["val"] == round(0.2 * 28_709)
    assert sizes["holdout"]["val"] == sum(round(0.1 * n) for n in TRAIN.values())
    assert sizes["canonical"]["val"] == 3_589
    for s in sizes.values():
        assert s["test"] == 7_178 and s["test_public"] == s["test_private"] == 3_589
    holdout = make_splits(data, "holdout", seed=0)
    fractions = np.bincount(data.labels[holdout.val], minlength=7) / np.bincount(data.labels[~data.is_test], minlength=7)
    assert np.allclose(fractions, 0.1, atol=0.002)


def test_baseline_smoke_on_real_data_writes_a_complete_record(real_data, summaries, tmp_path):
    cache = summaries[0]["cache"]["path"].rsplit("/", 1)[0]
    result = run_cli(
        "baseline",
        "--budget",
        "smoke",
        "--only",
        "resnet-v1-104",
        "--data",
        str(real_data),
        "--cache-dir",
        cache,
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    record = json.loads((tmp_path / run["record"]).read_text())
    assert record["run"] == "resnet-v1-104" and record["status"] == "complete"
    assert record["params"] == 1_647_975 and record["reported_test_accuracy"] == 0.6652
    assert record["data_fingerprint"] == CHECKSUM and record["protocol"] == "seed-resnet"
    assert record["budget"]["name"] == "smoke" and record["epochs_run"] == 1
    assert record["train_images"] == 128 and record["selection_sees"] == []
    ev = record["evaluation"]
    assert ev["test"]["n"] == 256 and ev["test_public"]["n"] + ev["test_private"]["n"] == 256
    assert len(ev["test"]["confusion"]) == 7 and set(ev["test"]["per_class_recall"]) == set(TRAIN)
    assert {"backend", "keras", "python"} <= set(record["environment"])
    folder = (tmp_path / run["record"]).parent
    assert {p.name for p in folder.iterdir()} == {"best.weights.h5", "learning_curve.png", "record.json", "test_predictions.npz"}
    preds = np.load(folder / "test_predictions.npz")
    assert len(preds["predictions"]) == 256 and str(preds["files"][0]).startswith("test/")
