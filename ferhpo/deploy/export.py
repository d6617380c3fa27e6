"""Write finished runs as a model people can use, and load such a model back.

`export` rebuilds the chosen runs as one inference model (`rebuild.inference_model`)
and writes it with Keras' own writers: `model.keras` (`model.save`), `saved_model/`
(`model.export(format="tf_saved_model")`) or `model.onnx` (`model.export(format="onnx")`,
which converts through tf2onnx on TensorFlow), beside `model_card.json` and
`model_card.md` (classes, input and output, members and their accuracies, versions).
The folder appears whole or not at all, and the written model is reloaded and
checked against the model in memory before it is put in place.

`load_export` reads such a folder with Keras, TensorFlow or onnxruntime alone: it is
what `ferhpo predict` uses, and it imports only what the folder's format needs.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from ferhpo import store
from ferhpo.atomic import atomic_open, write_json
from ferhpo.data import CLASSES
from ferhpo.deploy import DeployError, as_batch
from ferhpo.errors import ConfigError
from ferhpo.redact import redact

__all__ = ["FORMATS", "CARD", "MARKER", "export", "load_export", "model_card", "card_markdown"]

#: format -> what it writes inside the export folder
FORMATS = {"keras": "model.keras", "saved_model": "saved_model", "onnx": "model.onnx"}
CARD = "model_card.json"
CARD_MD = "model_card.md"
MARKER = "ferhpo_export"  # the card's key: its value is the card's version
CARD_VERSION = 1
BATCH = 256
#: how far a reloaded export may differ from the model in memory (float round-off of another runtime)
TOLERANCE = 1e-5

# mkdtemp makes folders for the owner only; an export should get the usual mode.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


# --------------------------------------------------------------------------- export


def export(
    records: list[store.RunRecord],
    *,
    fmt: str,
    out: str | os.PathLike,
    tta_hflip: bool = False,
    study_name: str | None = None,
    storage: str | None = None,
    root: Path = store.STUDIES_DIR,
    verify: bool = True,
    evaluation: dict | None = None,
) -> dict:
    """Write `records` as one model in format `fmt` ("keras", "saved_model", "onnx")
    into the new (or empty) folder `out`, with its model card; return the card.

    The folder is built beside `out` under a temporary name and renamed into place
    when complete: a failure leaves nothing behind. With `verify`, the written model
    is loaded back as `load_export` loads it and must give the in-memory model's
    probabilities on probe images (skipped for ONNX when onnxruntime is missing).
    """
    _check_format(fmt)
    if not records:
        raise ConfigError("export needs at least one run record, but got none")
    _check_tools(fmt)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise DeployError(f"export folder {out} is {what}; expected a new or empty folder")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=parent))
    except OSError as exc:
        raise DeployError(f"cannot write export folder {out} ({exc.strerror or exc}); expected a writable path") from None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        card = _write(
            records,
            fmt=fmt,
            folder=tmp,
            tta_hflip=tta_hflip,
            study_name=study_name,
            storage=storage,
            evaluation=evaluation,
            root=root,
            verify=verify,
        )
        _fsync_tree(tmp)
        try:
            os.replace(tmp, out)  # an empty folder at `out` is replaced; a non-empty one refuses
        except OSError as exc:
            raise DeployError(
                f"cannot move the export into {out} ({exc.strerror or exc}); expected a new or empty folder"
            ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def _check_tools(fmt: str) -> None:
    """Before any work: the converter the format needs is installed."""
    if fmt != "onnx":
        return
    import keras

    # Keras converts through tf2onnx on TensorFlow (its own exporter on JAX and PyTorch).
    if keras.backend.backend() == "tensorflow":
        missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
        if missing:
            raise DeployError(
                f"cannot export onnx: {' and '.join(missing)} not installed; expected tf2onnx and onnx "
                f"(pip install 'ferhpo[onnx]')"
            )


def _write(records, *, fmt, folder: Path, tta_hflip, study_name, storage, root, verify, evaluation=None) -> dict:
    from ferhpo.deploy import rebuild

    model = rebuild.inference_model(records, tta_hflip=tta_hflip, root=root)
    probe = _probe_images(tuple(model.input_shape[1:]))
    # Also calls the model once, which Keras' ONNX export requires.
    expected = np.asarray(model.predict(probe, batch_size=BATCH, verbose=0))
    target = folder / FORMATS[fmt]
    extra: dict = {}
    try:
        if fmt == "keras":
            model.save(target)
        elif fmt == "saved_model":
            model.export(str(target), format="tf_saved_model", verbose=False)
        else:
            extra = _export_onnx(model, target)
    except ImportError as exc:  # e.g. a SavedModel without TensorFlow, ONNX on JAX without jax2onnx
        raise DeployError(f"cannot export {fmt}: {_first_line(exc)}; expected the packages Keras' {fmt} export needs") from None
    except OSError as exc:
        raise DeployError(f"cannot write {target} ({exc.strerror or exc}); expected a writable folder") from None
    # Loaded back as users will load it: the names its runtime shows, and the check.
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        predict, verified = None, None  # no runtime here to check with: the export stands, unverified
        names = _onnx_names(target)
    else:
        predict = _predictor(fmt, folder, tuple(probe.shape[1:]))
        names = predict.names
        verified = _verify(fmt, predict, probe, expected) if verify else None
    card = model_card(
        records,
        fmt=fmt,
        tta_hflip=tta_hflip,
        study_name=study_name,
        storage=storage,
        evaluation=evaluation,
        params=int(model.count_params()),
        verified=verified,
        extra=extra,
        names=names,
    )
    write_json(folder / CARD, card)
    with atomic_open(folder / CARD_MD, "w") as f:
        f.write(card_markdown(card))
    return card


def _export_onnx(model, target: Path) -> dict:
    """Keras' own ONNX export (tf2onnx on TensorFlow); returns the tools' versions and opset."""
    quiet = logging.getLogger("tf2onnx"), logging.getLogger("tensorflow")
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():  # Keras' numpy-2 patch of tf2onnx probes np.object
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(target), format="onnx", verbose=False)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    info: dict = {}
    from importlib import metadata

    for package in ("tf2onnx", "onnx"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        import onnx

        info["onnx_opset"] = max(o.version for o in onnx.load(str(target)).opset_import if o.domain in ("", "ai.onnx"))
    except Exception:  # the opset is a note on the card, not a reason to fail
        pass
    return info


def _onnx_names(target: Path) -> tuple[str, str] | None:
    """(input, output) tensor names of an ONNX file, read with the onnx package."""
    try:
        import onnx

        graph = onnx.load(str(target)).graph
        return graph.input[0].name, graph.output[0].name
    except Exception:  # a note on the card, not a reason to fail
        return None


def _probe_images(shape: tuple[int, int, int], n: int = 16) -> np.ndarray:
    """Deterministic uint8 images with the extremes 0 and 255 among them."""
    x = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
    x[0], x[1] = 0, 255
    return x


def _verify(fmt: str, predict, probe: np.ndarray, expected: np.ndarray) -> dict:
    """The reloaded model's probabilities on `probe` must be the in-memory model's `expected`."""
    got = predict(probe)
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE:
        raise DeployError(
            f"the written {fmt} model gives other probabilities than the model in memory (max difference {diff:.3g}); "
            f"expected at most {TOLERANCE:g}: the exporter changed the model"
        )
    return {"images": int(len(probe)), "max_abs_diff": diff, "tolerance": TOLERANCE}


def _fsync_tree(folder: Path) -> None:
    """Every file and folder of the export on disk before it is renamed into place."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- the model card


