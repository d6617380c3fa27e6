"""Paired comparisons of two classifiers on the same test images.

`compare` pairs two runs' `test_predictions.npz` by image file name and returns a
`Comparison`: the accuracy difference with a paired bootstrap 95% interval, McNemar's
test on the discordant pairs, and a verdict taken from the interval ("beats" when it
lies above zero, "loses" when below, "ties" otherwise), never from the point estimate.

numpy and the standard library only: no scipy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Fewer images in common than this and no verdict is given ("n/a").
MIN_COMMON_IMAGES = 30
#: Bootstrap resamples (drawn as multinomial counts, so a resample costs O(1)).
RESAMPLES = 10_000
CONFIDENCE = 0.95
#: Below this many discordant pairs McNemar's test is the exact binomial one.
EXACT_BELOW = 25

VERDICTS = ("beats", "ties", "loses", "n/a")


@dataclass(frozen=True)
class Comparison:
    """A run (`a`) against a reference run (`b`) on the test images both predicted."""

    verdict: str  # "beats", "ties", "loses" or "n/a"
    reason: str = ""  # why the verdict is "n/a", or which images were compared
    n: int = 0  # images compared
    accuracy_a: float | None = None
    accuracy_b: float | None = None
    diff_points: float | None = None  # 100 * (acc_a - acc_b)
    ci_low: float | None = None  # points
    ci_high: float | None = None
    b: int = 0  # a right, b wrong
    c: int = 0  # a wrong, b right
    p_value: float | None = None
    test: str = ""  # "exact binomial" or "chi-square (continuity corrected)"

    def to_dict(self) -> dict:
        return asdict(self)


def not_available(reason: str) -> Comparison:
    return Comparison(verdict="n/a", reason=reason)


def verdict_from_interval(low: float, high: float) -> str:
    """ "beats" if the whole interval is above zero, "loses" if below, else "ties"."""
    if low > 0:
        return "beats"
    if high < 0:
        return "loses"
    return "ties"


def bootstrap_difference(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap of acc(a) - acc(b) in points: (estimate, low, high).

    Resampling n images with replacement only changes how many of the resample are
    "a right, b wrong" (+1), "a wrong, b right" (-1) or concordant (0); those counts
    are multinomial, so each resample is one multinomial draw instead of n indices:
    the same distribution as index resampling, vectorised and cheap for any n.
    The interval is the percentile interval.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("correct_a and correct_b must be equal-length, non-empty 1-d arrays")
    n = a.size
    plus = int(np.sum(a & ~b))
    minus = int(np.sum(~a & b))
    estimate = 100.0 * (plus - minus) / n
    rng = np.random.default_rng(seed)
    probabilities = [plus / n, minus / n, (n - plus - minus) / n]
    counts = rng.multinomial(n, probabilities, size=resamples)
    diffs = 100.0 * (counts[:, 0] - counts[:, 1]) / n
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return estimate, float(low), float(high)


def mcnemar(b: int, c: int) -> tuple[float, str]:
    """McNemar's two-sided test on discordant pairs b and c: (p-value, method).

    Exact binomial (b ~ Binomial(b + c, 1/2)) below EXACT_BELOW discordant pairs,
    else the chi-square statistic with continuity correction, (|b - c| - 1)^2 / (b + c),
    on one degree of freedom.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0, "exact binomial"
    if n < EXACT_BELOW:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        return min(1.0, 2.0 * tail), "exact binomial"
    statistic = (abs(b - c) - 1) ** 2 / n
    # P(chi2_1 > x) = P(|Z| > sqrt(x)) = erfc(sqrt(x / 2))
    return math.erfc(math.sqrt(statistic / 2.0)), "chi-square (continuity corrected)"


def compare_correct(correct_a: np.ndarray, correct_b: np.ndarray, *, seed: int = 0, note: str = "") -> Comparison:
    """The comparison of two paired correctness vectors."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    n = int(a.size)
    if n < MIN_COMMON_IMAGES:
        return not_available(f"only {n} test image(s) in common; at least {MIN_COMMON_IMAGES} are needed")
    estimate, low, high = bootstrap_difference(a, b_, seed=seed)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    p, method = mcnemar(b, c)
    return Comparison(
        verdict=verdict_from_interval(low, high),
        reason=note,
        n=n,
        accuracy_a=float(a.mean()),
        accuracy_b=float(b_.mean()),
        diff_points=estimate,
        ci_low=low,
        ci_high=high,
        b=b,
        c=c,
        p_value=p,
        test=method,
    )


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions: image file names, true labels, predicted labels."""

    files: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray


