"""How long each epoch waits before its first training step (benchmarks/README.md, "Epoch-start stall").

    python benchmarks/epoch_gap.py [DATA] [--images N] [--epochs E]

Trains a ResNet v1-8 (batch 128) with `ferhpo.training.fit` on N holdout training images
of FER2013 (0: all of them) and prints, per epoch, the seconds between Keras'
`on_epoch_begin` and the first training step, the epoch's time and the training
throughput. Fed numpy arrays, Keras on TensorFlow made a new input iterator every
epoch, and freeing the previous one could stall the next epoch's start for tens of
seconds; `fit` now feeds one `TrainFeed` for the whole run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import keras

from ferhpo import config, presets, runs, training
from ferhpo.data import load_fer2013


class EpochGap(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.begun, self.first = time.perf_counter(), None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(
            f"epoch {epoch + 1}: gap before the first step {self.first - self.begun:6.2f} s, "
            f"epoch {time.perf_counter() - self.begun:6.1f} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="../shared/fer2013")
    parser.add_argument("--images", type=int, default=6000, help="training images (0: all; default 6000)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data = load_fer2013(args.data)
    budget = config.get_budget("cpu", epochs=args.epochs, train_limit=args.images or None)
    splits = runs.budget_splits(data, "holdout", budget, 0)
    preset = presets.get_preset("resnet-v1-104")
    model = dataclasses.replace(preset.model, depth=8)
    train = dataclasses.replace(preset.train, batch_size=128, epochs=args.epochs)
    result = training.fit(model, train, data, splits, callbacks=[EpochGap()])
    print(f"{len(splits.train)} images x {result.epochs_run} epochs: {result.images_per_second:.0f} images/s of training steps")


if __name__ == "__main__":
    main()
