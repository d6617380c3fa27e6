"""CIFAR-style ResNet v1 / v2 builder for small images, from a frozen `ResNetConfig`.

Follows the Keras example ``cifar10_resnet`` (its ``resnet_layer`` helper is
kept). These choices reproduce the study's parameter counts exactly
(1,647,975 for v1 depth 104 and 4,711,047 for v2 depth 155, counted by
tests/test_models.py):

* every convolution uses a bias (the example's Conv2D default), with an L2
  kernel regulariser and He-normal init; the Dense classifier has neither;
* the projection shortcuts are 1x1 convolutions without BN;
* v1 adds, then applies ReLU; v2 adds with no activation after the add and
  ends with BN-ReLU before the head;
* the head is 4x4 average pooling (12x12 -> 3x3 on 48x48 inputs), flatten,
  dense softmax.

Bias-free convolutions would give 3,920 (v1) and 15,152 (v2) fewer parameters.

Known issue (TensorFlow on CPU with oneDNN, AVX-512): training a stride-2 1x1
convolution with fewer than 16 input channels corrupts memory
(uxlfoundation/oneDNN#6035). That is v1 with base_filters < 16 or v2 with
base_filters < 4; the references and GPUs are unaffected, and
TF_ENABLE_ONEDNN_OPTS=0 avoids it.

Backend-agnostic Keras 3 (no ``tf.*``); channels-last throughout.
"""

from __future__ import annotations

import keras
from keras import layers

from ferhpo.config import ResNetConfig
from ferhpo.models.head import classifier_head

__all__ = ["resnet_layer", "projection_shortcut", "basic_block", "bottleneck_block", "build_resnet"]

_CHANNELS_LAST = "channels_last"
_INIT = "he_normal"


def resnet_layer(
    x,
    filters: int,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    activation: str | None = "relu",
    batch_normalization: bool = True,
    conv_first: bool = True,
    l2: float = 0.0,
    name: str,
):
    """Conv2D-BN-activation (``conv_first``) or BN-activation-Conv2D, as in the Keras example.

    Layers are named ``{name}_conv``, ``{name}_bn`` and ``{name}_{activation}``.
    """
    conv = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=True,
        kernel_initializer=_INIT,
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        data_format=_CHANNELS_LAST,
        name=name + "_conv",
    )

    def normalise(t):
        if batch_normalization:
            t = layers.BatchNormalization(axis=-1, name=name + "_bn")(t)
        if activation is not None:
            t = layers.Activation(activation, name=f"{name}_{activation}")(t)
        return t

    return normalise(conv(x)) if conv_first else conv(normalise(x))


def projection_shortcut(x, filters: int, *, strides: int, l2: float, name: str):
    """The 1x1 convolution (no BN, no activation) that matches a block's output shape."""
    return resnet_layer(
        x,
        filters,
        kernel_size=1,
        strides=strides,
        activation=None,
        batch_normalization=False,
        l2=l2,
        name=name + "_shortcut",
    )


def basic_block(x, filters: int, *, strides: int, project: bool, l2: float, name: str):
    """v1 block: Conv3x3-BN-ReLU, Conv3x3-BN, add the (projected) shortcut, ReLU."""
    y = resnet_layer(x, filters, strides=strides, l2=l2, name=name + "_1")
    y = resnet_layer(y, filters, activation=None, l2=l2, name=name + "_2")
    if project:
        x = projection_shortcut(x, filters, strides=strides, l2=l2, name=name)
    x = layers.Add(name=name + "_add")([x, y])
    return layers.Activation("relu", name=name + "_out")(x)


def bottleneck_block(
    x,
    filters: int,
    out_filters: int,
    *,
    strides: int,
    project: bool,
    preactivate: bool,
    l2: float,
    name: str,
):
    """v2 pre-activation bottleneck: BN-ReLU-Conv1x1, BN-ReLU-Conv3x3, BN-ReLU-Conv1x1(out), add.

    ``preactivate=False`` skips the first BN-ReLU; the network's very first
    block uses it because the stem already ends in BN-ReLU.
    """
    y = resnet_layer(
        x,
        filters,
        kernel_size=1,
        strides=strides,
        activation="relu" if preactivate else None,
        batch_normalization=preactivate,
        conv_first=False,
        l2=l2,
        name=name + "_1",
    )
    y = resnet_layer(y, filters, conv_first=False, l2=l2, name=name + "_2")
    y = resnet_layer(y, out_filters, kernel_size=1, conv_first=False, l2=l2, name=name + "_3")
    if project:
        x = projection_shortcut(x, out_filters, strides=strides, l2=l2, name=name)
    return layers.Add(name=name + "_add")([x, y])


def _resnet_v1(x, config: ResNetConfig):
    filters = config.base_filters
    x = resnet_layer(x, filters, l2=config.l2, name="stem")
    for stage in range(3):
        for block in range(config.blocks_per_stage):
            downsample = stage > 0 and block == 0
            x = basic_block(
                x,
                filters,
                strides=2 if downsample else 1,
                project=downsample,
                l2=config.l2,
                name=f"stage{stage + 1}_block{block + 1}",
            )
        filters *= 2
    return x


def _resnet_v2(x, config: ResNetConfig):
    # Inner widths b, 4b, 8b and output widths 4b, 8b, 16b (16/64/128 and
    # 64/128/256 for b=16): each stage's input width becomes the next inner width.
    filters = config.base_filters
    x = resnet_layer(x, filters, l2=config.l2, name="stem")
    for stage in range(3):
        out_filters = filters * (4 if stage == 0 else 2)
        for block in range(config.blocks_per_stage):
            first = block == 0
            x = bottleneck_block(
                x,
                filters,
                out_filters,
                strides=2 if first and stage > 0 else 1,
                project=first,
                preactivate=not (first and stage == 0),
                l2=config.l2,
                name=f"stage{stage + 1}_block{block + 1}",
            )
        filters = out_filters
    x = layers.BatchNormalization(axis=-1, name="post_bn")(x)
    return layers.Activation("relu", name="post_relu")(x)


def build_resnet(config: ResNetConfig) -> keras.Model:
    """Build the ResNet described by ``config`` (an uncompiled ``keras.Model``)."""
    if not isinstance(config, ResNetConfig):
        raise TypeError(f"build_resnet expects a ResNetConfig, but got {type(config).__name__}")

    inputs = keras.Input(shape=config.input_shape, name="image")
    body = _resnet_v1 if config.version == 1 else _resnet_v2
    x = body(inputs, config)
    outputs = classifier_head(x, config.head, config.num_classes)
    return keras.Model(inputs, outputs, name=f"resnet_v{config.version}_{config.depth}")
