"""`ferhpo export` and `ferhpo.deploy`: finished runs rebuilt, written as .keras, SavedModel
and ONNX, and loaded back by plain Keras, TensorFlow and onnxruntime without ferhpo.

A tiny study (a DenseNet with dropout and a ResNet, one smoke epoch each, trained with
shift, rotation, zoom, flip and erasing layers) is trained once for the module, and
one ensemble of both with flip averaging is exported in each format: the hardest
case for an exporter (two cores, a mirror, three averages, no augmentation left).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import tiny_items, write_folder
from ferhpo import runs, store, training
from ferhpo.config import BUDGETS, DenseNetConfig, ResNetConfig, TrainConfig
from ferhpo.data import CLASSES, load_fer2013
from ferhpo.deploy import DeployError, export, rebuild
from ferhpo.errors import ConfigError, FerhpoError

FORMATS = ("keras", "saved_model", "onnx")
STUDY = "tiny"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two complete trials with weights, and a pruned one, in a SQLite study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("export")
    data = load_fer2013(write_folder(root / "fer", tiny_items(per_class=10)), root / "cache")
    storage = f"sqlite:///{root}/studies/ferhpo.db"
    optuna_study = store.open_study(STUDY, storage)
    train = TrainConfig(epochs=1, batch_size=16, rotation=10.0, zoom=0.1, erasing=0.5)
    models = (
        DenseNetConfig(growth_rate=4, num_blocks=2, layers_per_block=2, head="gap", dropout=0.2),
        ResNetConfig(version=1, depth=8, base_filters=16, head="gap"),
    )
    records = [
        runs.train_and_record(
            optuna_study,
            name=f"trial-{n}",
            kind="trial",
            model=model,
            train=train,
            data=data,
            protocol="holdout",
            budget=BUDGETS["smoke"],
            root=root / "studies",
        )
        for n, model in enumerate(models)
    ]
    store.add_record(optuna_study, dataclasses.replace(records[0], run="trial-2", status="pruned"))
    test = np.flatnonzero(data.is_test)
    return SimpleNamespace(
        root=root,
        studies=root / "studies",
        storage=storage,
        study=optuna_study,
        data=data,
        records=records,
        test_images=data.images[test][..., None],
        test_files=data.files[test],
    )


@pytest.fixture(scope="module")
def exports(study):
    """Both trials, flip averaging on, written in each format; and the in-memory model."""
    ranked = rebuild.select_records(study.study, top=2, root=study.studies)
    folders = {}
    for fmt in FORMATS:
        if fmt == "onnx" and not _importable("tf2onnx", "onnx", "onnxruntime"):
            continue
        folders[fmt] = study.root / f"out-{fmt}"
        export.export(
            ranked, fmt=fmt, out=folders[fmt], tta_hflip=True, study_name=STUDY, storage=study.storage, root=study.studies
        )
    model = rebuild.inference_model(ranked, tta_hflip=True, root=study.studies)
    return SimpleNamespace(folders=folders, model=model, records=ranked)


def _importable(*names: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in names)


# A fresh interpreter with plain Keras / TensorFlow / onnxruntime: no ferhpo anywhere.
LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    folder, fmt, images, out = sys.argv[1:]
    x = np.load(images)
    card = json.load(open(f"{folder}/model_card.json"))
    target = f"{folder}/{card['file']}"
    extra = {}
    if fmt == "keras":
        import keras

        model = keras.saving.load_model(target)  # safe mode: built-in layers only
        call = lambda: model.predict(x, verbose=0)
        extra["train_mode"] = keras.ops.convert_to_numpy(model(x, training=True))
        extra["infer_mode"] = keras.ops.convert_to_numpy(model(x, training=False))

        def walk(layer):
            yield layer
            for sub in getattr(layer, "layers", []):
                yield from walk(sub)

        extra["layers"] = np.array([f"{type(l).__name__}:{l.name}" for l in walk(model)])
    elif fmt == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(target).signatures["serving_default"]
        call = lambda: list(serve(tf.constant(x)).values())[0].numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
        call = lambda: session.run(None, {session.get_inputs()[0].name: x})[0]
    first, second = call(), call()
    leaked = sorted(m for m in sys.modules if m == "ferhpo" or m.startswith("ferhpo."))
    np.savez(out, first=first, second=second, leaked=np.array(leaked, dtype=str), **extra)
    """
)


