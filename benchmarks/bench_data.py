"""Time loading the full FER2013: one-by-one decoding, ferhpo cold, ferhpo warm (cache).

    python benchmarks/bench_data.py --data ../shared/fer2013 [--repeats 5] [--json]

The one-by-one baseline is what a straightforward script does: walk the class folders
and decode each file with Pillow into a list, then stack.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ferhpo.data import CLASSES, load_fer2013


def one_by_one(root: Path) -> int:
    images, labels = [], []
    for split in ("train", "test"):
        for label, cls in enumerate(CLASSES):
            for f in sorted((root / split / cls).iterdir()):
                images.append(np.asarray(Image.open(f).convert("L")))
                labels.append(label)
    return len(np.stack(images))


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/fer2013")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    root = Path(args.data)
    with tempfile.TemporaryDirectory() as cache:
        baseline = timed(lambda: one_by_one(root), 1)
        cold = timed(lambda: load_fer2013(root, Path(cache) / "fresh", use_cache=True), 1)
        assert load_fer2013(root, Path(cache) / "fresh").info.cache_hit
        warm = timed(lambda: load_fer2013(root, Path(cache) / "fresh"), args.repeats)
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "one_by_one_s": round(baseline, 3),
        "ferhpo_cold_s": round(cold, 3),
        "ferhpo_warm_s": round(warm, 3),
        "warm_speedup_vs_one_by_one": round(baseline / warm, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:<28}{v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
