"""Property-based tests (Hypothesis) of the readers of user files.

Every reader of something a user writes, given any input, returns a result or raises
ONE ferhpo error (`FerhpoError` or a subclass) whose message is one line; never another
exception, and never a half-written file. The readers:

1. search-space files (`ferhpo.spaces.load_space` / `parse_space`): arbitrary bytes and
   text, TOML-ish text built from the format's own lines, documents built from random
   values, and shipped spaces with a few values changed;
2. the preset table (`ferhpo.presets.load_presets`, `--presets FILE`): the same kinds
   of input, around ``search_spaces/baseline.toml``;
3. the Kaggle csv (`ferhpo.data.load_fer2013` on a ``fer2013.csv``, through the cache):
   arbitrary bytes and text, and a complete tiny csv with a few rows, fields or header
   names changed; the cache folder holds nothing after an error and exactly one cache
   file after a success;
4. ``ferhpo baseline --set KEY=VALUE`` (`ferhpo.cli.baseline._select_runs`, which
   parses the values and applies them to the presets or a space's defaults).

Each example works in its own temporary folder (`tempfile`, as pytest's function-scoped
`tmp_path` is not reset between examples). Example counts are modest so the file runs in
seconds; none of it imports Keras (the last test checks). The `@example`s are inputs
that once broke a reader (an exception other than a ferhpo error, a message of two
lines, or a memory-eating hang).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import io
import json
import math
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ferhpo.config import DenseNetConfig, Preset, ResNetConfig, TrainConfig
from ferhpo.data import CSV_COLUMNS, CSV_EMOTIONS, ORIGINS, SIZE
from ferhpo.errors import FerhpoError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "search_spaces"
TEST_SPACES = REPO / "tests" / "spaces"
SPACE_FILES = sorted(p for p in SHIPPED.glob("*.toml") if p.name != "baseline.toml") + sorted(TEST_SPACES.glob("*.toml"))
PRESET_FILE = SHIPPED / "baseline.toml"

# The conftest's autouse fixtures only set environment variables, the same for every
# example; each example makes its own folders.
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


MODEL_FIELDS = sorted(set(_fields(DenseNetConfig)) | set(_fields(ResNetConfig)))
TRAIN_FIELDS = _fields(TrainConfig)
PRESET_FIELDS = _fields(Preset)


# --------------------------------------------------------------------------- the property


def one_line(error: FerhpoError) -> str:
    message = str(error)
    assert message.strip(), f"{type(error).__name__} with an empty message"
    assert len(message.splitlines()) == 1, f"{type(error).__name__} message is not one line: {message!r}"
    return message


def outcome(fn, *args, **kwargs):
    """`fn`'s result, or the FerhpoError it raised (its message checked to be one line).
    Any other exception propagates and fails the test."""
    try:
        return fn(*args, **kwargs)
    except FerhpoError as error:
        one_line(error)
        return error


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- TOML values and writing

INTS = st.one_of(
    st.integers(-3, 260),
    st.sampled_from([0, 1, 2, 3, 4, 7, 8, 12, 16, 20, 32, 48, 56, 104, 110, 2**31, 2**62, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.1, 0.5, 1.0, 2.0, 1e-3, 1e-12, 1e-300, 5e-324, 1e300, math.inf, -math.inf, math.nan]),
    st.floats(),
)
WORDS = st.sampled_from(
    [
        "densenet",
        "resnet",
        "int",
        "float",
        "categorical",
        "bool",
        "adam",
        "sgd",
        "avg4",
        "gap",
        "float32",
        "cosine",
        "reference-step",
        "holdout",
        "canonical",
        "version",
        "depth",
        "growth_rate",
        "",
    ]
)
SCALARS = st.one_of(INTS, FLOATS, st.booleans(), WORDS, st.text(max_size=8))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


def toml_string(text: str) -> str:
    # JSON's escapes are TOML's; DEL is the one control character JSON leaves raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(doc: dict) -> str:
    """`doc` as TOML: one ``key = value`` line per top-level key, tables inline."""
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def _same_document(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_document(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_document(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, **SETTINGS)
@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=4))
def test_the_toml_writer_of_these_tests_round_trips(doc):
    assert _same_document(tomllib.loads(toml_document(doc)), doc)


# A TOML literal as a user might type it, valid or not.
LITERALS = st.one_of(
    SCALARS.map(toml_value),
    VALUES.map(toml_value),
    st.sampled_from(
        [
            "1979-05-27",
            "07:32:00",
            "1979-05-27T07:32:00Z",
            "0x1f",
            "0o17",
            "0b101",
            "1_000",
            "+inf",
            "-nan",
            "1e",
            "[1, 2",
            "{a = }",
            "'single'",
            '"""multi"""',
            "'''raw'''",
            "[[1]]",
            "{ version = [1] }",
            "true false",
        ]
    ),
    st.text(max_size=12),
)


def _mutated_numbers(value):
    """Values near `value`, for the edges of the rules (low/high, steps, grids)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return SCALARS
    near = [value + 1, value - 1, -value, value * 10, value / 3, 0, 1, 2**63 - 1, value + 0.5]
    if isinstance(value, int):
        near += [value * 2**40, value // 2]
    return st.one_of(st.sampled_from(near), SCALARS)


def _paths(node, prefix=()):
    """Every place in a parsed TOML document: (path of keys and list indices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, original: dict):
    """`original` with one to three changes: a value replaced (often by a nearby number),
    a key or list item removed, a key added."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(doc))
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent = _at(doc, path[:-1])
        key = path[-1]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "replace":
            parent[key] = draw(st.one_of(_mutated_numbers(parent[key]), VALUES))
        elif action == "remove":
            del parent[key]
        elif isinstance(parent, dict):
            new_key = draw(st.one_of(st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS + ["when", "log", "step"]), st.text(max_size=6)))
            parent[new_key] = draw(VALUES)
        else:
            parent.append(draw(SCALARS))
    return doc


