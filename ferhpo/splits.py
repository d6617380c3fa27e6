"""Split protocols: which images a run trains, validates and is tested on.

Every protocol is built from the images' origins (Training / PublicTest / PrivateTest)
and a seed, so a split is reproducible from a run's record. The test split is always
the whole test set with its two halves beside it; `Splits.selection_sees` says which
test images the validation split overlaps (their numbers are not clean test numbers).

numpy only, like `ferhpo.data`: no keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ferhpo.data import CLASSES, FER2013, PRIVATE, PUBLIC, TEST_UNKNOWN
from ferhpo.errors import DataError

PROTOCOLS = {
    "seed-densenet": "train = all Training; validation = the whole test set (as the reference DenseNet runs did)",
    "seed-resnet": "train = 80% of Training; validation = a seeded random 20% of Training (reference ResNet runs)",
    "holdout": "train = 90% of Training; validation = a seeded, stratified 10% of Training (default for search)",
    "canonical": "train = all Training; validation = PublicTest; test = PrivateTest",
    "refit": "train = all Training; no validation: after selecting on holdout, a fixed number of epochs on every "
    "training image, the last weights kept (ferhpo confirm --refit)",
}


@dataclass(frozen=True)
class Splits:
    """Index arrays into a FER2013 for one protocol.

    `test` is always the whole test set (7,178 images), with its halves beside it, so
    test accuracy is reportable on all three. `selection_sees` names the test subsets
    that overlap the validation split: numbers on those are not clean test numbers.
    """

    protocol: str
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_public: np.ndarray
    test_private: np.ndarray
    selection_sees: tuple[str, ...] = field(default=())

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("train", "val", "test", "test_public", "test_private")}


def make_splits(data: FER2013, protocol: str = "holdout", seed: int = 0) -> Splits:
    """Index arrays for a named protocol (see PROTOCOLS); seeded and reproducible."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown split protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    train_idx = np.flatnonzero(~data.is_test)
    test_idx = np.flatnonzero(data.is_test)
    public = np.flatnonzero(data.origins == PUBLIC)
    private = np.flatnonzero(data.origins == PRIVATE)
    rng = np.random.default_rng(seed)
    sees: tuple[str, ...] = ()
    if protocol == "seed-densenet":
        train, val = train_idx, test_idx
        sees = ("test", "test_public", "test_private")
    elif protocol == "seed-resnet":
        perm = rng.permutation(train_idx)
        n_val = int(round(0.2 * len(train_idx)))
        val, train = perm[:n_val], perm[n_val:]
    elif protocol == "holdout":
        per_class = [train_idx[data.labels[train_idx] == c] for c in range(len(CLASSES))]
        val = np.concatenate([rng.permutation(idx)[: int(round(0.1 * len(idx)))] for idx in per_class])
        train = np.setdiff1d(train_idx, val)
    elif protocol == "refit":
        train, val = train_idx, train_idx[:0]
    else:  # canonical
        if (data.origins == TEST_UNKNOWN).any() or not len(public):
            raise DataError(
                "the canonical protocol needs to know each test image's half, but the test file names "
                "carry no PublicTest_/PrivateTest_ prefix; expected the Kaggle names or fer2013.csv "
                "(use --protocol holdout instead)"
            )
        train, val = train_idx, public
        sees = ("test", "test_public")
    return Splits(
        protocol=protocol,
        seed=seed,
        train=np.sort(train),
        val=np.sort(val),
        test=test_idx,
        test_public=public,
        test_private=private,
        selection_sees=sees,
    )


def limit_splits(
    splits: Splits, *, train: int | None = None, val: int | None = None, test: int | None = None, seed: int = 0
) -> Splits:
    """Seeded subsamples of at most `train`/`val`/`test` images (the smoke and quick budgets).

    The test halves keep only the images of the test subsample, so every number a
    limited run reports is on images it was evaluated on.
    """
    rng = np.random.default_rng([seed, 7])

    def take(indices: np.ndarray, n: int | None) -> np.ndarray:
        if n is None or n >= len(indices):
            return indices
        return np.sort(rng.choice(indices, size=n, replace=False))

    test_idx = take(splits.test, test)
    return replace(
        splits,
        train=take(splits.train, train),
        val=take(splits.val, val),
        test=test_idx,
        test_public=np.intersect1d(splits.test_public, test_idx),
        test_private=np.intersect1d(splits.test_private, test_idx),
    )
