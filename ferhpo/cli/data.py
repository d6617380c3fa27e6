"""`ferhpo data`: inspect the FER2013 data: format, counts, fingerprint, cache, splits."""

from __future__ import annotations

import argparse
import json

from ferhpo.cli.common import (
    Command,
    Parser,
    add_data_options,
    load_data,
    non_negative_int,
)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    from ferhpo.splits import PROTOCOLS

    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser, required=True)
    summary_parser = sub.add_parser(
        "summary",
        help="load FER2013 (through the cache) and print its format, counts, fingerprint and cache",
        description="Load FER2013 through the cache and describe it: source format, images per split "
        "and class, converted and skipped images, the content fingerprint and the cache file.",
    )
    add_data_options(summary_parser)
    summary_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    summary_parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        help="also show the split sizes of this protocol: "
        + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()).replace("%", "%%"),
    )
    summary_parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the protocol's split (default 0)")


def _data_run(args: argparse.Namespace) -> int:
    from ferhpo.data import CLASSES, summary
    from ferhpo.splits import make_splits

    data = load_data(args)
    info = summary(data)
    if args.protocol:
        splits = make_splits(data, args.protocol, args.seed)
        info["protocol"] = {
            "name": splits.protocol,
            "seed": splits.seed,
            "sizes": splits.sizes(),
            "selection_sees": list(splits.selection_sees),
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    source_format = {"folder": "image folders", "csv": "Kaggle csv"}[info["format"]]
    cache = info["cache"]
    lines = [
        f"source       {info['path']} ({source_format})",
        f"fingerprint  {info['fingerprint']}",
        f"cache        {cache['path'] or '(disabled)'} "
        f"({'hit' if cache['hit'] else 'miss, written'}; loaded in {cache['load_seconds']:.2f} s)",
        f"converted    {info['converted']} images (not 48x48 grayscale)",
        f"skipped      {info['skipped']} bad files or rows",
        "",
    ]
    counts = info["counts"]
    columns = [c for c in ("train", "test", "public_test", "private_test") if c in counts]
    lines.append(f"{'class':<10}" + "".join(f"{c:>14}" for c in columns))
    for name in CLASSES:
        lines.append(f"{name:<10}" + "".join(f"{counts[c][name]:>14,}" for c in columns))
    lines.append(f"{'total':<10}" + "".join(f"{info['totals'][c]:>14,}" for c in columns))
    if args.protocol:
        protocol = info["protocol"]
        sizes = ", ".join(f"{k} {v:,}" for k, v in protocol["sizes"].items())
        lines += ["", f"protocol {protocol['name']} (seed {protocol['seed']}): {sizes}"]
        if protocol["selection_sees"]:
            overlaps = ", ".join(protocol["selection_sees"])
            lines.append(f"  note: validation overlaps {overlaps}; those are not clean test numbers")
    print("\n".join(lines))
    return 0


COMMAND = Command("data", "inspect the FER2013 data: format, counts, fingerprint, cache, splits", _data_arguments, _data_run)
