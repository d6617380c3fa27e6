"""The training model's input layers: uint8 images scaled to [0, 1] and, while
training, augmented by Keras layers, so augmentation runs on any backend and on the
accelerator."""

from __future__ import annotations

import keras

from ferhpo.config import TrainConfig
from ferhpo.errors import ConfigError


def training_model(core: keras.Model, train: TrainConfig) -> keras.Model:
    """Wrap a builder's model: uint8 image in, scaled to [0, 1], augmented while training.

    The augmentation layers (only with ``train.augmentation``, each only when its
    option is on) run in the order shift, crop, rotation, zoom, flip, erasing, each
    with its own seed, and pass images through unchanged at inference.
    """
    inputs = keras.Input(shape=core.input_shape[1:], dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if train.augmentation:
        if train.shift > 0:
            # ImageDataGenerator(width/height_shift_range=shift, fill_mode="nearest")
            x = keras.layers.RandomTranslation(
                train.shift, train.shift, fill_mode="nearest", seed=train.seed, name="augment_shift"
            )(x)
        if train.crop > 0:
            x = _crop(x, train, core.input_shape[1:3])
        if train.rotation > 0:
            # factor is a fraction of a full turn: +-rotation degrees.
            x = keras.layers.RandomRotation(
                train.rotation / 360, fill_mode="nearest", seed=train.seed + 2, name="augment_rotation"
            )(x)
        if train.zoom > 0:
            # Zoom in or out by up to `zoom` (width follows height: aspect ratio kept).
            x = keras.layers.RandomZoom((-train.zoom, train.zoom), fill_mode="nearest", seed=train.seed + 3, name="augment_zoom")(
                x
            )
        if train.hflip:
            x = keras.layers.RandomFlip("horizontal", seed=train.seed + 1, name="augment_flip")(x)
        if train.erasing > 0:
            # A single float `factor=p` draws each image's probability from U(0, p), so
            # only p/2 of the images would be erased (and 1.0 erases half, not all);
            # the pair (p, p) makes it exactly p. The patch covers 2-33% of the image
            # and is filled with noise (a normal sample clipped to [0, 1]).
            x = keras.layers.RandomErasing(
                factor=(train.erasing, train.erasing),
                value_range=(0, 1),
                seed=train.seed + 4,
                name="augment_erasing",
            )(x)
    return keras.Model(inputs, core(x), name=core.name)


def _crop(x, train: TrainConfig, size: tuple[int, int]):
    """Pad-and-crop (zero padding of ``train.crop`` pixels, then a random crop of the image's
    size), per image: RandomTranslation by at most ``crop`` pixels, zero-filled, sampled at
    the nearest pixel, so every image moves by whole pixels (round(U(-crop, crop)): the two
    extreme offsets half as likely as the others). Keras' RandomCrop draws one window per
    batch and resizes at inference, so it is not used here."""
    height, width = size
    if 2 * train.crop >= min(height, width):
        raise ConfigError(
            f"TrainConfig crop must be under half the image's height and width ({height}x{width}), but got crop={train.crop!r}"
        )
    return keras.layers.RandomTranslation(
        train.crop / height,
        train.crop / width,
        fill_mode="constant",
        interpolation="nearest",
        fill_value=0.0,
        seed=train.seed + 5,
        name="augment_crop",
    )(x)