def toml_ish_text(headers: list[str], keys: list[str]):
    """Text made of the format's own lines (headers, ``key = literal``) and garbage."""
    line = st.one_of(
        st.sampled_from(headers),
        st.builds(lambda k, v: f"{k} = {v}", st.one_of(st.sampled_from(keys), st.text(max_size=6)), LITERALS),
        st.text(max_size=20),
    )
    return st.lists(line, max_size=14).map("\n".join)


# --------------------------------------------------------------------------- 1. space files

SPACE_DOCS = [tomllib.loads(p.read_text()) for p in SPACE_FILES]
SPACE_HEADERS = [
    "[space]",
    "[fixed]",
    "[params]",
    "[params.x]",
    "[params.depth]",
    "[params.version]",
    "[params.growth_rate]",
    "[[params]]",
    "[params.x.when]",
    "[space.family]",
]
SPACE_KEYS = [
    "family",
    "description",
    "type",
    "field",
    "low",
    "high",
    "step",
    "log",
    "choices",
    "default",
    "when",
    *MODEL_FIELDS,
    *TRAIN_FIELDS,
]
PARAM_NAMES = st.one_of(
    st.sampled_from(["x", "y", "version", "depth", "growth_rate", "learning_rate", "head"]), st.text(max_size=6)
)


