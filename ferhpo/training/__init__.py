"""The one fit function, used by `ferhpo baseline` and by every search trial.

`fit` turns (model config, train config, data, splits) into a trained model and a
`FitResult`: per-epoch curves, the best-validation-accuracy epoch (whose weights are
restored), evaluation on validation and test (whole set and its halves), wall time
and throughput. Images stay uint8 in memory; scaling and augmentation are Keras
layers inside the model, so they run on any backend and on the accelerator. Mixup and
CutMix, which mix labels too, are the exception: `TrainFeed` mixes batches on the host.

Engines hand in extra callbacks (pruning, progress); this package never imports a tuner.

Modules, one concern each: `feeds` (the inputs, `predict`), `augment` (the input
layers), `build` (optimizer, precision, the compiled model), `schedules` (learning
rates; the curves themselves are `ferhpo.rates`), `callbacks` (divergence guard,
recorder, EMA weights), `resume` (resume checkpoints), `evaluate` (metrics), `fitting` (`fit`).
"""

from ferhpo.training.augment import training_model
from ferhpo.training.build import build_training_model, compiled_model, dtype_policy, make_optimizer
from ferhpo.training.callbacks import EMAWeights
from ferhpo.training.evaluate import classification_metrics
from ferhpo.training.feeds import ArrayFeed, TrainFeed, predict, predict_proba, tta_views
from ferhpo.training.fitting import FitResult, fit
from ferhpo.training.resume import Resume, load_resume
from ferhpo.training.schedules import RecipeRates, schedule_callbacks

__all__ = [
    "ArrayFeed",
    "EMAWeights",
    "FitResult",
    "RecipeRates",
    "Resume",
    "TrainFeed",
    "build_training_model",
    "classification_metrics",
    "compiled_model",
    "dtype_policy",
    "fit",
    "load_resume",
    "make_optimizer",
    "predict",
    "predict_proba",
    "schedule_callbacks",
    "training_model",
    "tta_views",
]
