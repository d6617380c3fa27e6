"""FER2013 loading: image folders or the Kaggle csv -> uint8 arrays, and a cache.

Classes are mapped by *name* to one fixed order (`CLASSES`); every image keeps its
origin (Training / PublicTest / PrivateTest) so the split protocols can be built
from it (`ferhpo.splits`). Decoded arrays are cached outside the data folder, keyed by the source's
file listing (paths, sizes, modification times), so a warm load reads one file.

This module imports numpy and pillow only: `ferhpo data summary` never loads keras.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ferhpo.atomic import atomic_open
from ferhpo.errors import DataError

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# The Kaggle csv numbers the classes in another order: map by name, never by position.
CSV_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# "Test" is a test-folder image whose file name does not say which half it is from.
ORIGINS = ("Training", "PublicTest", "PrivateTest", "Test")
TRAINING, PUBLIC, PRIVATE, TEST_UNKNOWN = range(4)
SIZE = 48
CSV_COLUMNS = ("emotion", "pixels", "Usage")
DEFAULT_DATA = Path("data") / "fer2013"
OBTAIN_HINT = (
    "download FER2013 from Kaggle (the image-folder version 'msambare/fer2013', or "
    "fer2013.csv from the 2013 challenge) and put it at ./data/fer2013, or point "
    "--data / FERHPO_DATA at it"
)
_CACHE_FORMAT = 1
_SPLIT_DIRS = ("train", "test")


@dataclass(frozen=True)
class SourceInfo:
    """Where the arrays came from and how this load went."""

    format: str  # "folder" or "csv"
    path: str
    fingerprint: str  # sha256 of the source's content (see `fingerprint_listing`)
    converted: int  # images that were not 48x48 grayscale and were converted
    skipped: tuple[str, ...]  # bad files or rows left out under skip_bad
    cache_path: str = ""
    cache_hit: bool = False
    load_seconds: float = 0.0


@dataclass(frozen=True)
class FER2013:
    """The whole dataset in memory: images (N, 48, 48) uint8, labels and origins int8."""

    images: np.ndarray
    labels: np.ndarray  # index into CLASSES
    origins: np.ndarray  # index into ORIGINS
    files: np.ndarray  # where each image came from: relative path or "fer2013.csv:LINE"
    info: SourceInfo

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_test(self) -> np.ndarray:
        return self.origins != TRAINING

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in the train and test splits (and per test half when known)."""
        out = {"train": _class_counts(self.labels[~self.is_test]), "test": _class_counts(self.labels[self.is_test])}
        for code, key in ((PUBLIC, "public_test"), (PRIVATE, "private_test")):
            mask = self.origins == code
            if mask.any():
                out[key] = _class_counts(self.labels[mask])
        return out


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels.astype(np.int64), minlength=len(CLASSES))
    return {name: int(n) for name, n in zip(CLASSES, counts)}


# --------------------------------------------------------------------------- locations


def resolve_data_path(path: str | os.PathLike | None = None) -> Path:
    """`--data`, else $FERHPO_DATA, else ./data/fer2013; it must exist."""
    chosen = path or os.environ.get("FERHPO_DATA") or DEFAULT_DATA
    resolved = Path(chosen).expanduser()
    if not resolved.exists():
        how = "--data" if path else ("FERHPO_DATA" if os.environ.get("FERHPO_DATA") else "the default location")
        raise DataError(f"no FER2013 data at {resolved} (from {how}); {OBTAIN_HINT}")
    return resolved


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """`--cache-dir`, else $FERHPO_CACHE, else the user cache dir (e.g. ~/.cache/ferhpo)."""
    chosen = cache_dir or os.environ.get("FERHPO_CACHE")
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ferhpo"))


def detect_format(root: Path) -> tuple[str, Path]:
    """("folder", root) for <root>/train|test/<class>/, ("csv", file) for the Kaggle csv."""
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root} is a file but not a .csv; expected a folder with train/ and test/ or fer2013.csv")
        return "csv", root
    if all((root / d).is_dir() for d in _SPLIT_DIRS):
        return "folder", root
    if (root / "fer2013.csv").is_file():
        return "csv", root / "fer2013.csv"
    missing = [d + "/" for d in _SPLIT_DIRS if not (root / d).is_dir()]
    raise DataError(
        f"{root} has no {' or '.join(missing)} folder and no fer2013.csv; expected "
        f"<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg, or the Kaggle fer2013.csv"
    )


# --------------------------------------------------------------------------- loading