def mostly(good, bad):
    """`good` nine times in ten, else `bad`: structured inputs that pass the first checks
    and reach the later ones."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else good)


NUMBERS = st.one_of(INTS, FLOATS)
CHOICE_LISTS = st.one_of(
    st.lists(st.integers(-3, 300), min_size=1, max_size=4),
    st.lists(st.floats(0, 1), min_size=1, max_size=4),
    st.lists(st.one_of(WORDS, st.text(max_size=4)), min_size=1, max_size=4),
    st.lists(SCALARS, max_size=4),
)


@st.composite
def param_tables(draw, earlier: list[str]):
    """A [params.<name>] table, mostly of a known type with the keys that type takes."""
    kind = draw(mostly(st.sampled_from(["int", "float", "categorical", "bool"]), SCALARS))
    table: dict = {"type": kind}
    if kind in ("int", "float"):
        bounds = st.one_of(INTS, FLOATS) if kind == "float" else mostly(INTS, SCALARS)
        low, high = draw(bounds), draw(bounds)
        if draw(st.booleans()) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            low, high = min(low, high), max(low, high)
        table.update(low=low, high=high, default=draw(st.one_of(st.sampled_from([low, high]), NUMBERS, SCALARS)))
        if draw(st.integers(0, 2)) == 0:
            table["step"] = draw(st.one_of(st.sampled_from([1, 2, 3, 6, 0.1, 0.25, 1e-3]), NUMBERS, SCALARS))
        if draw(st.integers(0, 2)) == 0:
            table["log"] = draw(mostly(st.booleans(), SCALARS))
    elif kind == "categorical":
        choices = draw(mostly(CHOICE_LISTS, VALUES))
        table["choices"] = choices
        options = st.sampled_from(choices) if isinstance(choices, list) and choices else SCALARS
        table["default"] = draw(mostly(options, SCALARS))
    else:
        table["default"] = draw(mostly(st.booleans(), SCALARS))
    if draw(st.integers(0, 3)) == 0:
        table["field"] = draw(mostly(st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS), SCALARS))
    if draw(st.integers(0, 3)) == 0:
        parent = st.sampled_from(earlier) if earlier else PARAM_NAMES
        condition = st.dictionaries(parent, st.one_of(st.lists(SCALARS, max_size=3), SCALARS), min_size=1, max_size=2)
        table["when"] = draw(mostly(condition, VALUES))
    if draw(st.integers(0, 9)) == 0:
        table[draw(st.sampled_from(["choices", "low", "step", "colour"]))] = draw(SCALARS)
    return table


@st.composite
def space_documents(draw) -> dict:
    doc: dict = {}
    if draw(st.integers(0, 9)):
        head = {"family": draw(mostly(st.sampled_from(["densenet", "resnet"]), SCALARS))}
        if draw(st.booleans()):
            head["description"] = draw(mostly(st.text(max_size=10), SCALARS))
        doc["space"] = draw(mostly(st.just(head), VALUES))
    if draw(st.booleans()):
        fields = mostly(st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS), st.text(max_size=6))
        doc["fixed"] = draw(mostly(st.dictionaries(fields, SCALARS, max_size=3), VALUES))
    if draw(st.integers(0, 4)):
        params: dict = {}
        for _ in range(draw(st.integers(0, 4))):
            name = draw(mostly(st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS), PARAM_NAMES))
            params[name] = draw(param_tables(list(params)))
        doc["params"] = draw(mostly(st.just(params), VALUES))
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.text(max_size=6))] = draw(VALUES)
    return doc


SPACE_DOCUMENTS = space_documents()


def write(path: Path, content: str | bytes) -> None:
    """A generated file's content as it is: bytes as bytes, text as UTF-8."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def read_space(content: str | bytes):
    """Write `content` as a space file and read it, both ways a file reaches the reader."""
    from ferhpo.spaces import load_space, parse_space

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "space.toml"
        write(path, content)
        result = outcome(load_space, path)
        again = outcome(parse_space, str(path))
        assert type(again) is type(result) and str(again) == str(result)
        if not isinstance(result, FerhpoError):
            defaults = result.defaults()
            outcome(result.configs, defaults)  # the reader built them once: they build
            result.grid()
        assert files_under(Path(folder)) == ["space.toml"]
        return result


@settings(max_examples=40, **SETTINGS)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_space_reader_on_arbitrary_bytes_and_text(content):
    read_space(content)


@settings(max_examples=60, **SETTINGS)
@given(toml_ish_text(SPACE_HEADERS, SPACE_KEYS))
@example('[space]\nfamily = "resnet"\n[params.x]\nfield = "depth"\n' + "x = " + "[" * 3000 + "]" * 3000)
def test_space_reader_on_toml_ish_text(text):
    read_space(text)


@settings(max_examples=80, **SETTINGS)
@given(SPACE_DOCUMENTS)
@example({"space": {"family": "densenet"}, "fixed": {"num_blocks": 2**62}})
@example({"space": {"family": "resnet"}, "params": {"depth": {"type": "int", "low": -(2**63), "high": 2**63 - 1, "default": 20}}})
@example(
    {
        "space": {"family": "resnet"},
        "params": {"l2": {"type": "float", "low": 0.0, "high": 1e300, "step": 1e-300, "default": 0.0}},
    }
)
@example(
    {"space": {"family": "resnet"}, "params": {"l2": {"type": "float", "low": 0.0, "high": 1.0, "step": 1e-15, "default": 0.0}}}
)
def test_space_reader_on_random_documents(doc):
    read_space(toml_document(doc))


@settings(max_examples=100, **SETTINGS)
@given(st.sampled_from(range(len(SPACE_DOCS))).flatmap(lambda i: mutated(SPACE_DOCS[i])))
def test_space_reader_on_shipped_spaces_with_a_few_changes(doc):
    read_space(toml_document(doc))


