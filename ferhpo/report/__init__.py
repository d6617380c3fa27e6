"""Reports: ranking, statistics and figures, from the results store only (never keras).

`build_report` reads a study (a search, a baseline study, or one still running), ranks
its runs by the study's validation objective, sets them beside the five reported
reference configurations and the reproduced baseline runs, tests the top trials against
the best baseline on the same test images (paired bootstrap interval and McNemar), and
writes `report.md`, a self-contained `report.html`, `trials.csv`, `trials.json` and the
figures into one folder. Nothing is written unless everything succeeds: the report is
built in a temporary folder beside the target and renamed into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferhpo import store
from ferhpo.atomic import swap_into_place
from ferhpo.errors import ConfigError, FerhpoError

__all__ = ["FORMATS", "ReportResult", "build_report", "default_out"]

#: Output formats and the file each writes.
FORMATS = {"md": "report.md", "html": "report.html", "csv": "trials.csv", "json": "trials.json"}
#: Marks a folder as a report, so a later report may replace it (and nothing else).
MARKER = ".ferhpo-report"
REPORTS_DIR = Path("reports")


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote, and the gist of it for the command line to print."""

    out: Path
    files: tuple[Path, ...]  # every file written, report files first, then figures
    summary: tuple[str, ...]  # the report's summary sentences
    verdicts: tuple[dict[str, Any], ...]  # top-K runs against the best baseline
    figures_skipped: dict[str, str] = field(default_factory=dict)  # figure -> why it is not drawn
    snapshot: bool = False  # trials were still running


def default_out(study: str) -> Path:
    return REPORTS_DIR / study


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """Known formats, in the order given, without repeats; ConfigError for unknown ones."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise ConfigError(f"unknown report format {item!r}; expected a comma-separated list of {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no report format given; expected a comma-separated list of {', '.join(FORMATS)}")
    return tuple(out)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FerhpoError(f"report folder {out} is a file; expected a folder (or a path that does not exist yet)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise FerhpoError(
            f"report folder {out} holds files that are not an earlier report; expected a new folder or an earlier "
            f"report's (it would be replaced)"
        )


def build_report(
    study: str,
    *,
    storage: str | None = None,
    out: str | Path | None = None,
    formats: str | Sequence[str] = ("md", "html", "csv", "json"),
    top: int = 10,
    baseline_study: str | None = None,
    root: Path = store.STUDIES_DIR,
    seed: int = 0,
) -> ReportResult:
    """Write the report of `study` into `out` (default reports/<study>/) and return what was written.

    `storage` is an Optuna URL (default $FERHPO_STORAGE, else the SQLite file under
    studies/); `root` is the folder holding the runs' artifacts (studies/). Baselines
    come from `baseline_study`, else from a study named "baseline" in the same storage
    when there is one, and from the study's own baseline runs. `top` complete runs are
    tested against the best reproduced baseline, with bootstrap resamples seeded by `seed`.

    Raises `StoreError` when the storage cannot be opened, the study does not exist or
    holds no finished run, and `ConfigError`/`FerhpoError` for bad arguments; in every
    error case nothing is written.
    """
    from ferhpo.presets import load_presets
    from ferhpo.report import analysis, render
    from ferhpo.report.figure_specs import figure_specs
    from ferhpo.report.load import load_study

    chosen = parse_formats(formats)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be a positive integer, but got {top!r}")
    if not isinstance(study, str) or not study:
        raise ConfigError(f"--study must name a study, but got {study!r}")
    out = Path(out) if out is not None else default_out(study)
    _check_out(out)

    data = load_study(study, url=storage, baseline_study=baseline_study, root=Path(root))
    references = analysis.references_from_presets(load_presets())
    content = analysis.build_content(data, references, top=top, seed=seed)
    specs = figure_specs(content)
    generated = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    with_figures = "md" in chosen or "html" in chosen
    if not with_figures:
        for spec in specs:
            spec.draw, spec.reason = None, spec.reason or "figures are drawn for the md and html formats only"

    # ----- everything is known: write into a temporary folder, then rename it into place
    parent = out.absolute().parent
    created = _missing_parents(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        drawn: set[str] = set()
        figure_files = []
        for spec in specs:
            if spec.draw is None:
                continue
            spec.draw(tmp / spec.file)
            drawn.add(spec.name)
            figure_files.append(spec.file)
        written = []
        for name in chosen:
            if name == "md":
                text = render.markdown(content, generated=generated, figures=specs, drawn=drawn)
            elif name == "html":
                text = render.page(content, generated=generated, figures=specs, folder=tmp, drawn=drawn)
            elif name == "csv":
                text = render.csv_text(content)
            else:
                text = render.json_text(content, generated=generated, figures=specs, drawn=drawn)
            (tmp / FORMATS[name]).write_text(text, encoding="utf-8")
            written.append(FORMATS[name])
        (tmp / MARKER).write_text(json.dumps({"study": study, "generated": generated}) + "\n", encoding="utf-8")
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # deepest first: only folders this call created, and only if empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return ReportResult(
        out=out,
        files=tuple(out / f for f in written + figure_files),
        summary=tuple(content.summary),
        verdicts=tuple(content.comparisons),
        figures_skipped={s.name: s.reason for s in specs if s.name not in drawn},
        snapshot=data.running > 0,
    )


def _missing_parents(folder: Path) -> list[Path]:
    """The folders up to `folder` that do not exist yet, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    return missing