def load_fer2013(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    skip_bad: bool = False,
    use_cache: bool = True,
) -> FER2013:
    """Load FER2013 from an image-folder tree or the Kaggle csv, through the cache.

    Raises DataError for every problem with the source or the cache folder; nothing is
    written unless the whole source decoded (the cache file appears atomically).
    """
    start = time.perf_counter()
    root = resolve_data_path(path)
    fmt, source = detect_format(root)
    listing = _scan_folder(source) if fmt == "folder" else None
    cache_file, hit = None, False
    if use_cache:
        directory = resolve_cache_dir(cache_dir)
        _check_cache_dir(directory, source)
        cache_file = directory / _cache_name(fmt, source, listing, skip_bad)
        data = _read_cache(cache_file)
        hit = data is not None
    if not hit:
        if fmt == "folder":
            assert listing is not None  # scanned above
            data = _decode_folder(source, listing, skip_bad)
        else:
            data = _decode_csv(source, skip_bad)
        if cache_file is not None:
            _write_cache(cache_file, data)
    assert data is not None  # read from the cache (a hit) or decoded just now
    info = replace(
        data.info,
        path=str(source),
        cache_path=str(cache_file or ""),
        cache_hit=hit,
        load_seconds=time.perf_counter() - start,
    )
    return replace(data, info=info)


def _scan_folder(root: Path) -> list[tuple[str, int, int]]:
    """Validate the folder layout; return sorted (relative path, size, mtime_ns) per file."""
    entries: list[tuple[str, int, int]] = []
    for split in _SPLIT_DIRS:
        seen: set[str] = set()
        with os.scandir(root / split) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            if child.name.startswith("."):
                continue
            if not child.is_dir():
                raise DataError(
                    f"unexpected file {split}/{child.name} in {root}; expected only class folders "
                    f"({', '.join(CLASSES)}) in {split}/"
                )
            name = child.name.lower()
            if name not in CLASSES:
                raise DataError(
                    f"unknown class folder {split}/{child.name} in {root}; expected the 7 classes {', '.join(CLASSES)}"
                )
            if name in seen:
                raise DataError(f"two folders for class '{name}' in {root / split}; expected one per class")
            seen.add(name)
            files = []
            with os.scandir(child.path) as it2:
                for f in it2:
                    if f.name.startswith("."):
                        continue
                    if not f.is_file():
                        raise DataError(f"unexpected folder {split}/{child.name}/{f.name} in {root}; expected image files")
                    st = f.stat()
                    files.append((f"{split}/{child.name}/{f.name}", st.st_size, st.st_mtime_ns))
            if not files:
                raise DataError(f"empty class folder {split}/{child.name} in {root}; every class needs at least one image")
            entries.extend(files)
        missing = [c for c in CLASSES if c not in seen]
        if missing:
            raise DataError(
                f"{root / split} has no folder for class {', '.join(repr(c) for c in missing)}; "
                f"expected one folder per class: {', '.join(CLASSES)}"
            )
    entries.sort(key=lambda e: e[0].encode())
    return entries


def _origin_of(rel: str) -> int:
    """The origin from the file-name prefix (Training_..., PublicTest_..., PrivateTest_...)."""
    split, _, name = rel.split("/", 2)
    prefix = name.split("_", 1)[0]
    if prefix in ORIGINS[:3]:
        origin = ORIGINS.index(prefix)
        if (origin == TRAINING) != (split == "train"):
            raise DataError(
                f"{rel} is named as a {prefix} image but lies in {split}/; expected Training_* files "
                f"in train/ and PublicTest_*/PrivateTest_* files in test/"
            )
        return origin
    return TRAINING if split == "train" else TEST_UNKNOWN


def _decode_image(blob: bytes) -> tuple[np.ndarray, bool]:
    """Decode to 48x48 uint8 grayscale; convert (luma, nearest resize) like Keras' load_img."""
    from PIL import Image

    im: Image.Image  # the opened file, then its converted copy
    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        converted = im.mode != "L" or im.size != (SIZE, SIZE)
        if im.mode != "L":
            im = im.convert("L")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.NEAREST)
        return np.asarray(im, dtype=np.uint8), converted


