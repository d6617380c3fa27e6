"""`ferhpo predict`: classify the faces in photos with an exported model or a study's runs.

Every face of every file goes through the model in one batch. A file that cannot be
read, or that has no face, is a row with an error (and one line on stderr); the other
files go on. Problems with the command itself (no PATH, a missing path, no model)
stop it before anything is read or written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ferhpo.cli.common import (
    PROG,
    Command,
    UsageError,
    add_storage_argument,
    import_keras,
    non_negative_int,
    positive_int,
    quiet_optuna,
)
from ferhpo.errors import FerhpoError

HELP = "classify the faces in photos with an exported model or a study's best runs"
USAGE = f"{PROG} predict [options] (MODEL | --study NAME) PATH [PATH ...]"
EPILOG = """\
Faces are found with OpenCV's frontal-face detector (largest first, face 0) and cropped
as FER2013 faces are; an image that is already 48x48 is taken as one face as it is.
A file that is not an image, or has no face, is reported (a row with an error, and a
line on stderr) and the others go on.

Exit codes: 0 when at least one face was classified; 2 when none was (every file
unreadable or without a face: the rows still say why), or for bad usage (nothing is
written then); 1 internal error."""


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = USAGE
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="PATH",
        help="without --study, first MODEL (a folder written by 'ferhpo export'); then image files, "
        "or folders searched recursively for images (.jpg .jpeg .png .bmp .gif .tif .tiff .webp .pgm .ppm .pnm)",
    )
    from_study = p.add_argument_group("a model from a study, instead of MODEL")
    from_study.add_argument("--study", metavar="NAME", help="rebuild the model from this study's finished runs")
    add_storage_argument(from_study)
    run_choice = from_study.add_mutually_exclusive_group()
    run_choice.add_argument(
        "--trial", type=non_negative_int, metavar="N", help="use trial N of the study (default: its best run)"
    )
    run_choice.add_argument("--top", type=positive_int, metavar="K", help="average the probabilities of the study's K best runs")
    run_choice.add_argument("--run", metavar="NAME", help="use this baseline run of the study (a preset name)")
    p.add_argument("--tta", action="store_true", help="average each face with its mirror image (test-time flip)")
    output_format = p.add_mutually_exclusive_group()
    output_format.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list: file, face, box [x, y, w, h], class, probabilities (in class order), error",
    )
    output_format.add_argument("--csv", action="store_true", help="print CSV: one row per face, one column per class probability")
    p.add_argument(
        "--annotate",
        metavar="DIR",
        help="write a copy of each photo with its faces boxed and labelled into DIR (created if needed)",
    )


# --------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class Source:
    path: Path  # as the user named it (or found under a folder they named)
    rel: Path  # its name under --annotate DIR


def _is_export(path: Path) -> bool:
    """A folder with a model card: `load_export` checks the rest (one-line errors)."""
    from ferhpo.deploy.export import CARD

    return path.is_dir() and (path / CARD).is_file()


def _split_inputs(args: argparse.Namespace) -> tuple[Path | None, list[str]]:
    """MODEL (None with --study) and the PATH arguments; one-line errors for the rest."""
    inputs = list(args.inputs)
    if args.study is None:
        given = [f"--{n}" for n in ("storage", "trial", "top", "run") if getattr(args, n) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} choose runs of a study; expected --study NAME with them")
        if not inputs:
            raise UsageError("no MODEL and no PATH given; expected MODEL PATH ... or --study NAME PATH ...")
        model = Path(inputs[0])
        if not _is_export(model):
            why = "does not exist" if not model.exists() else "has no model card" if model.is_dir() else "is not a folder"
            raise UsageError(
                f"{model} is not a model exported by 'ferhpo export' (it {why}); expected "
                f"MODEL PATH ... with MODEL an export folder, or --study NAME PATH ..."
            )
        if len(inputs) == 1:
            raise UsageError(f"no PATH given after MODEL {model}; expected image files or folders")
        return model, inputs[1:]
    if inputs and _is_export(Path(inputs[0])):
        raise UsageError(f"both MODEL ({inputs[0]}) and --study {args.study} given; expected one of them")
    if not inputs:
        raise UsageError("no PATH given; expected image files or folders after the options")
    return None, inputs


def collect_sources(paths: list[str], exclude: Path | None = None) -> list[Source]:
    """The image files named, and those under the folders named (recursively, sorted;
    hidden entries and the --annotate folder left out). A file named explicitly is
    taken whatever its extension, so a non-image is reported rather than ignored."""
    from ferhpo.deploy.faces import IMAGE_EXTENSIONS

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FerhpoError(f"{missing[0]} does not exist; expected image files or folders")
    skip = exclude.resolve() if exclude is not None else None
    found: list[Source] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(Source(path, rel))

    for text in paths:
        root = Path(text)
        if not root.is_dir():
            add(root, Path(root.name))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
            for name in sorted(filenames):
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                    add(here / name, (here / name).relative_to(root))
    if not found:
        raise FerhpoError(f"no image files in {', '.join(paths)}; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    return found


def check_writable(folder: Path) -> None:
    """That `folder` exists as a writable folder or can be made one; writes nothing
    that stays (the folder itself is made when the first copy is written)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise FerhpoError(f"cannot write annotated copies to {folder}: {probe} is not a folder; expected a writable folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise FerhpoError(
            f"cannot write annotated copies to {folder}: {exc.strerror or exc} in {probe}; expected a writable folder"
        ) from None


