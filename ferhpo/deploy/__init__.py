"""From a finished study to a model people use: rebuild runs, ensembles, export, faces.

`rebuild` picks finished runs of a study and rebuilds them as one inference model
(uint8 image in, probabilities out; built-in Keras layers only); `export` writes it
as `.keras`, a TensorFlow SavedModel or ONNX beside a model card, and loads such a
folder back without ferhpo's model code. This module stays light (numpy only), so
`ferhpo predict` on an ONNX export never has to load Keras.
"""

from __future__ import annotations

import numpy as np

from ferhpo.errors import FerhpoError

__all__ = ["DeployError", "as_batch"]


class DeployError(FerhpoError):
    """A run cannot be rebuilt or exported, or an export cannot be loaded (exit code 2)."""


def as_batch(images, shape: tuple[int, ...] = (48, 48, 1)) -> np.ndarray:
    """`images` as a uint8 NHWC batch of `shape`; a (N, H, W) batch gets its channel axis.

    Models take 0-255 grayscale as uint8 (the scaling is inside them): a float array
    or values outside 0-255 are refused rather than silently wrapped or truncated.
    """
    x = np.asarray(images)
    if x.ndim == len(shape) and shape[-1] == 1:
        x = x[..., None]
    expected = f"uint8 images of shape (N, {', '.join(map(str, shape))})"
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise DeployError(f"images of shape {tuple(np.shape(images))} do not fit the model; expected {expected}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer):
            raise DeployError(f"images of dtype {x.dtype} do not fit the model; expected {expected} (0-255, unscaled)")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DeployError(f"image values {x.min()}..{x.max()} are outside 0-255; expected {expected}")
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)