def _decode_folder(root: Path, listing: list[tuple[str, int, int]], skip_bad: bool) -> FER2013:
    def work(rel: str):
        blob = (root / rel).read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        try:
            image, converted = _decode_image(blob)
        except Exception as exc:  # PIL raises many types for bad files; all mean "not an image"
            return digest, None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        return digest, (image, converted), None

    rels = [rel for rel, _, _ in listing]
    origins = np.array([_origin_of(rel) for rel in rels], dtype=np.int8)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
        results = list(pool.map(work, rels, chunksize=256))

    # The fingerprint reproduces `find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`.
    fingerprint = fingerprint_listing((digest, rel) for (digest, _, _), rel in zip(results, rels))
    bad = [(rel, err) for (_, _, err), rel in zip(results, rels) if err]
    if bad and not skip_bad:
        rel, err = bad[0]
        more = f" ({len(bad)} bad files in all)" if len(bad) > 1 else ""
        raise DataError(
            f"cannot read image {root / rel}: {err}; expected a 48x48 grayscale image file "
            f"(fix or remove it, or pass --skip-bad to skip such files){more}"
        )
    keep = [i for i, (_, decoded, _) in enumerate(results) if decoded is not None]
    images = np.stack([results[i][1][0] for i in keep]) if keep else np.zeros((0, SIZE, SIZE), np.uint8)
    labels = np.array([CLASSES.index(rels[i].split("/")[1].lower()) for i in keep], dtype=np.int8)
    data = FER2013(
        images=images,
        labels=labels,
        origins=origins[keep],
        files=np.array([rels[i] for i in keep]),
        info=SourceInfo(
            format="folder",
            path=str(root),
            fingerprint=fingerprint,
            converted=sum(results[i][1][1] for i in keep),
            skipped=tuple(rel for rel, _ in bad),
        ),
    )
    _check_no_empty_class(data, root)
    return data


def fingerprint_listing(digests) -> str:
    """sha256 of a `sha256sum` listing ("<hex>  ./<path>" lines in byte order).

    For a folder of .jpg files this equals the checksum command in the FER2013 README.
    """
    h = hashlib.sha256()
    for digest, rel in sorted(digests, key=lambda d: d[1].encode()):
        h.update(f"{digest}  ./{rel}\n".encode())
    return h.hexdigest()


def _decode_csv(path: Path, skip_bad: bool) -> FER2013:
    blob = path.read_bytes()
    fingerprint = hashlib.sha256(blob).hexdigest()
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a text csv ({exc.reason} at byte {exc.start}); expected the Kaggle fer2013.csv") from exc
    reader = _csv_rows(path, text)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        got = ",".join(header)
        raise DataError(
            f"{path} is missing column(s) {', '.join(missing)}; expected a header with columns "
            f"{','.join(CSV_COLUMNS)}, got {(got if got.isprintable() else repr(got)) or 'an empty file'}"
        )
    col = {name: header.index(name) for name in CSV_COLUMNS}
    images, labels, origins, files, skipped = [], [], [], [], []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            image, label, origin = _parse_row(row, col)
        except ValueError as exc:
            if not skip_bad:
                raise DataError(f"{path} line {line}: {exc} (pass --skip-bad to skip bad rows)") from None
            skipped.append(f"{path.name}:{line}")
            continue
        images.append(image)
        labels.append(label)
        origins.append(origin)
        files.append(f"{path.name}:{line}")
    data = FER2013(
        images=np.stack(images) if images else np.zeros((0, SIZE, SIZE), np.uint8),
        labels=np.array(labels, dtype=np.int8),
        origins=np.array(origins, dtype=np.int8),
        files=np.array(files),
        info=SourceInfo(format="csv", path=str(path), fingerprint=fingerprint, converted=0, skipped=tuple(skipped)),
    )
    _check_no_empty_class(data, path)
    return data