def _member(record: store.RunRecord) -> dict:
    evaluation = record.evaluation
    accuracy = {name: evaluation[name]["accuracy"] for name in ("test", "test_public", "test_private") if name in evaluation}
    return {
        "study": record.study,
        "run": record.run,
        "run_id": record.run_id,
        "kind": record.kind,
        "family": record.family,
        "model": record.model,
        "train": record.train,
        "budget": record.budget,
        "protocol": record.protocol,
        "params": record.params,
        "best_epoch": record.best_epoch,
        "validation_accuracy": record.best_val_accuracy,
        "test_accuracy": accuracy.get("test"),
        "test_public_accuracy": accuracy.get("test_public"),
        "test_private_accuracy": accuracy.get("test_private"),
        # test subsets the run's validation overlapped: their numbers are not clean test numbers
        "selection_sees": list(record.selection_sees),
        "data_fingerprint": record.data_fingerprint,
        "weights": record.artifacts.get("weights"),
        "created": record.created,
    }


def model_card(
    records: list[store.RunRecord],
    *,
    fmt: str,
    tta_hflip: bool,
    study_name: str | None = None,
    storage: str | None = None,
    params: int | None = None,
    verified: dict | None = None,
    extra: dict | None = None,
    names: tuple[str, str] | None = None,
    evaluation: dict | None = None,
) -> dict:
    """The machine-readable card: what the model takes and gives, and where it came from.

    `evaluation` is the exported ensemble's own measurement (`ferhpo ensemble`), when
    one was made of exactly these members and flip averaging."""
    shape = list(records[0].model.get("input_shape", (48, 48, 1)))
    fingerprints = sorted({r.data_fingerprint for r in records})
    environment = store.environment()
    versions = {k: environment[k] for k in ("ferhpo", "keras", "backend", "tensorflow", "numpy") if k in environment}
    versions.update(extra or {})
    # what the format's runtime calls the input and output (ONNX: tf2onnx's tensor names)
    input_name, output_name = names or ("image", "probabilities")
    return {
        MARKER: CARD_VERSION,
        "format": fmt,
        "file": FORMATS[fmt],
        "classes": list(CLASSES),
        "input": {
            "name": input_name,
            "dtype": "uint8",
            "shape": [None, *shape],
            "range": [0, 255],
            "description": f"grayscale face crops, {shape[0]}x{shape[1]} pixels, 0-255 unscaled, as in FER2013",
        },
        "output": {
            "name": output_name,
            "dtype": "float32",
            "shape": [None, len(CLASSES)],
            "description": "class probabilities in the order of 'classes'; each row sums to 1",
        },
        "scaling": "inside the model: pixel / 255 (Keras Rescaling), as in training",
        "augmentation": "off: no augmentation or dropout layer; the model computes the same in training mode",
        "precision": "float32",
        "tta_hflip": bool(tta_hflip),
        "ensemble_size": len(records),
        "combine": "mean of the members' probabilities"
        + (" (each the mean of the image's and its mirror's)" if tta_hflip else ""),
        "params": params,
        "members": [_member(r) for r in records],
        "study": study_name if study_name is not None else records[0].study,
        "storage": redact(storage),
        "data_fingerprint": fingerprints[0] if len(fingerprints) == 1 else fingerprints,
        "evaluation": {k: {m: v.get(m) for m in ("accuracy", "macro_f1", "n")} for k, v in (evaluation or {}).items()} or None,
        "accuracy_note": "validation and test accuracies of the members are each member's own, as recorded; "
        + (
            "'evaluation' is this ensemble's, measured by ferhpo ensemble"
            if evaluation
            else "an ensemble or flip averaging was not evaluated (ferhpo ensemble measures one)"
        ),
        "verified": verified,
        "versions": versions,
        "environment": environment,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


_USAGE = {
    "keras": (
        "import keras\n"
        "model = keras.saving.load_model('{folder}/model.keras')\n"
        "probabilities = model.predict(images_uint8)  # (N, 48, 48, 1) uint8"
    ),
    "saved_model": (
        "import tensorflow as tf\n"
        "serve = tf.saved_model.load('{folder}/saved_model').signatures['serving_default']\n"
        "probabilities = list(serve(tf.constant(images_uint8)).values())[0].numpy()"
    ),
    "onnx": (
        "import onnxruntime\n"
        "session = onnxruntime.InferenceSession('{folder}/model.onnx')\n"
        "probabilities = session.run(None, {{session.get_inputs()[0].name: images_uint8}})[0]"
    ),
}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def card_markdown(card: dict) -> str:
    """The card for people: what goes in, what comes out, which runs, how to load it."""
    members = card["members"]
    lines = [
        "# FER2013 emotion classifier (ferhpo export)",
        "",
        f"Format **{card['format']}** (`{card['file']}`), {card['ensemble_size']} member(s) from study "
        f"`{card['study']}`, flip averaging {'on' if card['tta_hflip'] else 'off'}, created {card['created']}.",
        "",
        "## Input and output",
        "",
        f"- input `{card['input']['name']}`: {card['input']['dtype']}, shape {card['input']['shape']}, "
        f"{card['input']['description']}",
        f"- output `{card['output']['name']}`: {card['output']['dtype']}, shape {card['output']['shape']}, "
        f"{card['output']['description']}",
        f"- classes, in order: {', '.join(card['classes'])}",
        f"- scaling: {card['scaling']}",
        f"- augmentation: {card['augmentation']}",
        f"- combination: {card['combine']}",
        "",
        "## Members",
        "",
        "| run | run id | family | params | validation | test | public test | private test |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in members:
        lines.append(
            f"| {m['run']} | {m['run_id']} | {m['family']} | {m['params']:,} | {_pct(m['validation_accuracy'])} | "
            f"{_pct(m['test_accuracy'])} | {_pct(m['test_public_accuracy'])} | {_pct(m['test_private_accuracy'])} |"
        )
    sees = sorted({s for m in members for s in m["selection_sees"]})
    measured = card.get("evaluation") or {}
    if measured:
        parts = [f"{name} {_pct(v.get('accuracy'))}" for name, v in measured.items()]
        lines += ["", f"This model as exported (measured by `ferhpo ensemble`): {', '.join(parts)}."]
    lines += ["", card["accuracy_note"][0].upper() + card["accuracy_note"][1:] + "."]
    if sees:
        lines.append(f"The validation split overlapped {', '.join(sees)}: those test numbers are not clean.")
    verified = card.get("verified")
    lines += [
        "",
        "## Provenance",
        "",
        f"- data fingerprint: {card['data_fingerprint']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items())}",
        "- check on writing: "
        + (
            f"reloaded and compared on {verified['images']} images, max difference {verified['max_abs_diff']:.2g}"
            if verified
            else "not run"
        ),
        "",
        "Each member's configuration (model and training recipe) is in `model_card.json`.",
        "",
        "## Loading it without ferhpo",
        "",
        "```python",
        _USAGE[card["format"]].format(folder="EXPORT"),
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def load_export(path: str | os.PathLike) -> tuple[dict, Callable[[np.ndarray], np.ndarray]]:
    """(model card, predict) of an export folder: predict maps uint8 images
    (N, 48, 48[, 1]) to (N, 7) float32 probabilities in the card's class order.

    Loads with Keras (safe mode), TensorFlow or onnxruntime, as the card's format says.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file"
        raise DeployError(f"{folder} {what}; expected a folder written by ferhpo export")
    card_path = folder / CARD
    if not card_path.is_file():
        raise DeployError(f"{folder} is not a ferhpo export (no {CARD}); expected a folder written by ferhpo export")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeployError(f"{card_path} cannot be read ({exc}); expected the JSON card ferhpo export wrote") from None
    if not isinstance(card, dict) or card.get(MARKER) != CARD_VERSION:
        version = card.get(MARKER) if isinstance(card, dict) else None
        raise DeployError(
            f"{card_path} is not a ferhpo model card of version {CARD_VERSION} ({MARKER}={version!r}); "
            f"expected a folder written by ferhpo export"
        )
    fmt = card.get("format")
    if fmt not in FORMATS:
        raise DeployError(f"{card_path} names format {fmt!r}; expected one of {', '.join(FORMATS)}")
    shape = tuple(card.get("input", {}).get("shape", [None, 48, 48, 1])[1:])
    return card, _predictor(fmt, folder, shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Predictor(Protocol):
    """A loaded export's predict function, with the (input, output) names its runtime shows."""

    names: tuple[str, str]

    def __call__(self, images: Any) -> np.ndarray: ...


def _predictor(fmt: str, folder: Path, shape: tuple[int, ...]) -> Predictor:
    target = folder / FORMATS[fmt]
    if not target.exists():
        raise DeployError(f"{target} is missing; expected the {fmt} model the card of {folder} names")
    n_classes = len(CLASSES)

    def batched(run_batch, names: tuple[str, str]) -> Predictor:
        def predict(images) -> np.ndarray:
            x = as_batch(images, shape)
            parts = [np.asarray(run_batch(x[i : i + BATCH]), dtype="float32") for i in range(0, len(x), BATCH)]
            return np.concatenate(parts) if parts else np.zeros((0, n_classes), dtype="float32")

        predictor = cast(Predictor, predict)  # the function itself, typed with the attribute it gets
        predictor.names = names  # (input, output) as this runtime calls them
        return predictor

    if fmt == "keras":
        try:
            import keras
        except ImportError as exc:
            raise DeployError(f"cannot load {target}: {exc}; expected Keras 3 installed") from None
        try:
            # Safe mode: a file that would run code when loaded (a Lambda's bytecode) is refused.
            model = keras.saving.load_model(target, compile=False, safe_mode=True)
        except Exception as exc:  # a damaged zip, an unknown layer, a file of another Keras: all one answer
            raise DeployError(f"cannot load {target} ({_first_line(exc)}); expected a Keras 3 model file") from None
        input_name = model.input_names[0] if hasattr(model, "input_names") else model.inputs[0].name
        return batched(lambda x: model.predict(x, batch_size=BATCH, verbose=0), (input_name, model.output_names[0]))
    if fmt == "saved_model":
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise DeployError(f"cannot load {target}: {exc}; expected TensorFlow installed") from None
        try:
            loaded = tf.saved_model.load(str(target))
            serve = loaded.signatures["serving_default"]
        except Exception as exc:  # TensorFlow's OpError family, a missing signature
            raise DeployError(
                f"cannot load {target} ({_first_line(exc)}); expected a SavedModel with a serving_default signature"
            ) from None
        (arg,) = serve.structured_input_signature[1]

        def run_saved(x):
            (result,) = serve(**{arg: tf.constant(x)}).values()
            return result.numpy()

        cast(Any, run_saved).model = loaded  # keeps the loaded object (and its variables) alive
        return batched(run_saved, (arg, next(iter(serve.structured_outputs))))
    try:
        import onnxruntime
    except ImportError as exc:
        raise DeployError(f"cannot load {target}: {exc}; expected onnxruntime installed (pip install onnxruntime)") from None
    try:
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DeployError(f"cannot load {target} ({_first_line(exc)}); expected an ONNX model") from None
    name = session.get_inputs()[0].name
    return batched(lambda x: session.run(None, {name: x})[0], (name, session.get_outputs()[0].name))
