"""`ferhpo baseline`, run as the real command on tiny presets and tiny data."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import default_sigint, ferhpo_command, run_cli, space_text, write_folder
from test_cli import _assert_one_line_error

# The study's table: exact parameter counts, trainable + non-trainable.
REFERENCE_PARAMS = {
    "densenet-c0.3": 582_025,
    "densenet-c0.5": 723_891,
    "densenet-c0.7": 918_121,
    "resnet-v1-104": 1_647_975,
    "resnet-v2-155": 4_711_047,
}

TINY_PRESETS = """
[presets."tiny-densenet"]
protocol = "canonical"
reported_test_accuracy = 0.5
reported_params = 1
model = { family = "densenet", growth_rate = 4, num_blocks = 2, layers_per_block = 2, head = "gap" }
train = { optimizer = "rmsprop", batch_size = 16, epochs = 1 }

[presets."tiny-resnet"]
protocol = "seed-resnet"
reported_test_accuracy = 0.5
reported_params = 1
model = { family = "resnet", version = 2, depth = 11, base_filters = 8, head = "gap" }
train = { optimizer = "adam", batch_size = 16, epochs = EPOCHS }
"""


@pytest.fixture
def inputs(workdir) -> Path:
    """Tiny data (fer/) and a tiny preset table (presets.toml) in the working folder;
    studies/ lands there too."""
    write_folder(workdir / "fer")
    (workdir / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "2"))
    return workdir


def _baseline_args(workdir: Path, *args: str) -> list[str]:
    """`ferhpo baseline` on the inputs fixture's data, cache and preset table, then `args`."""
    inputs = ["--data", str(workdir / "fer"), "--cache-dir", str(workdir / "cache"), "--presets", str(workdir / "presets.toml")]
    return ["baseline", *inputs, *args]


def _baseline(workdir: Path, *args: str):
    return run_cli(*_baseline_args(workdir, *args), cwd=workdir)


