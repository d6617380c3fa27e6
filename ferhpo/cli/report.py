"""`ferhpo report`: rank a study's trials against the baselines."""

from __future__ import annotations

import argparse

from ferhpo.cli.common import (
    Command,
    add_storage_argument,
    non_negative_int,
    positive_int,
    quiet_optuna,
)


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study to report on (a search, a baseline study, or one still running)")
    add_storage_argument(p)
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<study>/); an earlier report there is replaced")
    p.add_argument(
        "--format", default="md,html,csv,json", help="comma-separated formats: md, html, csv, json (default: all four)"
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=10,
        metavar="K",
        help="trials tested against the best baseline (bootstrap interval, McNemar; default 10)",
    )
    p.add_argument(
        "--baseline-study", metavar="NAME", help="study holding reproduced baseline runs (default: 'baseline' when it exists)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap resampling (default 0)")


def _report_run(args: argparse.Namespace) -> int:
    from ferhpo.report import build_report

    quiet_optuna()
    result = build_report(
        args.study,
        storage=args.storage,
        out=args.out,
        formats=args.format,
        top=args.top,
        baseline_study=args.baseline_study,
        seed=args.seed,
    )
    for line in result.summary:
        print(line)
    if result.verdicts:
        print(f"{'rank':>4}  {'run':<14}{'test acc':>10}{'diff (pts)':>12}  {'95% interval (pts)':<20}{'McNemar p':>10}  verdict")
        for row in result.verdicts:
            accuracy = row.get("test_accuracy")
            diff = row.get("diff_points")
            low, high = row.get("ci_low"), row.get("ci_high")
            interval = f"[{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else "-"
            p_value = row.get("p_value")
            print(
                f"{row.get('rank', ''):>4}  {str(row.get('run')):<14}{(f'{accuracy:.4f}' if accuracy is not None else '-'):>10}"
                f"{(f'{diff:+.2f}' if diff is not None else '-'):>12}  {interval:<20}"
                f"{(f'{p_value:.3g}' if p_value is not None else '-'):>10}  {row.get('verdict')}"
                + (f" ({row['reason']})" if row.get("verdict") == "n/a" and row.get("reason") else "")
            )
    for figure, why in result.figures_skipped.items():
        print(f"figure {figure} not drawn: {why}")
    note = " (a snapshot: trials are still running)" if result.snapshot else ""
    print(f"report written to {result.out}/ ({len(result.files)} files){note}")
    return 0


COMMAND = Command("report", "rank a study's trials against the baselines", _report_arguments, _report_run)