@pytest.fixture(scope="module")
def loaded(study, exports, tmp_path_factory):
    """Each export's probabilities on the test images, from a process without ferhpo."""
    work = tmp_path_factory.mktemp("loader")
    images = work / "images.npy"
    np.save(images, study.test_images)
    results = {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for fmt, folder in exports.folders.items():
        out = work / f"{fmt}.npz"
        result = subprocess.run(
            [sys.executable, "-c", LOADER, str(folder), fmt, str(images), str(out)],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results[fmt] = dict(np.load(out))
    return results


# --------------------------------------------------------------------------- rebuilding runs


def test_select_records_ranks_finished_runs_by_validation(study):
    complete = study.records
    best_first = sorted(complete, key=lambda r: -r.best_val_accuracy)  # stable: ties keep recording order
    assert [r.run for r in rebuild.select_records(study.study, top=2, root=study.studies)] == [r.run for r in best_first]
    assert [r.run for r in rebuild.select_records(study.study, root=study.studies)] == [best_first[0].run]
    assert [r.run_id for r in rebuild.select_records(study.study, trial=1, root=study.studies)] == [complete[1].run_id]
    assert [r.run for r in rebuild.select_records(study.study, run="trial-0", root=study.studies)] == ["trial-0"]


@pytest.mark.parametrize("member", [0, 1])
def test_a_rebuilt_member_predicts_what_its_run_predicted(study, member):
    """The run's own test predictions (made at the end of its fit) come back, and the
    model without augmentation equals the training model at inference, flipped or not."""
    record = study.records[member]
    saved = np.load(study.studies / STUDY / record.artifacts["test_predictions"])
    order = {f: i for i, f in enumerate(study.test_files)}
    x = study.test_images[[order[f] for f in saved["files"]]]
    for hflip in (False, True):
        model = rebuild.inference_model([record], tta_hflip=hflip, root=study.studies)
        mine = rebuild.predict(model, x)
        if not hflip:
            assert (mine.argmax(axis=1) == saved["predictions"]).all()
        core = rebuild.member_model(record, study.studies)
        wrapped = training.training_model(core, TrainConfig(**record.train))
        assert any(layer.name.startswith("augment_") for layer in wrapped.layers)
        reference = training.predict_proba(wrapped, x, batch_size=256, hflip=hflip)
        np.testing.assert_allclose(mine, reference, atol=1e-6)
        assert mine.dtype == np.float32 and mine.shape == (len(x), len(CLASSES))
        np.testing.assert_allclose(mine.sum(axis=1), 1.0, atol=1e-5)


def test_an_ensemble_is_the_mean_of_its_members(study, exports):
    x = study.test_images
    singles = [rebuild.predict(rebuild.inference_model([r], tta_hflip=True, root=study.studies), x) for r in exports.records]
    np.testing.assert_allclose(rebuild.predict(exports.model, x), np.mean(singles, axis=0), atol=1e-6)
    # (N, 48, 48) without the channel axis is accepted too
    np.testing.assert_array_equal(rebuild.predict(exports.model, x[..., 0]), rebuild.predict(exports.model, x))


# --------------------------------------------------------------------------- the exports, loaded without ferhpo


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_loads_without_ferhpo_and_predicts_what_ferhpo_predicts(study, exports, loaded, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx and onnx (pip install 'ferhpo[onnx]')")
        pytest.importorskip("onnxruntime", reason="loading the ONNX export needs onnxruntime (the test extra)")
    got = loaded[fmt]
    assert list(got["leaked"]) == []
    expected = rebuild.predict(exports.model, study.test_images)
    np.testing.assert_allclose(got["first"], expected, atol=1e-5)
    np.testing.assert_array_equal(got["second"], got["first"])
    # ferhpo's own loader (what `ferhpo predict` uses) agrees too
    card, predict = export.load_export(exports.folders[fmt])
    assert card["format"] == fmt
    np.testing.assert_allclose(predict(study.test_images), expected, atol=1e-5)
    assert card["verified"]["max_abs_diff"] <= 1e-5


def test_the_keras_export_has_no_augmentation_and_ignores_training_mode(loaded):
    got = loaded["keras"]
    layers = list(got["layers"])
    assert any(entry.startswith("Rescaling:") for entry in layers)
    assert any(entry.startswith("Conv2D:") for entry in layers)  # the cores are walked too
    for entry in layers:
        kind, name = entry.split(":", 1)
        assert not kind.startswith("Random") and kind not in ("Dropout", "Lambda"), entry
        assert not name.startswith("augment_"), entry
    np.testing.assert_array_equal(got["train_mode"], got["infer_mode"])
    np.testing.assert_allclose(got["infer_mode"], got["first"], atol=1e-6)


def test_the_model_card_says_what_goes_in_and_comes_out(study, exports):
    folder = exports.folders["keras"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.keras", "model_card.json", "model_card.md"]
    card = json.loads((folder / "model_card.json").read_text())
    assert card["ferhpo_export"] == 1 and card["format"] == "keras" and card["file"] == "model.keras"
    assert card["classes"] == list(CLASSES)
    assert card["input"] == {**card["input"], "name": "image", "dtype": "uint8", "shape": [None, 48, 48, 1], "range": [0, 255]}
    assert card["output"]["shape"] == [None, 7] and card["output"]["dtype"] == "float32"
    assert card["tta_hflip"] is True and card["ensemble_size"] == 2
    assert card["study"] == STUDY and card["data_fingerprint"] == study.data.info.fingerprint
    assert [m["run"] for m in card["members"]] == [r.run for r in exports.records]
    for member, record in zip(card["members"], exports.records):
        assert member["run_id"] == record.run_id and member["model"] == record.model and member["train"] == record.train
        assert member["validation_accuracy"] == record.best_val_accuracy
        assert member["test_accuracy"] == record.evaluation["test"]["accuracy"]
        assert member["test_private_accuracy"] == record.evaluation["test_private"]["accuracy"]
    assert {"ferhpo", "keras", "backend", "tensorflow"} <= set(card["versions"]) and card["created"]
    markdown = (folder / "model_card.md").read_text()
    assert all(r.run_id in markdown for r in exports.records) and "angry, disgust, fear" in markdown


def test_the_storage_password_stays_off_the_card(study, exports, tmp_path):
    card = export.export(
        exports.records[:1],
        fmt="keras",
        out=tmp_path / "m",
        study_name=STUDY,
        storage="postgresql://ferhpo:s3cret@db.example/ferhpo",
        root=study.studies,
        verify=False,
    )
    assert card["storage"] == "postgresql://ferhpo:***@db.example/ferhpo"
    assert "s3cret" not in (tmp_path / "m" / "model_card.json").read_text()


# --------------------------------------------------------------------------- bad input


def test_choosing_runs_that_are_not_there_is_a_one_line_error(study, tmp_path):
    s = study.study
    with pytest.raises(
        DeployError, match=r"^--top 5 asks for 5 runs, but study 'tiny' has 2 finished; expected --top 2 or less$"
    ):
        rebuild.select_records(s, top=5, root=study.studies)
    with pytest.raises(DeployError, match=r"study 'tiny' has no trial 7; its finished runs: trial-0, trial-1"):
        rebuild.select_records(s, trial=7, root=study.studies)
    with pytest.raises(DeployError, match=r"trial 2 of study 'tiny' is pruned, not complete"):
        rebuild.select_records(s, trial=2, root=study.studies)
    with pytest.raises(ConfigError, match=r"one of trial, run or top, but got trial and top"):
        rebuild.select_records(s, trial=0, top=1, root=study.studies)
    with pytest.raises(DeployError, match=r"weights of run 'trial-\d' of study 'tiny' are missing: .* does not exist"):
        rebuild.select_records(s, root=tmp_path)
    empty = store.open_study("empty", study.storage)
    with pytest.raises(DeployError, match=r"study 'empty' has no finished run; expected"):
        rebuild.select_records(empty, root=study.studies)


def test_bad_export_targets_are_one_line_errors_and_write_nothing(study, exports, tmp_path, monkeypatch):
    tmp_path = tmp_path / "t"
    tmp_path.mkdir()
    records = exports.records[:1]
    kwargs = dict(study_name=STUDY, storage=study.storage, root=study.studies)
    with pytest.raises(ConfigError, match=r"unknown export format 'tflite'; expected one of keras, saved_model, onnx"):
        export.export(records, fmt="tflite", out=tmp_path / "x", **kwargs)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(DeployError, match=r"export folder .*full is a folder that is not empty; expected a new or empty folder"):
        export.export(records, fmt="keras", out=full, **kwargs)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DeployError, match=r"cannot write export folder .*a-file/sub .*; expected a writable path"):
        export.export(records, fmt="keras", out=tmp_path / "a-file" / "sub", **kwargs)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(
        DeployError,
        match=r"cannot export onnx: tf2onnx not installed; expected tf2onnx and onnx \(pip install 'ferhpo\[onnx\]'\)",
    ):
        export.export(records, fmt="onnx", out=tmp_path / "o", **kwargs)
    for error in (DeployError, ConfigError):
        assert issubclass(error, FerhpoError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "full"]  # no temporary folder left


def test_a_failed_export_leaves_nothing_and_an_empty_folder_is_filled(study, exports, tmp_path, monkeypatch):
    tmp_path = tmp_path / "t"
    tmp_path.mkdir()
    records = exports.records[:1]
    kwargs = dict(study_name=STUDY, storage=study.storage, root=study.studies)

    def broken(*args, **kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "card_markdown", broken)  # after the model is written
    with pytest.raises(RuntimeError, match="disk on fire"):
        export.export(records, fmt="keras", out=tmp_path / "m", **kwargs)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    export.export(records, fmt="keras", out=tmp_path / "empty", verify=False, **kwargs)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["model.keras", "model_card.json", "model_card.md"]


def test_loading_what_is_not_an_export_is_a_one_line_error(exports, tmp_path):
    with pytest.raises(
        DeployError, match=r"is not a ferhpo export \(no model_card.json\); expected a folder written by ferhpo export"
    ):
        export.load_export(tmp_path)
    with pytest.raises(DeployError, match=r"nowhere does not exist; expected a folder written by ferhpo export"):
        export.load_export(tmp_path / "nowhere")
    (tmp_path / "model_card.json").write_text('{"format": "keras"}')
    with pytest.raises(DeployError, match=r"is not a ferhpo model card of version 1"):
        export.load_export(tmp_path)
    _, predict = export.load_export(exports.folders["keras"])
    with pytest.raises(
        DeployError, match=r"images of shape \(2, 32, 32\) do not fit the model; expected uint8 images of shape \(N, 48, 48, 1\)"
    ):
        predict(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DeployError, match=r"images of dtype float32 do not fit the model; expected uint8 .*unscaled"):
        predict(np.zeros((2, 48, 48, 1), np.float32))
    assert predict(np.zeros((0, 48, 48, 1), np.uint8)).shape == (0, 7)


# --------------------------------------------------------------------------- the command


def _cli(*args: str) -> int:
    """`ferhpo export ARGS` in this process, through the command table (errors: one line, exit 2)."""
    from ferhpo.cli import main

    return main(["export", *args])


def test_the_command_exports_and_says_what_it_wrote(study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(study.root)  # studies/ is where the runs' weights are
    out = tmp_path / "model"
    assert _cli("--study", STUDY, "--storage", study.storage, "--trial", "1", "--format", "keras", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"wrote keras model to {out}/" in printed
    assert f"trial-1 ({study.records[1].run_id}): val {study.records[1].best_val_accuracy:.4f}" in printed
    assert json.loads((out / "model_card.json").read_text())["members"][0]["run"] == "trial-1"

    assert _cli("--study", STUDY, "--storage", study.storage, "--top", "2", "--tta", "--json", "--out", str(tmp_path / "j")) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["path"] == str(tmp_path / "j") and card["ensemble_size"] == 2 and card["tta_hflip"] is True

    assert _cli("--study", STUDY, "--storage", study.storage, "--top", "5", "--out", str(tmp_path / "k")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ferhpo: error: --top 5 asks for 5 runs, but study 'tiny' has 2 finished; expected --top 2 or less"]
    assert _cli("--study", "nope", "--storage", study.storage, "--out", str(tmp_path / "k")) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