def test_the_shipped_spaces_read_unchanged():
    for doc, path in zip(SPACE_DOCS, SPACE_FILES):
        result = read_space(toml_document(doc))
        assert not isinstance(result, FerhpoError), f"{path.name}: {result}"


# --------------------------------------------------------------------------- 2. the preset table

PRESET_DOC = tomllib.loads(PRESET_FILE.read_text())
PRESET_HEADERS = ['[presets."a"]', "[presets]", "[presets.a.model]", "[presets.a.train]", "[[presets]]", "[model]"]
PRESET_KEYS = [
    "presets",
    "description",
    "protocol",
    "reported_test_accuracy",
    "reported_params",
    "model",
    "train",
    "family",
    *MODEL_FIELDS,
    *TRAIN_FIELDS,
]


@st.composite
def preset_tables(draw) -> dict:
    """A [presets."<name>"] table, mostly with the keys a preset needs."""
    family = draw(mostly(st.sampled_from(["densenet", "resnet"]), VALUES))
    fields = _fields(DenseNetConfig) if family == "densenet" else _fields(ResNetConfig)
    model = {
        "family": family,
        **draw(st.dictionaries(mostly(st.sampled_from(fields), st.text(max_size=5)), mostly(INTS, SCALARS), max_size=3)),
    }
    train = draw(st.dictionaries(mostly(st.sampled_from(TRAIN_FIELDS), st.text(max_size=5)), SCALARS, max_size=3))
    table = {
        "description": draw(mostly(st.text(max_size=10), SCALARS)),
        "protocol": draw(mostly(st.sampled_from(["holdout", "seed-densenet"]), SCALARS)),
        "reported_test_accuracy": draw(mostly(st.floats(0, 1), SCALARS)),
        "reported_params": draw(mostly(st.integers(1, 10**7), SCALARS)),
        "model": draw(mostly(st.just(model), VALUES)),
        "train": draw(mostly(st.just(train), VALUES)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(table)), max_size=1)):
        del table[key]
    if draw(st.integers(0, 9)) == 0:
        table[draw(st.text(max_size=6))] = draw(SCALARS)
    return table


PRESET_DOCUMENTS = st.one_of(
    st.fixed_dictionaries({"presets": st.dictionaries(st.text(max_size=8), preset_tables(), max_size=3)}),
    st.dictionaries(st.one_of(st.just("presets"), st.text(max_size=6)), VALUES, max_size=3),
)


def read_presets(content: str | bytes):
    from ferhpo.presets import get_preset, load_presets

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "presets.toml"
        write(path, content)
        result = outcome(load_presets, path)
        if not isinstance(result, FerhpoError):
            assert result and all(isinstance(p, Preset) for p in result.values())
            for name in result:
                assert outcome(get_preset, name, path=path) == result[name]
            assert isinstance(outcome(get_preset, "no-such-preset", path=path), FerhpoError)
        assert files_under(Path(folder)) == ["presets.toml"]
        return result


@settings(max_examples=40, **SETTINGS)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), toml_ish_text(PRESET_HEADERS, PRESET_KEYS)))
def test_preset_reader_on_arbitrary_text(content):
    read_presets(content)


@settings(max_examples=60, **SETTINGS)
@given(PRESET_DOCUMENTS)
@example(
    {
        "presets": {
            "a": {
                "protocol": "holdout",
                "reported_test_accuracy": 0.5,
                "reported_params": 1,
                "model": {"family": ["densenet"]},
                "train": {},
            }
        }
    }
)
@example(
    {
        "presets": {
            "a": {
                "protocol": "holdout",
                "reported_test_accuracy": 0.5,
                "reported_params": 1,
                "model": {"family": "densenet", "num_blocks": 2**63 - 1},
                "train": {},
            }
        }
    }
)
def test_preset_reader_on_random_documents(doc):
    read_presets(toml_document(doc))


@settings(max_examples=80, **SETTINGS)
@given(mutated(PRESET_DOC))
def test_preset_reader_on_the_shipped_table_with_a_few_changes(doc):
    read_presets(toml_document(doc))


# --------------------------------------------------------------------------- 3. the Kaggle csv

PIXELS = SIZE * SIZE
BAD_PIXELS = [
    "256",
    "-1",
    "x",
    "1.5",
    "\u00b2",
    "\u0663",
    "99999999999",
    "9" * 40,
    "0x10",
    "+5",
    "1_0",
    "nan",
    "1e3",
    "\u00a0",
    "\x00",
    "0255",
    "00",
]
BAD_FIELDS = ["", " ", "7", "-1", "3.0", "x", "\u0663", "training", "Test", "PublicTest ", "\n", '"', "0\n1", "1,2", "\x00"]