def load_predictions(path: Path) -> Predictions | None:
    """The arrays of a `test_predictions.npz`, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = np.asarray(z["files"]).astype(str)
            labels = np.asarray(z["labels"]).astype(np.int64)
            predictions = np.asarray(z["predictions"]).astype(np.int64)
    except (OSError, KeyError, ValueError):
        return None
    if not (files.shape == labels.shape == predictions.shape) or files.ndim != 1:
        return None
    # A file name twice would pair ambiguously: keep its first occurrence.
    _, first = np.unique(files, return_index=True)
    if first.size != files.size:
        keep = np.sort(first)
        files, labels, predictions = files[keep], labels[keep], predictions[keep]
    return Predictions(files, labels, predictions)


def compare(a: Predictions | None, b: Predictions | None, *, seed: int = 0) -> Comparison:
    """Run `a` against run `b` on the test images both predicted (paired by file name)."""
    if a is None:
        return not_available("no test predictions for this run")
    if b is None:
        return not_available("no test predictions for the baseline run")
    common, ia, ib = np.intersect1d(a.files, b.files, assume_unique=True, return_indices=True)
    if common.size and np.any(a.labels[ia] != b.labels[ib]):
        wrong = int(np.sum(a.labels[ia] != b.labels[ib]))
        return not_available(f"{wrong} image(s) carry different labels in the two runs; expected the same dataset")
    note = ""
    if common.size != a.files.size or common.size != b.files.size:
        note = (
            f"compared on the {common.size:,} test images both runs predicted "
            f"(this run {a.files.size:,}, baseline {b.files.size:,})"
        )
    correct_a = a.predictions[ia] == a.labels[ia]
    correct_b = b.predictions[ib] == b.labels[ib]
    return compare_correct(correct_a, correct_b, seed=seed, note=note)


def bootstrap_seeds(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    chunk: int = 500,
) -> tuple[float, float, float]:
    """Bootstrap of mean acc(a) - mean acc(b) over seeds and test images, in points.

    `correct_a` (seeds_a x images) and `correct_b` (seeds_b x images) hold each seed's
    correctness on the same images. Each resample draws the images once, with
    replacement, for both sides (they stay paired), and each side's seeds with
    replacement: the interval covers both the test-set and the seed-to-seed spread,
    which a single pair of runs cannot show. With one seed a side it is the paired
    bootstrap of `bootstrap_difference`. Percentile interval: (estimate, low, high).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or 0 in a.shape or 0 in b.shape:
        raise ValueError("correct_a and correct_b must be non-empty (seeds x images) arrays over the same images")
    n = a.shape[1]
    estimate = 100.0 * (a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    diffs = []
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        images = rng.integers(0, n, size=(m, n))  # the resampled images, shared by both sides
        acc_a = np.stack([row[images].mean(axis=1) for row in fa], axis=1)  # resamples x seeds_a
        acc_b = np.stack([row[images].mean(axis=1) for row in fb], axis=1)
        pick_a = rng.multinomial(a.shape[0], np.full(a.shape[0], 1.0 / a.shape[0]), size=m) / a.shape[0]
        pick_b = rng.multinomial(b.shape[0], np.full(b.shape[0], 1.0 / b.shape[0]), size=m) / b.shape[0]
        diffs.append(100.0 * ((acc_a * pick_a).sum(axis=1) - (acc_b * pick_b).sum(axis=1)))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(np.concatenate(diffs), [tail, 100.0 - tail])
    return float(estimate), float(low), float(high)


def correct_matrix(runs: list[Predictions | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each run's correctness on the test images all of them predicted (by file name),
    and those files; None when a run has no predictions or labels disagree."""
    if not runs or any(r is None for r in runs):
        return None
    present = [r for r in runs if r is not None]
    common = present[0].files
    for r in present[1:]:
        common = np.intersect1d(common, r.files, assume_unique=True)
    rows, labels = [], None
    for r in present:
        _, _, idx = np.intersect1d(common, r.files, assume_unique=True, return_indices=True)
        if labels is None:
            labels = r.labels[idx]
        elif np.any(labels != r.labels[idx]):
            return None
        rows.append(r.predictions[idx] == r.labels[idx])
    return np.vstack(rows), common
