"""FER2013 loading, the cache and the split protocols, on tiny sources built in tmp dirs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import face, tiny_items, write_csv, write_folder
from ferhpo import data as fd
from ferhpo.data import CLASSES, ORIGINS, load_fer2013
from ferhpo.errors import DataError
from ferhpo.splits import PROTOCOLS, limit_splits, make_splits


def _by_file(data, key=lambda f: f):
    return {key(str(f)): i for i, f in enumerate(data.files)}


# --------------------------------------------------------------------------- formats


def test_folder_loads_labels_by_name_and_origins_from_prefix(tiny_folder, tmp_path):
    data = load_fer2013(tiny_folder, tmp_path / "cache")
    assert data.images.shape == (len(tiny_items()), 48, 48) and data.images.dtype == np.uint8
    for i, rel in enumerate(data.files):
        split, cls, name = str(rel).split("/")
        assert CLASSES[data.labels[i]] == cls
        assert ORIGINS[data.origins[i]] == name.split("_")[0]
        assert np.array_equal(data.images[i], face(int(name.split("_")[1].split(".")[0])))
    assert data.counts()["train"] == {c: 3 for c in CLASSES}
    assert data.counts()["test"] == {c: 2 for c in CLASSES}
    assert data.info.format == "folder" and data.info.converted == 0


def test_csv_maps_kaggle_numbers_to_names(tmp_path):
    path = tmp_path / "fer2013.csv"
    pixels = " ".join(["7"] * 2304)
    rows = [f"{n},{pixels},{u}" for n in range(7) for u in ("Training", "PublicTest", "PrivateTest")]
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    data = load_fer2013(path, tmp_path / "cache")
    kaggle = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i in range(len(data)):
        line = int(str(data.files[i]).split(":")[1])
        assert CLASSES[data.labels[i]] == kaggle[(line - 2) // 3]
        assert ORIGINS[data.origins[i]] == ("Training", "PublicTest", "PrivateTest")[(line - 2) % 3]
    assert data.info.format == "csv"


def test_csv_and_folder_agree_on_every_image(tmp_path):
    """The same image in both formats gets the same class name and origin."""
    items = tiny_items()
    folder = load_fer2013(write_folder(tmp_path / "fer", items), tmp_path / "c1")
    table = load_fer2013(write_csv(tmp_path / "k" / "fer2013.csv", items), tmp_path / "c2")
    assert len(folder) == len(table) == len(items)
    by_pixels = {table.images[i].tobytes(): i for i in range(len(table))}
    for i in range(len(folder)):
        j = by_pixels[folder.images[i].tobytes()]
        assert CLASSES[folder.labels[i]] == CLASSES[table.labels[j]]
        assert folder.origins[i] == table.origins[j]


def test_folder_containing_csv_is_read_as_csv(tiny_csv, tmp_path):
    data = load_fer2013(tiny_csv.parent, tmp_path / "cache")
    assert data.info.format == "csv" and len(data) == len(tiny_items())


def test_non_48x48_grayscale_images_are_converted_and_counted(tiny_folder, tmp_path):
    rgb = np.zeros((64, 60, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, mode="RGB").save(tiny_folder / "train" / "happy" / "Training_rgb.png")
    data = load_fer2013(tiny_folder, tmp_path / "cache")
    i = _by_file(data)["train/happy/Training_rgb.png"]
    assert data.info.converted == 1
    assert data.images[i].shape == (48, 48)
    # PIL's ITU-R 601-2 luma: L = R * 299/1000
    assert int(data.images[i][0, 0]) == round(200 * 299 / 1000)


def test_files_without_prefix_have_unknown_test_half(tmp_path):
    items = [(s, c, o, n) for s, c, o, n in tiny_items()]
    root = write_folder(tmp_path / "fer", items)
    for f in (root / "test").rglob("*.png"):
        f.rename(f.with_name("img" + f.name.split("_", 1)[1]))
    data = load_fer2013(root, tmp_path / "cache")
    assert set(ORIGINS[o] for o in data.origins[data.is_test]) == {"Test"}
    with pytest.raises(DataError, match="canonical protocol needs"):
        make_splits(data, "canonical")


def test_skip_bad_skips_and_reports(tiny_folder, tmp_path):
    (tiny_folder / "train" / "fear" / "Training_broken.jpg").write_bytes(b"not a jpeg")
    data = load_fer2013(tiny_folder, tmp_path / "cache", skip_bad=True)
    assert data.info.skipped == ("train/fear/Training_broken.jpg",)
    assert len(data) == len(tiny_items())


def test_fingerprint_is_the_sha256sum_listing(tiny_folder, tmp_path):
    """Same recipe as the FER2013 README's checksum command."""
    expected = subprocess.run(
        "find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum",
        shell=True,
        cwd=tiny_folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert load_fer2013(tiny_folder, tmp_path / "cache").info.fingerprint == expected


# --------------------------------------------------------------------------- cache


def _cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_cache_hit_miss_and_invalidation(tiny_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_fer2013(tiny_folder, cache)
    assert not first.info.cache_hit and len(_cache_files(cache)) == 1
    second = load_fer2013(tiny_folder, cache)
    assert second.info.cache_hit and second.info.cache_path == first.info.cache_path
    for name in ("images", "labels", "origins", "files"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert second.info.fingerprint == first.info.fingerprint

    # Changing one image's content invalidates the cache and replaces the old file.
    target = tiny_folder / "train" / "sad" / sorted(os.listdir(tiny_folder / "train" / "sad"))[0]
    Image.fromarray(np.full((48, 48), 3, np.uint8), mode="L").save(target)
    third = load_fer2013(tiny_folder, cache)
    assert not third.info.cache_hit and third.info.fingerprint != first.info.fingerprint
    assert _cache_files(cache) == [Path(third.info.cache_path).name]

    # Adding an image is a change too.
    write_folder(tiny_folder, [("train", "sad", "Training", 999)])
    fourth = load_fer2013(tiny_folder, cache)
    assert not fourth.info.cache_hit and len(fourth) == len(third) + 1
    assert load_fer2013(tiny_folder, cache).info.cache_hit


def test_csv_cache_invalidated_by_edit(tiny_csv, tmp_path):
    cache = tmp_path / "cache"
    assert not load_fer2013(tiny_csv, cache).info.cache_hit
    assert load_fer2013(tiny_csv, cache).info.cache_hit
    text = tiny_csv.read_text().splitlines()
    tiny_csv.write_text("\n".join(text[:-1]) + "\n")
    again = load_fer2013(tiny_csv, cache)
    assert not again.info.cache_hit and len(again) == len(tiny_items()) - 1


def test_corrupt_cache_is_rebuilt(tiny_folder, tmp_path):
    cache = tmp_path / "cache"
    path = Path(load_fer2013(tiny_folder, cache).info.cache_path)
    path.write_bytes(path.read_bytes()[:100])
    again = load_fer2013(tiny_folder, cache)
    assert not again.info.cache_hit and len(again) == len(tiny_items())
    assert load_fer2013(tiny_folder, cache).info.cache_hit


def test_failed_cache_write_leaves_nothing(tiny_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fd.np, "savez", full_disk)
    with pytest.raises(DataError, match="cannot write the data cache .*No space left"):
        load_fer2013(tiny_folder, cache)
    assert _cache_files(cache) == []


def test_use_cache_false_writes_nothing(tiny_folder, tmp_path):
    data = load_fer2013(tiny_folder, tmp_path / "cache", use_cache=False)
    assert len(data) == len(tiny_items()) and not (tmp_path / "cache").exists()


def test_cache_defaults_to_env_then_user_dir(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FERHPO_CACHE", str(tmp_path / "env-cache"))
    assert Path(load_fer2013(tiny_folder).info.cache_path).parent == tmp_path / "env-cache"
    monkeypatch.delenv("FERHPO_CACHE")
    import platformdirs

    assert fd.resolve_cache_dir() == Path(platformdirs.user_cache_dir("ferhpo"))


def test_data_path_defaults_to_env_then_cwd(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FERHPO_DATA", str(tiny_folder))
    assert load_fer2013(cache_dir=tmp_path / "c").info.path == str(tiny_folder)
    monkeypatch.delenv("FERHPO_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"no FER2013 data at data/fer2013 .*download FER2013"):
        load_fer2013(cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- protocols


@pytest.fixture
def split_data(tmp_path):
    # 20 train images per class, 4 per test half: enough to check fractions.
    items = []
    seed = 0
    for cls in CLASSES:
        for origin, n in (("Training", 20), ("PublicTest", 4), ("PrivateTest", 4)):
            for _ in range(n):
                items.append(("train" if origin == "Training" else "test", cls, origin, seed))
                seed += 1
    return load_fer2013(write_folder(tmp_path / "fer", items), tmp_path / "cache")


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_protocol_sizes_overlap_and_reproducibility(split_data, protocol):
    s = make_splits(split_data, protocol, seed=1)
    train, val, test = set(s.train), set(s.val), set(s.test)
    n_train, n_test = 140, 56
    assert len(test) == n_test and len(s.test_public) == len(s.test_private) == n_test // 2
    assert not train & val and not train & test
    assert set(np.flatnonzero(~split_data.is_test)) >= train
    expected = {
        "seed-densenet": (n_train, n_test),
        "seed-resnet": (n_train - 28, 28),
        "holdout": (n_train - 14, 14),
        "canonical": (n_train, n_test // 2),
        "refit": (n_train, 0),  # every training image, no validation (ferhpo confirm --refit)
    }[protocol]
    assert (len(train), len(val)) == expected
    if protocol in ("seed-resnet", "holdout", "refit"):
        assert not val & test and s.selection_sees == ()
        assert len(train | val) == n_train
    else:
        assert val <= test and "test" in s.selection_sees
    again = make_splits(split_data, protocol, seed=1)
    assert np.array_equal(again.train, s.train) and np.array_equal(again.val, s.val)
    if protocol in ("seed-resnet", "holdout"):
        assert not np.array_equal(make_splits(split_data, protocol, seed=2).val, s.val)


def test_holdout_is_stratified(split_data):
    s = make_splits(split_data, "holdout", seed=3)
    assert np.bincount(split_data.labels[s.val], minlength=7).tolist() == [2] * 7


def test_canonical_validates_on_public_test(split_data):
    s = make_splits(split_data, "canonical")
    assert np.array_equal(s.val, s.test_public)
    assert (split_data.origins[s.test_private] == fd.PRIVATE).all()


def test_unknown_protocol(split_data):
    with pytest.raises(DataError, match="unknown split protocol 'x'; expected one of seed-densenet"):
        make_splits(split_data, "x")


def test_limit_splits_is_seeded_and_consistent(split_data):
    full = make_splits(split_data, "canonical", seed=0)
    small = limit_splits(full, train=10, val=5, test=12, seed=4)
    assert small.sizes()["train"] == 10 and len(small.val) == 5 and len(small.test) == 12
    assert set(small.train) <= set(full.train) and set(small.val) <= set(full.val)
    assert set(small.test_public) | set(small.test_private) == set(small.test)
    again = limit_splits(full, train=10, val=5, test=12, seed=4)
    assert np.array_equal(again.train, small.train) and np.array_equal(again.test, small.test)
    assert limit_splits(full, train=10_000).sizes() == full.sizes()