# "²" is a digit to str.isdigit but not to int()
SUPERSCRIPT_TWO_FIRST = " ".join(["\u00b2"] + ["1"] * (PIXELS - 1))


def _pixel_text(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, PIXELS)))


@st.composite
def csv_texts(draw) -> str:
    """A complete tiny Kaggle csv (every class in Training, PublicTest and PrivateTest),
    then a few changes: header names, fields, pixel tokens, whole rows."""
    header = list(CSV_COLUMNS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    rows = [[str(e), _pixel_text(e * 3 + i), usage] for e in range(len(CSV_EMOTIONS)) for i, usage in enumerate(ORIGINS[:3])]
    rows = [[row[CSV_COLUMNS.index(h)] for h in header] for row in rows]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["header", "field", "pixel", "pixel count", "row", "extra column"]))
        r = draw(st.integers(0, len(rows) - 1))
        pixels_at = header.index("pixels") if "pixels" in header else None
        if kind == "header":
            names = st.one_of(st.sampled_from(BAD_FIELDS + ["Emotion", " emotion "]), st.text(max_size=8))
            header[draw(st.integers(0, len(header) - 1))] = draw(names)
        elif kind == "field":
            c = draw(st.integers(0, len(rows[r]) - 1))
            rows[r][c] = draw(st.one_of(st.sampled_from(BAD_FIELDS), st.text(max_size=8), st.integers(-2, 9).map(str)))
        elif kind in ("pixel", "pixel count") and pixels_at is not None and pixels_at < len(rows[r]):
            tokens = rows[r][pixels_at].split()
            if kind == "pixel" and tokens:
                tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.one_of(st.sampled_from(BAD_PIXELS), st.text(max_size=4)))
            else:
                n = draw(st.sampled_from([0, 1, PIXELS - 1, PIXELS + 1, 2 * PIXELS]))
                tokens = (tokens * 3)[:n]
            rows[r][pixels_at] = draw(st.sampled_from([" ", "  ", "\t"])).join(tokens)
        elif kind == "row":
            del rows[r]
            if not rows:
                rows = [[]]
        else:
            rows[r].append(draw(st.text(max_size=3)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    return ("\ufeff" if draw(st.booleans()) else "") + buffer.getvalue()


def read_csv(content: str | bytes, skip_bad: bool, use_cache: bool = True):
    from ferhpo.data import FER2013, load_fer2013

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "data" / "fer2013.csv"
        path.parent.mkdir()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8", "surrogatepass"))
        cache = root / "cache"
        result = outcome(load_fer2013, path, cache, skip_bad=skip_bad, use_cache=use_cache)
        assert files_under(path.parent) == ["fer2013.csv"]
        if isinstance(result, FerhpoError):
            # nothing left half-written: no cache file, no temporary or probe file
            assert not cache.exists() or files_under(cache) == [], files_under(cache)
            return result
        assert isinstance(result, FER2013)
        n = len(result.images)
        assert result.images.shape == (n, SIZE, SIZE) and result.images.dtype == np.uint8
        assert len(result.labels) == len(result.origins) == len(result.files) == n
        if use_cache:
            cached = files_under(cache)
            assert len(cached) == 1 and cached[0].startswith("fer2013-") and cached[0].endswith(".npz"), cached
            warm = load_fer2013(path, cache, skip_bad=skip_bad)
            assert warm.info.cache_hit and np.array_equal(warm.images, result.images)
            assert np.array_equal(warm.labels, result.labels) and np.array_equal(warm.origins, result.origins)
        return result


@settings(max_examples=40, **SETTINGS)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.lists(st.lists(st.text(max_size=6), max_size=4), max_size=5).map(
            lambda rows: "\n".join(",".join(r) for r in [list(CSV_COLUMNS)] + rows)
        ),
    ),
    st.booleans(),
)
@example('"a\nb",pixels,Usage\n', False)
@example("emotion,pixels,Usage\n0," + "1" * 140000 + ",Training\n", False)
def test_csv_reader_on_arbitrary_text(content, skip_bad):
    read_csv(content, skip_bad)


