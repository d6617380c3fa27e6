"""Evaluation: accuracy, per-class recall, macro-F1 and confusion, on validation, test
and the test set's halves, with the recipe's test-time augmentation (flips, shifts)."""

from __future__ import annotations

import keras
import numpy as np

from ferhpo.data import CLASSES, FER2013
from ferhpo.splits import Splits
from ferhpo.training.feeds import predict_proba


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, per-class recall, macro-F1 and the confusion matrix (rows: true class)."""
    k = len(CLASSES)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / np.maximum(support, 1), 0.0)
        precision = np.where(predicted > 0, hits / np.maximum(predicted, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # classes absent from a (limited) split do not drag macro-F1 down
    return {
        "n": int(len(y_true)),
        "accuracy": float(hits.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {name: float(r) for name, r in zip(CLASSES, recall)},
        "confusion": confusion.tolist(),
    }


def evaluate_splits(
    model: keras.Model,
    data: FER2013,
    splits: Splits,
    images: np.ndarray,
    *,
    batch_size: int,
    hflip: bool,
    shift: float = 0.0,
    callbacks=None,
) -> tuple[dict[str, dict], np.ndarray]:
    """`classification_metrics` of `model` on validation (when there is one), test and
    each of the test set's halves present; and the predicted class of each test image.

    `images` are all of `data`'s images, NHWC, indexed by the splits. One predict call
    covers validation and test: one traced graph, not two. With `hflip` each image's
    softmax is averaged with its mirror's; with `shift` (a fraction of the image's size)
    also with its copies shifted up, down, left and right (`feeds.tta_views`).
    """
    both = np.concatenate([splits.val, splits.test])
    probabilities = predict_proba(model, images[both], batch_size=batch_size, hflip=hflip, shift=shift, callbacks=callbacks)
    predicted = np.argmax(probabilities, axis=-1)
    val_pred, predictions = predicted[: len(splits.val)], predicted[len(splits.val) :]
    evaluation: dict[str, dict] = {}
    if len(splits.val):
        evaluation["val"] = classification_metrics(data.labels[splits.val], val_pred)
    evaluation["test"] = classification_metrics(data.labels[splits.test], predictions)
    position = {int(i): k for k, i in enumerate(splits.test)}
    for name in ("test_public", "test_private"):
        idx = getattr(splits, name)
        if len(idx):
            half = predictions[[position[int(i)] for i in idx]]
            evaluation[name] = classification_metrics(data.labels[idx], half)
    return evaluation, predictions