# --------------------------------------------------------------------------- the model


def _load_model(args: argparse.Namespace, model: Path | None) -> tuple[tuple[str, ...], Callable]:
    """The class names in output order and a function uint8 (N, 48, 48, 1) -> (N, C)."""
    if model is None:
        return _study_model(args)
    import numpy as np

    from ferhpo.deploy.export import CARD, load_export

    try:
        export_format = json.loads((model / CARD).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        export_format = None  # load_export says what is wrong with the card
    if export_format != "onnx":  # onnxruntime alone runs an ONNX export; the others load Keras or TensorFlow
        import_keras()
    card, exported = load_export(model)
    if not args.tta:
        return tuple(card["classes"]), exported

    def flip_averaged(x):
        return (exported(x) + exported(np.ascontiguousarray(x[:, :, ::-1]))) / 2

    return tuple(card["classes"]), flip_averaged


def _study_model(args: argparse.Namespace) -> tuple[tuple[str, ...], Callable]:
    """The study's chosen runs rebuilt as one model (the study opened first: a wrong
    name fails before Keras loads)."""
    from ferhpo import store

    quiet_optuna()
    study = store.open_study(args.study, args.storage, create=False)
    import_keras()
    from ferhpo.data import CLASSES
    from ferhpo.deploy import rebuild

    records = rebuild.select_records(study, trial=args.trial, top=args.top, run=args.run)
    rebuilt = rebuild.inference_model(records, tta_hflip=args.tta)
    return CLASSES, lambda x: rebuild.predict(rebuilt, x)


# --------------------------------------------------------------------------- the work


@dataclass
class Row:
    file: str
    face: int | None = None
    box: tuple[int, int, int, int] | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "face": self.face,
            "box": list(self.box) if self.box else None,
            "class": self.label,
            "probabilities": self.probabilities,
            "error": self.error,
        }

    def classified(self) -> tuple[tuple[int, int, int, int], str, float]:
        """A classified face's box, class and that class's probability."""
        assert self.box is not None and self.label is not None and self.probabilities is not None  # a face's row
        return self.box, self.label, self.probabilities[self.label]


def _annotated_name(rel: Path, taken: set[Path]) -> Path:
    from ferhpo.deploy.faces import WRITABLE_EXTENSIONS

    name = rel if rel.suffix.lower() in WRITABLE_EXTENSIONS else rel.with_suffix(".png")
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = name.with_name(f"{name.stem}-{n}{name.suffix}")
    taken.add(candidate)
    return candidate


