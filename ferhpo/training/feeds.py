"""The inputs of a run: training batches (`TrainFeed`, mixup and CutMix included),
validation and prediction batches (`ArrayFeed`), and `predict` / `predict_proba` (with
test-time augmentation: flips, shifts) through them.

Every input is a Keras PyDataset read by `FEED_WORKERS` threads, never numpy arrays
handed to Keras nor a tf.data pipeline of ours.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ferhpo.data import CLASSES

#: Threads that read a run's input batches. With more than one, Keras feeds a PyDataset
#: through its own ordered queue and turns tf.data's autotuning off for it. With
#: autotuning on, freeing an input iterator (at the end of ``fit``, of every validation
#: and of ``predict``) waits for the autotuning thread, which can take tens of seconds
#: each time: a tenth of a CPU-budget run (benchmarks/README.md, "Iterator stalls").
FEED_WORKERS = 2


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Class indices as float32 one-hot rows, the labels the feeds hand to the loss."""
    return np.eye(len(CLASSES), dtype="float32")[labels.astype(np.int64)]


class ArrayFeed(keras.utils.PyDataset):
    """`images` (and `labels`) in their order, ``batch_size`` at a time: the input of
    validation and prediction, fed like `TrainFeed` (see `FEED_WORKERS`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, *, batch_size: int):
        super().__init__(workers=FEED_WORKERS)
        if not len(images) or (labels is not None and len(labels) != len(images)):
            got = None if labels is None else len(labels)
            raise ValueError(f"ArrayFeed needs at least one image and as many labels, got {len(images)} and {got}")
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"ArrayFeed has {len(self)} batches, got index {index}")
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[rows] if self.labels is None else (self.images[rows], self.labels[rows])


class TrainFeed(keras.utils.PyDataset):
    """Training batches for every epoch of a run, optionally with mixup (Zhang et al. 2018).

    One feed for the whole run, so that Keras keeps one input iterator: given numpy
    arrays it makes a new one every epoch, and on TensorFlow freeing the last one can
    hold up the next epoch's start by tens of seconds (tf.data's autotune thread).
    Each epoch visits the images in a new order (seeded by ``seed`` and the epoch).
    With ``alpha > 0`` each batch is mixed with a permutation of itself by one
    ``lam ~ Beta(alpha, alpha)``: images ``lam * a + (1 - lam) * b`` rounded back to
    uint8 (the model's input), labels mixed likewise (label smoothing is still the
    loss's). With ``cutmix > 0`` (CutMix, Yun et al. 2019, its alpha as mixup's): a
    rectangle of about ``1 - lam`` of the image, ``lam ~ Beta(cutmix, cutmix)``, centred
    anywhere and clipped to the image, is pasted from the partner, and the labels are mixed
    by the pasted area. With both on, each batch is mixed by one of the two, chosen at even
    odds (timm's switch). Batch ``step`` of ``epoch`` is item ``(epoch - first_epoch) *
    steps_per_epoch + step`` and depends only on its index, so prefetching and Keras'
    spec probing cannot change what a run sees, and a run resumed at ``first_epoch``
    sees the batches the whole run would have. Pass ``steps_per_epoch`` to
    ``model.fit`` with it. Read by `FEED_WORKERS` threads, in order.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        alpha: float,
        epochs: int,
        seed: int,
        first_epoch: int = 0,
        cutmix: float = 0.0,
    ):
        super().__init__(workers=FEED_WORKERS)
        if len(images) != len(labels) or not len(images):
            raise ValueError(f"TrainFeed needs as many labels as images (at least one), got {len(images)} and {len(labels)}")
        self.images = np.asarray(images)  # plain rows: positions here are not the dataset's indices
        self.labels = labels.astype("float32", copy=False)
        self.batch_size = batch_size
        self.alpha = float(alpha)
        self.cutmix = float(cutmix)
        self.epochs = epochs
        self.first_epoch = first_epoch
        self.seed = seed
        self.steps_per_epoch = math.ceil(len(images) / batch_size)
        self._order: tuple[int, np.ndarray | None] = (-1, None)  # (epoch, permutation), replaced as one tuple

    def __len__(self) -> int:
        return self.steps_per_epoch * (self.epochs - self.first_epoch)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        cached_epoch, order = self._order
        if cached_epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
            self._order = (epoch, order)
        assert order is not None  # epoch -1 (no permutation yet) is never asked for
        return order

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"TrainFeed has {len(self)} batches, got index {index}")
        epoch, step = divmod(int(index), self.steps_per_epoch)
        epoch += self.first_epoch
        idx = self._epoch_order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        if self.alpha <= 0 and self.cutmix <= 0:  # no mixing: the plain shuffled batch
            return self.images[idx], self.labels[idx]
        rng = np.random.default_rng([self.seed, epoch, step, 1])
        if self.cutmix > 0 and (self.alpha <= 0 or rng.random() < 0.5):
            return self._cutmix(idx, rng)
        lam = rng.beta(self.alpha, self.alpha)
        partner = rng.permutation(len(idx))
        images = self.images[idx].astype("float32")
        labels = self.labels[idx]
        mixed = np.rint(lam * images + (1.0 - lam) * images[partner])
        return np.clip(mixed, 0, 255).astype(self.images.dtype), (lam * labels + (1.0 - lam) * labels[partner]).astype("float32")

    def _cutmix(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lam = rng.beta(self.cutmix, self.cutmix)
        partner = rng.permutation(len(idx))
        images, labels = self.images[idx], self.labels[idx]  # copies (fancy indexing)
        height, width = images.shape[1:3]
        cut = math.sqrt(1.0 - lam)
        half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - half_h, 0), min(cy + half_h, height)
        x0, x1 = max(cx - half_w, 0), min(cx + half_w, width)
        images[:, y0:y1, x0:x1] = images[partner, y0:y1, x0:x1]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)  # the labels follow the pixels
        return images, (kept * labels + (1.0 - kept) * labels[partner]).astype("float32")


