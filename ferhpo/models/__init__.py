"""Pure model builders: a frozen model config in, an uncompiled ``keras.Model`` out.

Builders depend on Keras and ``ferhpo.config`` only, never on data, training
or search code, so any of those can build a model from a config alone.
"""

from __future__ import annotations

import keras

from ferhpo.config import DenseNetConfig, ResNetConfig
from ferhpo.models.densenet import build_densenet
from ferhpo.models.resnet import build_resnet

__all__ = ["build_model", "build_densenet", "build_resnet"]


def build_model(config: DenseNetConfig | ResNetConfig) -> keras.Model:
    """Build the model for ``config``, picking the builder by config type."""
    if isinstance(config, DenseNetConfig):
        return build_densenet(config)
    if isinstance(config, ResNetConfig):
        return build_resnet(config)
    raise TypeError(f"build_model expects a DenseNetConfig or ResNetConfig, but got {type(config).__name__}")
