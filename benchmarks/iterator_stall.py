"""How long Keras waits when it frees an input iterator (benchmarks/README.md, "Iterator stalls").

    python benchmarks/iterator_stall.py [DATA] --feed queue|autotuned [--runs R] [--images N] [--threads T]

Trains a ResNet v1-8 (batch 32, 2 epochs) R times with `ferhpo.training.fit` on N holdout
training images, 1,000 validation and 1,000 test images, and prints per run the seconds between
the end of training (`on_train_end`) and `fit` returning, between each validation's
end and its epoch's end, and between the end of the final prediction and `predict`
returning: the time Keras spends freeing the input iterators. `--feed queue` is
ferhpo's input (PyDatasets read by `FEED_WORKERS` threads: tf.data's autotuning off);
`--feed autotuned` reads them in one thread, as Keras does by default, with autotuning
on. The stall needs a busy machine: run two at once, e.g. one of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

from ferhpo import config, presets, runs, threads
from ferhpo.data import load_fer2013


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="../shared/fer2013")
    parser.add_argument("--feed", choices=("queue", "autotuned"), required=True)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument(
        "--threads", type=int, default=1, help="compute threads (default 1, as a trial of a 2-worker search on 2 cores)"
    )
    args = parser.parse_args()
    os.environ.update(threads.thread_env(args.threads))  # before Keras loads

    import keras

    from ferhpo import training
    from ferhpo.training import feeds

    if args.feed == "autotuned":
        feeds.FEED_WORKERS = 1  # Keras' own PyDataset path: tf.data prefetch with autotuning

    marks: dict[str, float] = {}
    gaps: dict[str, list[float]] = {"fit": [], "validation": [], "predict": []}

    class Marks(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            marks["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            gaps["validation"].append(time.perf_counter() - marks.pop("test_end"))

        def on_train_end(self, logs=None):
            marks["train_end"] = time.perf_counter()

        def on_predict_end(self, logs=None):
            marks["predict_end"] = time.perf_counter()

    fit, predict = keras.Model.fit, keras.Model.predict

    def timed_fit(self, *a, **k):
        out = fit(self, *a, **k)
        gaps["fit"].append(time.perf_counter() - marks.pop("train_end"))
        return out

    def timed_predict(self, *a, callbacks=None, **k):
        out = predict(self, *a, callbacks=[*(callbacks or []), Marks()], **k)
        gaps["predict"].append(time.perf_counter() - marks.pop("predict_end"))
        return out

    keras.Model.fit, keras.Model.predict = timed_fit, timed_predict

    data = load_fer2013(args.data)
    budget = config.get_budget("cpu", epochs=2, train_limit=args.images)
    splits = runs.budget_splits(data, "holdout", budget, 0)
    none = splits.test[:0]
    splits = dataclasses.replace(splits, val=splits.val[:1000], test=splits.test[:1000], test_public=none, test_private=none)
    preset = presets.get_preset("resnet-v1-104")
    model = dataclasses.replace(preset.model, depth=8)
    train = dataclasses.replace(preset.train, batch_size=32, epochs=2)
    for run in range(args.runs):
        begun = time.perf_counter()
        result = training.fit(model, train, data, splits, callbacks=[Marks()])
        print(
            f"{args.feed} run {run + 1}: after fit {gaps['fit'][-1]:5.2f} s, after validation "
            + ", ".join(f"{g:.2f}" for g in gaps["validation"][-2:])
            + f" s, after predict {gaps['predict'][-1]:5.2f} s; run {time.perf_counter() - begun:4.0f} s, "
            f"{result.images_per_second:.0f} images/s of training steps",
            flush=True,
        )


if __name__ == "__main__":
    main()