def predict(model: keras.Model, images: np.ndarray, *, batch_size: int, callbacks=None) -> np.ndarray:
    """`model`'s outputs for NHWC `images` at inference, through an `ArrayFeed`."""
    if not len(images):
        return np.zeros((0, *model.output_shape[1:]), dtype="float32")
    return model.predict(ArrayFeed(images, batch_size=batch_size), verbose=0, callbacks=callbacks)


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """NHWC `images` moved ``dy`` pixels down and ``dx`` right, the edge pixels repeated
    into the space left (the "nearest" fill of the training shifts)."""
    py, px = abs(dy), abs(dx)
    padded = np.pad(images, ((0, 0), (py, py), (px, px), (0, 0)), mode="edge")
    height, width = images.shape[1:3]
    return padded[:, py - dy : py - dy + height, px - dx : px - dx + width]


def tta_views(images: np.ndarray, *, hflip: bool = False, shift: float = 0.0) -> list[np.ndarray]:
    """The views test-time augmentation averages: the images; with ``shift``, the images
    moved by round(shift * height) pixels up and down and round(shift * width) left and
    right (`shifted`); with ``hflip``, each of those mirrored too. 1, 2, 5 or 10 views."""
    views = [images]
    if shift > 0:
        dy, dx = round(shift * images.shape[1]), round(shift * images.shape[2])
        views += [shifted(images, d, 0) for d in (-dy, dy)] + [shifted(images, 0, d) for d in (-dx, dx)]
    if hflip:
        views += [view[:, :, ::-1] for view in views]
    return views


def predict_proba(
    model: keras.Model, images: np.ndarray, *, batch_size: int, hflip: bool = False, shift: float = 0.0, callbacks=None
) -> np.ndarray:
    """Class probabilities of NHWC `images` at inference; with `hflip` and/or `shift`, the
    mean over each image's `tta_views` (test-time augmentation), in one predict call."""
    views = tta_views(images, hflip=hflip, shift=shift)
    if len(views) == 1:
        return predict(model, images, batch_size=batch_size, callbacks=callbacks)
    every = predict(model, np.concatenate(views), batch_size=batch_size, callbacks=callbacks)
    return every.reshape(len(views), len(images), *every.shape[1:]).sum(axis=0) / len(views)
