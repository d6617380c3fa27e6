"""The classifier head shared by every family: pool, flatten, dense softmax."""

from __future__ import annotations

from keras import layers

from ferhpo.errors import ConfigError


def classifier_head(x, head: str, num_classes: int):
    """Pool, flatten and classify; the softmax layer is float32 for mixed precision.

    "avg4" is the reference head: 4x4 average pooling with stride 4 and valid padding
    (on a 6x6 DenseNet map that pools the top-left 4x4 window only; on a 12x12 ResNet
    map it gives 3x3), then flatten. "gap" is global average pooling.
    """
    if head == "avg4":
        x = layers.AveragePooling2D(4, strides=4, data_format="channels_last", name="head_pool")(x)
        x = layers.Flatten(data_format="channels_last", name="head_flatten")(x)
    elif head == "gap":
        x = layers.GlobalAveragePooling2D(data_format="channels_last", name="head_gap")(x)
    else:  # unreachable for a validated config
        raise ConfigError(f"head must be 'avg4' or 'gap', but got head={head!r}")
    return layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", dtype="float32", name="predictions")(x)