def _csv_rows(path: Path, text: str):
    """The rows of the csv `text`; the csv module's own complaints (a field over its
    size limit) as a DataError naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": csv reads \r, \n and \r\n line ends itself
    try:
        yield from reader
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: {exc}; expected the Kaggle fer2013.csv") from None


def _parse_row(row: list[str], col: dict[str, int]) -> tuple[np.ndarray, int, int]:
    if len(row) <= max(col.values()):
        raise ValueError(f"expected {len(CSV_COLUMNS)} columns, got {len(row)}")
    emotion, pixels, usage = (row[col[c]].strip() for c in CSV_COLUMNS)
    if emotion not in {str(i) for i in range(len(CSV_EMOTIONS))}:
        raise ValueError(f"emotion must be an integer 0..6, got {emotion!r}")
    if usage not in ORIGINS[:3]:
        raise ValueError(f"Usage must be one of Training, PublicTest, PrivateTest, got {usage!r}")
    values = pixels.split()
    if len(values) != SIZE * SIZE:
        raise ValueError(f"expected {SIZE * SIZE} pixel values ({SIZE}x{SIZE}), got {len(values)}")
    digits = "".join(values)
    if not (digits.isascii() and digits.isdigit()):  # 0-9 only: int() also takes "+5", "1_0", "²"-like digits
        bad = next(v for v in values if not (v.isascii() and v.isdigit()))
        raise ValueError(f"pixels must be integers 0..255, got {bad!r}")
    try:
        array = np.array(values, dtype=np.int32)
    except (OverflowError, ValueError):  # past int32, or past int()'s 4300 digits
        array = None
    if array is None or array.max() > 255:
        big = next(v.lstrip("0") for v in values if len(v.lstrip("0")) > 3 or int(v) > 255)
        raise ValueError(f"pixels must be integers 0..255, got {big if len(big) <= 12 else big[:12] + '...'}")
    label = CLASSES.index(CSV_EMOTIONS[int(emotion)])
    return array.astype(np.uint8).reshape(SIZE, SIZE), label, ORIGINS.index(usage)


def _check_no_empty_class(data: FER2013, source: Path) -> None:
    for split, counts in (("train", data.counts()["train"]), ("test", data.counts()["test"])):
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise DataError(
                f"class {', '.join(empty)} has no {split} images in {source}; every class needs at "
                f"least one image in train and test"
            )


# --------------------------------------------------------------------------- cache


def _check_cache_dir(directory: Path, source: Path) -> None:
    """Fail early, before decoding, when the cache cannot be written or would land in the data."""
    resolved = directory.resolve()
    data_root = source.resolve()  # a folder dataset; a csv is one file and cannot contain the cache
    if resolved == data_root or data_root in resolved.parents:
        raise DataError(
            f"cache directory {directory} lies inside the data folder {data_root}; expected a folder "
            f"outside it (pass --cache-dir or set FERHPO_CACHE)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        raise DataError(
            f"cache directory {directory} is not writable ({exc.strerror or exc}); expected a writable "
            f"folder (pass --cache-dir DIR or set FERHPO_CACHE)"
        ) from None


def _cache_name(fmt: str, source: Path, listing, skip_bad: bool) -> str:
    """File name keyed by the source path and its listing; a changed source gets a new name."""
    resolved = str(source.resolve())
    if listing is None:
        st = source.stat()
        listing = [(source.name, st.st_size, st.st_mtime_ns)]
    key = hashlib.sha256(json.dumps([_CACHE_FORMAT, fmt, resolved, bool(skip_bad), listing]).encode()).hexdigest()
    return f"fer2013-{_source_id(source)}-{key[:20]}.npz"


def _source_id(source: Path) -> str:
    return hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]


def _read_cache(path: Path) -> FER2013 | None:
    """The cached arrays, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("cache_format") != _CACHE_FORMAT:
                return None
            return FER2013(
                images=z["images"],
                labels=z["labels"],
                origins=z["origins"],
                files=z["files"],
                info=SourceInfo(
                    format=meta["format"],
                    path=meta["path"],
                    fingerprint=meta["fingerprint"],
                    converted=meta["converted"],
                    skipped=tuple(meta["skipped"]),
                ),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, data: FER2013) -> None:
    """Write atomically (temp file + rename), then drop older caches of the same source."""
    meta = {
        "cache_format": _CACHE_FORMAT,
        "format": data.info.format,
        "path": data.info.path,
        "fingerprint": data.info.fingerprint,
        "converted": data.info.converted,
        "skipped": list(data.info.skipped),
    }
    try:
        with atomic_open(path) as f:
            np.savez(
                f,
                images=data.images,
                labels=data.labels,
                origins=data.origins,
                files=data.files,
                meta=np.array(json.dumps(meta)),
            )
    except OSError as exc:
        raise DataError(
            f"cannot write the data cache {path} ({exc.strerror or exc}); expected a writable folder "
            f"with room for about {data.images.nbytes // 2**20 + 1} MiB (pass --cache-dir or set FERHPO_CACHE)"
        ) from None
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(prefix + "*.npz"):
        if old != path:
            old.unlink(missing_ok=True)


def summary(data: FER2013) -> dict:
    """A JSON-ready description of a loaded dataset (what `ferhpo data summary` prints)."""
    info = data.info
    counts = data.counts()
    return {
        "format": info.format,
        "path": info.path,
        "fingerprint": info.fingerprint,
        "counts": counts,
        "totals": {split: sum(c.values()) for split, c in counts.items()},
        "origins": {name: int((data.origins == i).sum()) for i, name in enumerate(ORIGINS)},
        "converted": info.converted,
        "skipped": len(info.skipped),
        "skipped_files": list(info.skipped),
        "cache": {"path": info.cache_path, "hit": info.cache_hit, "load_seconds": round(info.load_seconds, 4)},
    }