def _predict_run(args: argparse.Namespace) -> int:
    model, paths = _split_inputs(args)
    annotate_dir = Path(args.annotate) if args.annotate else None
    sources = collect_sources(paths, exclude=annotate_dir)
    if annotate_dir is not None:
        check_writable(annotate_dir)
    classes, predict = _load_model(args, model)

    import numpy as np

    from ferhpo.deploy import faces

    rows: list[Row] = []
    crops: list[np.ndarray] = []
    face_rows_by_file: list[tuple[Source, list[int]]] = []  # readable files only
    for source in sources:
        try:
            gray = faces.load_image(source.path)
        except faces.ImageError as exc:
            rows.append(Row(str(source.path), error=str(exc)))
            print(f"{PROG}: {exc}", file=sys.stderr)
            continue
        boxes = faces.find_faces(gray)
        if not boxes:
            message = (
                f"no face found in {source.path} (expected an upright frontal face at least 1/"
                f"{faces.MIN_FACE_FRACTION} of the photo's shorter side and {faces.MIN_FACE} px wide, "
                f"or a 48x48 face crop)"
            )
            rows.append(Row(str(source.path), error=message))
            print(f"{PROG}: {message}", file=sys.stderr)
        face_rows = []
        for i, box in enumerate(boxes):
            crops.append(faces.crop_face(gray, box))
            face_rows.append(len(rows))
            x, y, w, h = box
            rows.append(Row(str(source.path), face=i, box=(int(x), int(y), int(w), int(h))))
        face_rows_by_file.append((source, face_rows))

    if crops:
        probabilities = np.asarray(predict(np.stack(crops)[..., None]), dtype=np.float64)
        if probabilities.shape != (len(crops), len(classes)):
            raise FerhpoError(f"the model returned shape {probabilities.shape}; expected ({len(crops)}, {len(classes)})")
        for row, face_probabilities in zip((r for r in rows if r.error is None), probabilities):
            row.label = classes[int(np.argmax(face_probabilities))]
            row.probabilities = {c: round(float(v), 6) for c, v in zip(classes, face_probabilities)}

    if annotate_dir is not None:
        taken: set[Path] = set()
        for source, face_rows in face_rows_by_file:
            drawn = [rows[i].classified() for i in face_rows]
            faces.annotate(source.path, drawn, annotate_dir / _annotated_name(source.rel, taken))
        copies = len(face_rows_by_file)
        print(f"{PROG}: {copies} annotated cop{'y' if copies == 1 else 'ies'} in {annotate_dir}", file=sys.stderr)

    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.csv:
        _write_csv(rows, classes)
    else:
        print("\n".join(_table(rows)))

    if not crops:
        print(f"{PROG}: no face classified in {len(sources)} file(s)", file=sys.stderr)
        return 2
    return 0


def _write_csv(rows: list[Row], classes: tuple[str, ...]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["file", "face", "x", "y", "w", "h", "class", *classes, "error"])
    for r in rows:
        box = list(r.box) if r.box else ["", "", "", ""]
        probs = [f"{r.probabilities[c]:.6f}" for c in classes] if r.probabilities else [""] * len(classes)
        writer.writerow([r.file, "" if r.face is None else r.face, *box, r.label or "", *probs, r.error or ""])


def _table(rows: list[Row]) -> list[str]:
    head = ("file", "face", "box x,y,w,h", "class", "prob")
    cells = []
    for r in rows:
        if r.error is not None:
            cells.append((r.file, "-", "-", f"error: {r.error}", ""))
        else:
            box, label, probability = r.classified()
            cells.append((r.file, str(r.face), ",".join(map(str, box)), label, f"{probability:.2f}"))
    # an error's message runs on past the class column instead of widening it
    widths = [max([len(head[i])] + [len(c[i]) for c in cells if not (i == 3 and c[4] == "")]) for i in range(4)]
    lines = [f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]:<{widths[3]}}  {head[4]}"]
    for c in cells:
        line = f"{c[0]:<{widths[0]}}  {c[1]:>{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]:<{widths[3]}}  {c[4]}"
        lines.append(line.rstrip())
    return lines


COMMAND = Command("predict", HELP, _predict_arguments, _predict_run)