@settings(max_examples=50, **SETTINGS)
@given(csv_texts(), st.booleans(), st.booleans())
@example(
    "emotion,pixels,Usage\n" + "".join(f"{e},{SUPERSCRIPT_TWO_FIRST},{u}\n" for e in range(7) for u in ORIGINS[:3]), False, True
)
@example("emotion,pixels,Usage\n0," + " ".join(["99999999999"] * PIXELS) + ",Training\n", False, True)
def test_csv_reader_on_a_tiny_csv_with_a_few_changes(content, skip_bad, use_cache):
    read_csv(content, skip_bad, use_cache)


def test_the_unchanged_tiny_csv_reads():
    text = "emotion,pixels,Usage\n" + "".join(
        f"{e},{_pixel_text(e)},{u}\n" for e in range(len(CSV_EMOTIONS)) for u in ORIGINS[:3]
    )
    result = read_csv(text, skip_bad=False)
    assert not isinstance(result, FerhpoError), result
    assert len(result.images) == 21


# --------------------------------------------------------------------------- 4. --set KEY=VALUE

# (field, value) pairs that a preset or space takes, to combine with the random ones
GOOD_SETS = [
    "batch_size=8",
    "epochs=2",
    "seed=3",
    "optimizer=sgd",
    'optimizer="adam"',
    "schedule=cosine",
    "learning_rate=1e-2",
    "compression=0.6",
    "growth_rate=8",
    "depth=20",
    "depth=29",
    "version=2",
    "head=gap",
    "dropout=0.1",
    "plateau=false",
    "precision=mixed_bfloat16",
    "mixup=0.2",
    "l2=0",
    "input_shape=[48, 48, 1]",
    "num_blocks=3",
    "base_filters=8",
    "protocol=canonical",
]
SET_KEYS = mostly(
    st.sampled_from(MODEL_FIELDS + TRAIN_FIELDS + PRESET_FIELDS + ["path", "family", "depth", "colour"]),
    st.text(max_size=8),
)
SET_ITEMS = st.one_of(
    st.sampled_from(GOOD_SETS),
    st.builds(lambda k, v: f"{k}={v}", SET_KEYS, LITERALS),
    st.builds(lambda k, v: f" {k} = {v} ", SET_KEYS, LITERALS),
    mostly(st.sampled_from(GOOD_SETS), st.text(max_size=16)),
)


def select_runs(items: list[str], only=None, space=None, seed=None, precision=None):
    from ferhpo.cli.baseline import _select_runs

    args = argparse.Namespace(set=items, seed=seed, precision=precision, space=space, only=only, presets=None, protocol=None)
    result = outcome(_select_runs, args)
    if not isinstance(result, FerhpoError):
        assert result and all(isinstance(run.train, TrainConfig) for run in result)
        assert all(isinstance(run.model, (DenseNetConfig, ResNetConfig)) for run in result)
    return result


@settings(max_examples=80, **SETTINGS)
@given(
    st.lists(SET_ITEMS, min_size=1, max_size=3),
    st.sampled_from([None, ["resnet-v1-104"], ["densenet-c0.5"], ["no-such-preset"]]),
)
@example(["name=x"], ["resnet-v1-104"])
@example(["path=x"], ["resnet-v1-104"])
@example(["num_blocks=9223372036854775807"], ["densenet-c0.5"])
@example(["depth=" + "[" * 3000], ["resnet-v1-104"])
def test_set_on_the_presets(items, only):
    select_runs(items, only=only)


@settings(max_examples=40, **SETTINGS)
@given(st.lists(SET_ITEMS, min_size=1, max_size=3), st.sampled_from(["resnet-cpu", "densenet-cpu", "no-such-space"]))
def test_set_on_a_space(items, space):
    select_runs(items, space=space)


def test_the_readers_never_import_keras():
    """In a fresh interpreter (other test files of a session may have imported Keras)."""
    code = (
        "import sys, argparse\n"
        "from ferhpo.presets import load_presets\n"
        "from ferhpo.spaces import load_space\n"
        "from ferhpo.data import load_fer2013\n"
        "from ferhpo.cli.baseline import _select_runs\n"
        "load_presets(); load_space('resnet-cpu')\n"
        "_select_runs(argparse.Namespace(set=['batch_size=8'], seed=None, precision=None, space=None, only=None,\n"
        "                                presets=None, protocol=None))\n"
        "try:\n    load_fer2013(sys.argv[1], sys.argv[1])\nexcept Exception:\n    pass\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
