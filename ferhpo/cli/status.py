"""`ferhpo status`: show studies in a storage: counts, running trials, best, time left."""

from __future__ import annotations

import argparse
import json

from ferhpo.cli.common import (
    Command,
    add_storage_argument,
    quiet_optuna,
)


def _status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--study",
        help="one study: counts, running trials (epoch, last value, heartbeat), best, time left "
        "(default: every study in the storage)",
    )
    add_storage_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _status_run(args: argparse.Namespace) -> int:
    from ferhpo import status, store

    quiet_optuna()
    if args.study:
        result = status.study_status(args.study, args.storage)
        print(json.dumps(result.to_dict(), indent=2) if args.json else "\n".join(status.render(result)))
        return 0
    studies = status.all_studies(args.storage)
    if args.json:
        print(json.dumps([s.to_dict() for s in studies], indent=2))
    else:
        print("\n".join(status.render_all(studies, store.storage_url(args.storage))))
    return 0


COMMAND = Command("status", "show studies in a storage: counts, running trials, best, time left", _status_arguments, _status_run)