def test_list_json_has_the_exact_reference_parameter_counts():
    result = run_cli("baseline", "--list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["name"]: r["params"] for r in rows} == REFERENCE_PARAMS
    for r in rows:
        assert r["reported_params"] == r["params"]
        assert 0.66 < r["reported_test_accuracy"] < 0.70
        assert r["epochs"] == 200


def test_list_prints_a_table():
    result = run_cli("baseline", "--list")
    assert result.returncode == 0, result.stderr
    assert "resnet-v2-155" in result.stdout and "4,711,047" in result.stdout


@pytest.mark.usefixtures("inputs")
def test_records_then_skips_then_forces(workdir):
    first = _baseline(workdir, "--budget", "full", "--json")
    assert first.returncode == 0, first.stderr
    runs = json.loads(first.stdout)
    assert [r["name"] for r in runs] == ["tiny-densenet", "tiny-resnet"]
    assert not any(r["skipped"] for r in runs)
    for r in runs:
        record = json.loads((workdir / r["record"]).read_text())
        folder = (workdir / r["record"]).parent
        for name in ("best.weights.h5", "test_predictions.npz", "learning_curve.png", "record.json"):
            assert (folder / name).is_file(), name
        assert not list(folder.glob(".tmp-*"))
        assert record["status"] == "complete" and record["kind"] == "baseline"
        assert record["data_fingerprint"] and record["environment"]["backend"] == "tensorflow"
        assert set(record["evaluation"]) >= {"val", "test", "test_public", "test_private"}
        test = record["evaluation"]["test"]
        assert test["n"] == 14 and len(test["confusion"]) == 7 and 0 <= test["macro_f1"] <= 1
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert len(record["history"][key]) == record["epochs_run"]
        assert record["params"] > 0 and record["wall_seconds"] > 0
    canonical = json.loads((workdir / runs[0]["record"]).read_text())
    assert canonical["selection_sees"] == ["test", "test_public"]

    again = _baseline(workdir, "--budget", "full", "--json")
    assert again.returncode == 0, again.stderr
    assert [r["skipped"] for r in json.loads(again.stdout)] == [True, True]
    assert "already finished" in again.stderr

    forced = _baseline(workdir, "--budget", "full", "--only", "tiny-resnet", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    (rerun,) = json.loads(forced.stdout)
    assert not rerun["skipped"] and rerun["run_id"] != runs[1]["run_id"]

    # A different budget is a different run.
    other = _baseline(workdir, "--budget", "full", "--epochs", "1", "--only", "tiny-resnet", "--json")
    assert [r["skipped"] for r in json.loads(other.stdout)] == [False]

    # Everything is in the Optuna storage too, one trial per run.
    import optuna

    study = optuna.load_study(study_name="baseline", storage=f"sqlite:///{workdir}/studies/ferhpo.db")
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[0].value == pytest.approx(runs[0]["best_val_accuracy"])


def _phases_add_up(record: dict) -> None:
    from ferhpo.phases import PHASES

    phases = record["phases"]
    assert sum(phases[n] for n in (*PHASES, "other")) == pytest.approx(phases["wall"], abs=0.05)
    assert all(phases[n] >= 0 for n in PHASES) and phases["train"] > 0 and phases["compile"] > 0
    assert phases["wall"] >= record["wall_seconds"]


@pytest.mark.usefixtures("inputs")
def test_space_reference_and_overrides_are_named_for_what_they_are(workdir):
    """`--space` trains the space's defaults as '<space>-reference' under the search's
    protocol; a preset changed by --set is named after the change and claims no reported
    accuracy; each record's phases add up to its wall time."""
    (workdir / "tiny.toml").write_text(space_text("tiny-v2"))  # the run is named after the file: tiny-reference
    result = _baseline(workdir, "--space", str(workdir / "tiny.toml"), "--budget", "smoke", "--json")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert run["name"] == "tiny-reference" and run["protocol"] == "holdout"
    assert run["reported_test_accuracy"] is None
    record = json.loads((workdir / run["record"]).read_text())
    assert record["model"]["depth"] == 11 and record["train"]["batch_size"] == 16
    _phases_add_up(record)
    assert record["phases"]["startup"] > 0 and record["phases"]["data"] > 0  # the command's first run

    changed = _baseline(
        workdir, "--only", "tiny-resnet", "tiny-densenet", "--set", "batch_size=8", "--seed", "2", "--budget", "smoke", "--json"
    )
    assert changed.returncode == 0, changed.stderr
    runs = json.loads(changed.stdout)
    assert [r["name"] for r in runs] == ["tiny-resnet+batch_size=8", "tiny-densenet+batch_size=8"]
    assert all(r["reported_test_accuracy"] is None for r in runs)
    second = json.loads((workdir / runs[1]["record"]).read_text())
    _phases_add_up(second)
    assert second["phases"]["startup"] == 0  # later runs of a command share its start-up

    same = _baseline(workdir, "--only", "tiny-resnet", "--seed", "2", "--precision", "float32", "--budget", "smoke", "--json")
    (seeded,) = json.loads(same.stdout)
    assert seeded["name"] == "tiny-resnet" and seeded["reported_test_accuracy"] == 0.5  # the same configuration

    both = _baseline(workdir, "--space", "resnet-cpu", "--only", "tiny-resnet")
    _assert_one_line_error(both, "--space and --only exclude each other")


@pytest.mark.usefixtures("inputs")
def test_text_output_has_one_summary_line_per_run(workdir):
    result = _baseline(workdir, "--budget", "smoke", "--only", "tiny-densenet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiny-densenet: smoke budget, 1 epoch(s), best val ")
    assert "epoch 1/1" in result.stderr  # per-epoch progress (not a terminal: one line per epoch)
    # with the epoch's measured time, the time left, and once, the estimate from that time
    assert re.search(r"epoch 1/1 .* s, left ~0:00:00 \(all runs ~0:00:00\)", result.stderr), result.stderr
    assert result.stderr.count("estimate (measured on tiny-densenet): ") == 1


@pytest.mark.usefixtures("inputs")
def test_ctrl_c_keeps_finished_runs_and_discards_the_partial_one(workdir):
    (workdir / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "500"))
    proc = subprocess.Popen(
        ferhpo_command(*_baseline_args(workdir, "--budget", "full")),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    stderr = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        stderr.append(line)
        if "tiny-resnet epoch 2/500" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    stderr.append(rest)
    assert proc.returncode == 130, "".join(stderr)
    assert "interrupted during tiny-resnet" in stderr[-1] and "kept in study 'baseline': tiny-densenet" in stderr[-1]
    assert "Traceback" not in "".join(stderr)
    folders = sorted(p.name for p in (workdir / "studies" / "baseline").iterdir())
    assert len(folders) == 1 and folders[0].startswith("tiny-densenet-full-")
    # Rerunning skips the finished preset.
    (workdir / "presets.toml").write_text(TINY_PRESETS.replace("EPOCHS", "1"))
    again = _baseline(workdir, "--budget", "full", "--only", "tiny-densenet")
    assert again.returncode == 0 and "already finished" in again.stdout


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--only", "densenet-c0.9"], "unknown preset 'densenet-c0.9'; known presets: densenet-c0.3, densenet-c0.5"),
        (["--epochs", "-3"], "argument --epochs: expected a positive integer, got -3"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["--only", "resnet-v1-104", "--set", "depth=103"], "ResNet v1 depth must be 6n\\+2.*got depth=103"),
        (["--only", "densenet-c0.5", "--set", "compression=1.5"], "compression must be in \\(0, 1\\]"),
        (["--set", "depth"], "--set expects FIELD=VALUE, got 'depth'"),
        (["--only", "resnet-v1-104", "--set", "colour=3"], "unknown override 'colour'"),
        (["--budget", "huge"], "argument --budget: invalid choice: 'huge'"),
        (["--protocol", "random"], "argument --protocol: invalid choice: 'random'"),
        (["--presets", "/nonexistent/presets.toml"], "preset table not found"),
    ],
)
def test_bad_options_exit_2_before_any_work(args, pattern, tmp_path):
    result = run_cli("baseline", "--data", str(tmp_path / "missing"), *args, cwd=tmp_path)
    _assert_one_line_error(result, pattern)
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    "storage,pattern",
    [
        ("not-a-url", "storage 'not-a-url' is not a URL"),
        ("sqlite:////proc/ferhpo/x.db", "cannot create the folder of storage"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot open storage postgresql://"),
    ],
)
@pytest.mark.usefixtures("inputs")
def test_bad_storage_exits_2(storage, pattern, workdir):
    result = _baseline(workdir, "--budget", "smoke", "--storage", storage)
    _assert_one_line_error(result, pattern)
