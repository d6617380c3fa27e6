"""`ferhpo predict`: faces found in photos, cropped like FER2013, classified, annotated.

The astronaut photo (scikit-image's sample, Eileen Collins) has one frontal face; its
Haar box measured (177, 67, 93, 93) on the 512x512 image, and the asserts below keep
a loose region around it. The command runs for real on a tiny baseline study trained
in seconds, and on a model exported from it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, write_folder
from ferhpo.cli import main
from ferhpo.data import CLASSES
from ferhpo.deploy import faces
from ferhpo.errors import FerhpoError

TINY_PRESET = """
[presets."tiny-densenet"]
protocol = "canonical"
reported_test_accuracy = 0.5
reported_params = 1
model = { family = "densenet", growth_rate = 4, num_blocks = 2, layers_per_block = 2, head = "gap" }
train = { optimizer = "rmsprop", batch_size = 16, epochs = 1 }
"""


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image (the test extra) gives the astronaut photo")
    return data.astronaut()


@pytest.fixture
def astronaut(tmp_path, astronaut_rgb) -> Path:
    path = tmp_path / "photos" / "astronaut.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(astronaut_rgb).save(path)
    return path


def _assert_her_face(box):
    x, y, w, h = box
    assert 75 <= w <= 120 and 75 <= h <= 120, box
    cx, cy = x + w / 2, y + h / 2
    assert 205 <= cx <= 245 and 95 <= cy <= 135, box  # measured centre (223.5, 113.5)


# --------------------------------------------------------------------------- faces.py


def test_astronaut_has_one_face_where_hers_is(astronaut):
    gray = faces.load_image(astronaut)
    assert gray.shape == (512, 512) and gray.dtype == np.uint8
    boxes = faces.find_faces(gray)
    assert len(boxes) == 1
    _assert_her_face(boxes[0])
    crop = faces.crop_face(gray, boxes[0])
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    # FER2013 framing: the crop spans ~1.2x the box, so her face fills the middle and
    # the background (bright wall) shows only at the top corners
    assert crop[20:30, 20:30].std() > 5


def test_large_photo_is_searched_downscaled_and_boxes_come_back_in_its_pixels(astronaut_rgb, tmp_path):
    big = Image.fromarray(astronaut_rgb).resize((2048, 2048), Image.BICUBIC)
    boxes = faces.find_faces(np.asarray(big.convert("L")))
    assert len(boxes) == 1
    _assert_her_face(tuple(v / 4 for v in boxes[0]))


def test_any_mode_and_exif_rotation_read_as_upright_grayscale(astronaut_rgb, tmp_path):
    upright = Image.fromarray(astronaut_rgb)
    plain = tmp_path / "plain.png"
    upright.save(plain)
    expected = faces.load_image(plain)
    # stored on its side, with the EXIF tag that tells viewers to turn it back
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    assert np.array_equal(faces.load_image(tmp_path / "turned.png"), expected)
    for mode in ("RGBA", "P", "LA", "CMYK", "I;16"):
        im = (
            upright.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(upright.convert("L")).astype(np.uint16) * 257)
        )
        path = tmp_path / f"mode-{mode.replace(';', '')}.{'tif' if mode == 'CMYK' else 'png'}"
        im.save(path)
        gray = faces.load_image(path)
        assert gray.shape == (512, 512) and gray.dtype == np.uint8, mode
        assert len(faces.find_faces(gray)) == 1, mode


def test_48x48_image_is_one_face_as_it_is(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "crop.png")
    gray = faces.load_image(tmp_path / "crop.png")
    assert faces.find_faces(gray) == [(0, 0, 48, 48)]
    assert np.array_equal(faces.crop_face(gray, (0, 0, 48, 48)), gray)


def test_crop_near_the_edge_keeps_the_square_and_refuses_boxes_outside():
    gray = np.tile(np.arange(200, dtype=np.uint8), (100, 1))
    crop = faces.crop_face(gray, (0, 0, 60, 60))  # the 72 px square runs off the top left
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop[:, 0].max() == 0  # the left edge repeated, not stretched
    assert faces.crop_face(gray, (190, 90, 10, 10)).shape == (48, 48)  # enlarged, bilinear
    with pytest.raises(ValueError, match="not inside"):
        faces.crop_face(gray, (150, 50, 60, 60))


def test_a_file_that_is_not_an_image_is_a_one_line_error(tmp_path):
    (tmp_path / "x.png").write_text("not a picture\n")
    with pytest.raises(faces.ImageError) as info:
        faces.load_image(tmp_path / "x.png")
    assert isinstance(info.value, FerhpoError)
    assert "x.png" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "cut.png").write_bytes((tmp_path / "x.png").read_bytes()[:0])
    with pytest.raises(faces.ImageError):
        faces.load_image(tmp_path / "cut.png")


def test_annotate_writes_a_readable_copy_of_the_original_size(astronaut, tmp_path):
    gray = faces.load_image(astronaut)
    (box,) = faces.find_faces(gray)
    out = faces.annotate(astronaut, [(box, "happy", 0.83)], tmp_path / "out" / "a.jpg")
    with Image.open(out) as im:
        assert im.size == (512, 512) and im.mode == "RGB"
        drawn = np.asarray(im)
    x, y, w, h = box
    assert drawn[y + h // 2, x, 1] > 150 and drawn[y + h // 2, x, 0] < 100  # the green box edge
    # from an array too, a grayscale one included
    out = faces.annotate(gray, [(box, "sad", 0.5)], tmp_path / "gray.png")
    with Image.open(out) as im:
        assert im.size == (512, 512)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]  # no temporary left


# --------------------------------------------------------------------------- the command's input checks


def _one_line_error(capsys, code: int) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("ferhpo: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "no MODEL and no PATH"),
        (["{photo}"], "is not a model exported by 'ferhpo export'"),
        (["{tmp}", "{photo}"], "has no model card"),
        (["--study", "s"], "no PATH given"),
        (["--trial", "1", "{photo}"], "--trial choose runs of a study"),
        (["--study", "s", "{tmp}/missing.jpg"], "missing.jpg does not exist"),
        (["--study", "s", "{tmp}/empty"], "no image files in"),
        (["--study", "s", "--annotate", "{photo}/out", "{photo}"], "is not a folder; expected a writable folder"),
        (["--study", "s", "--json", "--csv", "{photo}"], "not allowed with argument"),
    ],
)
def test_whole_command_errors_are_one_line_and_write_nothing(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "face.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(photo)
    (tmp_path / "empty").mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = main(["predict", *(a.format(photo=photo, tmp=tmp_path) for a in argv)])
    assert says in _one_line_error(capsys, code)
    assert sorted(tmp_path.rglob("*")) == before


def test_unknown_study_fails_before_reading_photos(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / "face.png")
    code = main(["predict", "--study", "nope", "--storage", f"sqlite:///{tmp_path}/s.db", "face.png"])
    assert "no study 'nope'" in _one_line_error(capsys, code)


# --------------------------------------------------------------------------- the command, end to end


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """A working folder holding studies/ with one finished baseline run (seconds to train)."""
    work = tmp_path_factory.mktemp("study")
    write_folder(work / "fer")
    (work / "presets.toml").write_text(TINY_PRESET)
    result = run_cli(
        "baseline",
        "--data",
        str(work / "fer"),
        "--cache-dir",
        str(work / "cache"),
        "--presets",
        str(work / "presets.toml"),
        "--only",
        "tiny-densenet",
        "--storage",
        _storage(work),
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    return work


def _storage(work: Path) -> str:
    return f"sqlite:///{work / 'studies' / 'ferhpo.db'}"


@pytest.fixture(scope="module")
def exported(tiny_study) -> Path:
    """The tiny study's run written by ferhpo.deploy.export as a Keras model folder."""
    from ferhpo import store
    from ferhpo.deploy import export, rebuild

    study = store.open_study("baseline", _storage(tiny_study), create=False)
    records = rebuild.select_records(study, root=tiny_study / "studies")
    export.export(records, fmt="keras", out=tiny_study / "model", root=tiny_study / "studies", study_name="baseline")
    return tiny_study / "model"


