"""The share of a pipeline's wall time spent in training steps (benchmarks/cpu_long.sh).

    python benchmarks/train_share.py LOG STORAGE STUDY [STUDY ...]

LOG is the pipeline's log (its last line: "== the whole pipeline took N s"); each
STUDY's runs add the training-step seconds their records measured (`phases.train`:
`ferhpo.phases`). Prints one line: training seconds, wall seconds and the share.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    from ferhpo import store

    log, storage, studies = Path(argv[0]), argv[1], argv[2:]
    found = re.findall(r"== the whole pipeline took (\d+) s", log.read_text())
    if not found:
        print(f"{log}: no line '== the whole pipeline took N s'; expected a finished pipeline's log", file=sys.stderr)
        return 2
    wall = float(found[-1])
    train = runs = 0.0
    for name in studies:
        for record in store.records(store.open_study(name, storage, create=False)):
            train += float(record.phases.get("train", 0.0))
            runs += 1
    print(
        f"training steps: {train:.0f} s of the pipeline's {wall:.0f} s wall time ({100 * train / wall:.1f}%), "
        f"{runs:.0f} runs in {', '.join(studies)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