@pytest.fixture
def photos(tmp_path, astronaut) -> Path:
    """photos/: the astronaut, a 48x48 face in a subfolder, a text file named x.png,
    and files a folder search leaves out (not an image extension, hidden)."""
    folder = astronaut.parent
    (folder / "sub").mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / "sub" / "crop.png")
    (folder / "x.png").write_text("not a picture\n")
    (folder / "notes.txt").write_text("left out\n")
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / ".hidden.png")
    return folder


def _predict(work: Path, capsys, monkeypatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(work)  # the study's artifacts are found under ./studies
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_study_model_json_reports_each_face_and_each_bad_file(tiny_study, photos, tmp_path, capsys, monkeypatch):
    code, out, err = _predict(
        tiny_study,
        capsys,
        monkeypatch,
        "--study",
        "baseline",
        "--storage",
        _storage(tiny_study),
        str(photos),
        "--annotate",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0, err
    rows = {Path(r["file"]).relative_to(photos).as_posix(): r for r in json.loads(out)}
    assert sorted(rows) == ["astronaut.png", "sub/crop.png", "x.png"]
    her, crop, bad = rows["astronaut.png"], rows["sub/crop.png"], rows["x.png"]
    _assert_her_face(her["box"])
    assert crop["box"] == [0, 0, 48, 48] and crop["face"] == her["face"] == 0
    for r in (her, crop):
        assert r["error"] is None and list(r["probabilities"]) == list(CLASSES)
        assert r["class"] == max(r["probabilities"], key=r["probabilities"].get)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert bad["class"] is None and bad["probabilities"] is None and "cannot read" in bad["error"]
    # one stderr line for the bad file, one saying where the copies went
    assert [line for line in err.splitlines() if "x.png" in line] == [f"ferhpo: {bad['error']}"]
    with Image.open(tmp_path / "out" / "astronaut.png") as im:
        assert im.size == (512, 512)
    with Image.open(tmp_path / "out" / "sub" / "crop.png") as im:
        assert im.size == (48, 48)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "astronaut.png",
        "sub/crop.png",
    ]


def test_exported_model_csv_and_table_agree_with_the_study(tiny_study, exported, astronaut, capsys, monkeypatch):
    args = ("--study", "baseline", "--storage", _storage(tiny_study), str(astronaut), "--csv")
    code, out, err = _predict(tiny_study, capsys, monkeypatch, *args)
    assert code == 0, err
    (from_study,) = list(csv.DictReader(io.StringIO(out)))
    code, out, err = _predict(tiny_study, capsys, monkeypatch, str(exported), str(astronaut), "--csv")
    assert code == 0, err
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == ["file", "face", "x", "y", "w", "h", "class", *CLASSES, "error"]
    (row,) = list(reader)
    _assert_her_face(tuple(int(row[k]) for k in "xywh"))
    assert row["class"] == from_study["class"] and row["error"] == ""
    for c in CLASSES:
        assert float(row[c]) == pytest.approx(float(from_study[c]), abs=1e-5)
    # the default table: a header and one line for her face
    code, out, err = _predict(tiny_study, capsys, monkeypatch, str(exported), str(astronaut), "--tta")
    assert code == 0, err
    header, line = out.splitlines()
    assert header.split() == ["file", "face", "box", "x,y,w,h", "class", "prob"]
    assert line.split()[:2] == [str(astronaut), "0"] and line.split()[3] in CLASSES


def test_both_model_and_study_is_a_usage_error(tiny_study, exported, astronaut, capsys, monkeypatch):
    monkeypatch.chdir(tiny_study)
    code = main(["predict", "--study", "baseline", str(exported), str(astronaut)])
    assert "both MODEL" in _one_line_error(capsys, code)


def test_no_face_anywhere_exits_2_with_the_rows_still_printed(tiny_study, exported, tmp_path, capsys, monkeypatch):
    Image.fromarray(np.full((120, 160), 128, np.uint8)).save(tmp_path / "wall.png")
    (tmp_path / "x.png").write_text("text")
    code, out, err = _predict(
        tiny_study, capsys, monkeypatch, str(exported), str(tmp_path / "wall.png"), str(tmp_path / "x.png"), "--json"
    )
    assert code == 2
    rows = json.loads(out)
    assert [r["face"] for r in rows] == [None, None] and "no face found" in rows[0]["error"]
    assert err.splitlines()[-1] == "ferhpo: no face classified in 2 file(s)"


@pytest.mark.real_data
def test_fer2013_test_images_and_the_astronaut(real_data, tiny_study, astronaut, tmp_path, capsys, monkeypatch):
    """One real FER2013 test image of each class is one face as it is; the astronaut is annotated."""
    folder = tmp_path / "fer"
    folder.mkdir()
    for cls in CLASSES:
        first = sorted((real_data / "test" / cls).iterdir())[0]
        shutil.copy(first, folder / f"{cls}-{first.name}")
    code, out, err = _predict(
        tiny_study,
        capsys,
        monkeypatch,
        "--study",
        "baseline",
        "--storage",
        _storage(tiny_study),
        str(folder),
        str(astronaut),
        "--annotate",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == len(CLASSES) + 1 and all(r["error"] is None for r in rows)
    assert [r["box"] for r in rows[:-1]] == [[0, 0, 48, 48]] * len(CLASSES)
    _assert_her_face(rows[-1]["box"])
    with Image.open(tmp_path / "out" / "astronaut.png") as im:
        assert im.size == (512, 512)
    assert len(list((tmp_path / "out").iterdir())) == len(CLASSES) + 1


def test_an_image_too_large_to_decode_safely_is_a_one_line_error(tmp_path):
    """A small file may declare a huge image: refused before it is decoded."""
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png")  # 400 M pixels in a few kB
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    with pytest.raises(faces.ImageError) as info:
        faces.load_image(tmp_path / "bomb.png")
    message = str(info.value)
    assert "bomb.png" in message and "too large to decode safely" in message and "\n" not in message


def test_a_too_large_image_is_one_line_and_the_other_files_go_on(tiny_study, exported, astronaut, tmp_path, capsys, monkeypatch):
    Image.new("1", (20_000, 20_000)).save(tmp_path / "bomb.png")
    code, out, err = _predict(
        tiny_study, capsys, monkeypatch, str(exported), str(tmp_path / "bomb.png"), str(astronaut), "--json"
    )
    assert code == 0, err
    rows = {Path(r["file"]).name: r for r in json.loads(out)}
    assert rows["astronaut.png"]["class"] in CLASSES
    assert "too large to decode safely" in rows["bomb.png"]["error"]
    assert len([line for line in err.splitlines() if "bomb.png" in line]) == 1


def test_a_model_file_that_would_run_code_when_loaded_is_refused(exported, astronaut, tmp_path, capsys, monkeypatch):
    """Keras' safe mode: a Lambda layer's Python code is never deserialized, let alone run."""
    import keras

    marker = tmp_path / "code-ran"

    def payload(x):
        marker.touch()  # what a malicious file would do instead
        return keras.ops.softmax(keras.ops.zeros((keras.ops.shape(x)[0], 7)))

    inputs = keras.Input((48, 48, 1), dtype="uint8")
    evil = tmp_path / "evil"
    shutil.copytree(exported, evil)
    keras.Model(inputs, keras.layers.Lambda(payload)(inputs)).save(evil / "model.keras")
    marker.unlink()  # building the model above ran it once, here
    monkeypatch.chdir(tmp_path)
    code = main(["predict", str(evil), str(astronaut)])
    message = _one_line_error(capsys, code)
    assert "cannot load" in message and "model.keras" in message
    assert not marker.exists()
