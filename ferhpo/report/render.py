"""The report's content as Markdown, a self-contained HTML page, CSV and JSON.

The HTML needs nothing but itself: styles inline, figures embedded as base64 PNG data
URIs, no scripts, fonts or links to load, so it opens offline and can be mailed.
The Markdown references the PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ferhpo.formatting import format_seconds, format_signed, objective_label
from ferhpo.report.analysis import COLUMNS
from ferhpo.report.compare import members_text
from ferhpo.report.content import ReportContent
from ferhpo.report.figure_specs import FigureSpec


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "–" if v is None else format(v, fmt)


def _pts(v) -> str:
    return format_signed(v)


def _ci(row) -> str:
    if row["ci_low_pts"] is None:
        return "–"
    return f"[{row['ci_low_pts']:+.2f}, {row['ci_high_pts']:+.2f}]"


def _seeds(row) -> str:
    if not row["seed_runs"]:
        return "–"
    return f"{row['seed_mean_test_accuracy']:.4f} ± {row['seed_std_test_accuracy']:.4f} (n={row['seed_runs']})"


def _run(row) -> str:
    suffix = {"baseline": " (reproduced)", "reported": " (reported)"}.get(row["kind"], "")
    return f"{row['run']}{suffix}"


def _test(row) -> str:
    if row["test_accuracy"] is None:
        return "–"
    mark = " †" if row["selection_used_test"] else ""
    return f"{row['test_accuracy']:.4f}{mark}"


def _notes(row) -> str:
    parts = [p for p in (row["note"], row["comparison_note"]) if p]
    return "; ".join(parts) or ""


def _epochs(row) -> str:
    if row["epochs"] is None:
        return "–"
    if row["max_epochs"] and row["max_epochs"] != row["epochs"]:
        return f"{row['epochs']}/{row['max_epochs']}"
    return str(row["epochs"])


#: The human table: header and how a row's cell reads.
TABLE: list[tuple[str, Callable[[dict], str]]] = [
    ("rank", lambda r: "" if r["rank"] is None else str(r["rank"])),
    ("trial", _run),
    ("engine", lambda r: r["engine"] or "–"),
    ("key hyperparameters", lambda r: r["key_hyperparameters"] or "–"),
    ("status", lambda r: r["status"] or "–"),
    ("epochs", _epochs),
    ("best val acc", lambda r: _num(".4f")(r["best_val_accuracy"])),
    ("test acc", _test),
    ("test images", lambda r: _num(",")(r["test_images"])),
    ("PrivateTest", lambda r: _num(".4f")(r["test_private_accuracy"])),
    ("PublicTest", lambda r: _num(".4f")(r["test_public_accuracy"])),
    ("macro-F1", lambda r: _num(".4f")(r["macro_f1"])),
    ("params", lambda r: _num(",")(r["params"])),
    ("train time", lambda r: "–" if r["train_seconds"] is None else format_seconds(r["train_seconds"])),
    ("images/s", lambda r: _num(",.0f")(r["images_per_second"])),
    ("Δ best ref (pts)", lambda r: _pts(r["diff_best_reference_pts"])),
    ("Δ family ref (pts)", lambda r: _pts(r["diff_family_reference_pts"])),
    ("Δ baseline (pts)", lambda r: _pts(r["diff_baseline_pts"])),
    ("95% CI (pts)", _ci),
    ("McNemar p", lambda r: _num(".3g")(r["p_value"])),
    ("verdict", lambda r: r["verdict"] or ""),
    ("seeds: mean ± sd", _seeds),
    ("notes", _notes),
]

COMPARISON: list[tuple[str, Callable[[dict], str]]] = [
    ("rank", lambda c: str(c["rank"])),
    ("trial", lambda c: c["run"]),
    ("images compared", lambda c: _num(",")(c["n"] or None)),
    ("trial acc", lambda c: _num(".4f")(c["accuracy_a"])),
    ("baseline acc", lambda c: _num(".4f")(c["accuracy_b"])),
    ("Δ (pts)", lambda c: _pts(c["diff_points"])),
    ("95% CI (pts)", lambda c: "–" if c["ci_low"] is None else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"),
    ("b (trial only right)", lambda c: str(c["b"]) if c["verdict"] != "n/a" else "–"),
    ("c (baseline only right)", lambda c: str(c["c"]) if c["verdict"] != "n/a" else "–"),
    ("McNemar p", lambda c: _num(".3g")(c["p_value"])),
    ("test", lambda c: c["test"] or "–"),
    ("verdict", lambda c: c["verdict"]),
    ("note", lambda c: c["reason"] or ""),
]


def _vs(label: str) -> Callable[[dict], str]:
    def cell(e: dict) -> str:
        if e[f"{label}_diff_points"] is None:
            return "–"
        return (
            f"{e[f'{label}_diff_points']:+.2f} [{e[f'{label}_ci_low']:+.2f}, {e[f'{label}_ci_high']:+.2f}] "
            f"{e[f'{label}_verdict']}"
        )

    return cell


ENSEMBLES: list[tuple[str, Callable[[dict], str]]] = [
    ("ensemble", lambda e: str(e["name"])),
    ("members", members_text),
    ("flip TTA", lambda e: "yes" if e["tta_hflip"] else "no"),
    ("val acc", lambda e: _num(".4f")(e["val_accuracy"])),
    ("test acc", lambda e: _num(".4f")(e["test_accuracy"])),
    ("PrivateTest", lambda e: _num(".4f")(e["test_private_accuracy"])),
    ("PublicTest", lambda e: _num(".4f")(e["test_public_accuracy"])),
    ("macro-F1", lambda e: _num(".4f")(e["macro_f1"])),
    (
        "best single model (by val)",
        lambda e: f"{e['best_single']} ({_num('.4f')(e['best_single_accuracy'])})" if e["best_single"] else "–",
    ),
    ("Δ best single, 95% CI, verdict (pts)", _vs("best_single")),
    ("Δ baseline, 95% CI, verdict (pts)", _vs("baseline")),
    ("note", lambda e: e["note"]),
]

ENSEMBLES_NOTE = (
    "Ensembles (`ferhpo ensemble`): the members' probabilities averaged (with flip TTA, each member's also averaged "
    "with its mirror image's). Members are the runs of best validation accuracy; each ensemble is tested on the same "
    "test images against the best single model by validation and the best reproduced baseline (paired bootstrap "
    "95% interval)."
)

SEEDS_NOTE = (
    "Configurations trained with several seeds (`ferhpo confirm`): mean ± sample sd over seeds. Each is tested "
    "against the reference's seeds with a bootstrap that resamples the test images (paired) and each side's seeds "
    "(10,000 resamples): beats if the 95% interval lies above 0, loses if below, ties otherwise. A search's own "
    "run (its first seed) was selected on validation, so its validation accuracy is biased upward; test accuracy "
    "never took part in any selection."
)

SEEDS: list[tuple[str, Callable[[dict], str]]] = [
    ("configuration", lambda g: g["runs"][0].rsplit("-seed", 1)[0]),
    ("role", lambda g: g["role"]),
    ("seeds", lambda g: ", ".join(str(s) for s in g["seeds"])),
    ("budget", lambda g: str(g["budget"])),
    ("val acc: mean ± sd", lambda g: f"{g['mean_val_accuracy']:.4f} ± {g['std_val_accuracy']:.4f}"),
    ("test acc: mean ± sd", lambda g: f"{g['mean_test_accuracy']:.4f} ± {g['std_test_accuracy']:.4f}"),
    ("min", lambda g: f"{g['min_test_accuracy']:.4f}"),
    ("max", lambda g: f"{g['max_test_accuracy']:.4f}"),
    ("Δ reference (pts)", lambda g: _pts(g["diff_points"])),
    (
        "95% CI over seeds and images (pts)",
        lambda g: "–" if g["ci_low"] is None else f"[{g['ci_low']:+.2f}, {g['ci_high']:+.2f}]",
    ),
    ("verdict", lambda g: "–" if g["role"] == "reference" else g["verdict"]),
    ("runs", lambda g: ", ".join(g["runs"])),
]


def _corr(p: dict, name: str) -> str:
    value, interval = p[name], p[f"{name}_interval"]
    if value is None:
        return f"– (n = {p['n']})"
    return f"{value:+.2f}" + (f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else " (too few for an interval)")


def _regret(r: dict | None) -> str:
    if r is None:
        return "–"
    if r["lower_pick"] == r["top_pick"]:
        return f"{r['regret_points']:+.2f} (both pick {r['top_pick']})"
    return f"{r['regret_points']:+.2f} ({r['lower_pick']} against {r['top_pick']})"


RUNG_RANKS: list[tuple[str, Callable[[dict], str]]] = [
    ("rung", lambda r: str(r["rung"])),
    ("epochs", lambda r: str(r["epochs"])),
    ("rank", lambda r: str(r["rank"])),
    ("run", lambda r: r["run"]),
    ("configuration", lambda r: r["config"]),
    ("val acc", lambda r: _num(".4f")(r["val"])),
    ("test acc", lambda r: _num(".4f")(r["test"])),
]

RUNG_PAIRS: list[tuple[str, Callable[[dict], str]]] = [
    ("rungs", lambda p: f"{p['lower']} → {p['upper']}"),
    ("configurations at both", lambda p: str(p["n"])),
    ("Spearman ρ [95% CI]", lambda p: _corr(p, "spearman")),
    ("Kendall τ [95% CI]", lambda p: _corr(p, "kendall")),
    ("regret of the lower rung's pick (test pts)", lambda p: _regret(p["regret"])),
]

FIDELITY_NOTE = (
    "Each rung's complete runs by validation accuracy; then, between consecutive rungs, the rank correlation of "
    "validation accuracy over the configurations trained at both (95% paired bootstrap intervals, percentile, from "
    "4 configurations on) and the regret of choosing at the lower rung: among the configurations trained at both, "
    "the test accuracy at the upper rung of the upper rung's pick minus that of the lower rung's pick. Only the best "
    "of a rung are promoted, so each correlation is over a restricted range. Test accuracy chose nothing."
)


def _rung_rows(f: dict) -> list[dict]:
    epochs = f["rung_epochs"]
    return [
        {"rung": level, "epochs": row["epochs"] if level >= len(epochs) else epochs[level], "rank": i, **row}
        for level, rows in f["rungs"].items()
        for i, row in enumerate(rows, 1)
    ]


# --------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(columns, items) -> list[str]:
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for item in items:
        lines.append("| " + " | ".join(_md_cell(f(item)) for _, f in columns) + " |")
    return lines


def _reference_split(rows):
    ranked = [r for r in rows if r["rank"] is not None]
    rest = [r for r in rows if r["rank"] is None]
    return ranked, rest


def markdown(c: ReportContent, *, generated: str, figures: list[FigureSpec], drawn: set[str]) -> str:
    d = c.data
    out = [f"# Report: study `{d.name}`", "", f"Generated {generated} from `{d.url}`.", "", "## Summary", ""]
    out += [f"- {line}" for line in c.summary]
    ranked, rest = _reference_split(c.rows)
    out += [
        "",
        "## Ranking",
        "",
        f"Ranked by {objective_label(d.objective_name)}; the reference configurations follow, "
        "each reported number beside its reproduced runs.",
        "",
    ]
    out += _md_table(TABLE, ranked)
    out += ["", "### Reference configurations: reported and reproduced", ""]
    out += _md_table(TABLE, rest)
    out += [""] + [f"- {note}" for note in c.footnotes]
    out += ["", f"## Against the best baseline (top {c.top})", ""]
    if c.comparisons:
        out += _md_table(COMPARISON, c.comparisons)
    else:
        out.append("No complete run to compare.")
    if c.fidelity:
        out += ["", "## Fidelity across rungs", "", FIDELITY_NOTE, ""]
        out += _md_table(RUNG_PAIRS, c.fidelity["pairs"]) + [""]
        out += _md_table(RUNG_RANKS, _rung_rows(c.fidelity))
    if c.ensembles:
        out += ["", "## Ensembles", "", ENSEMBLES_NOTE, ""]
        out += _md_table(ENSEMBLES, c.ensembles)
    out += ["", "## Seeds", ""]
    if c.seed_groups:
        out += [SEEDS_NOTE, ""]
        out += _md_table(SEEDS, c.seed_groups)
    else:
        out.append("No configuration was run with more than one seed.")
    if d.failures:
        out += ["", "## Failed trials", ""]
        out += [f"- {f.run} (trial {f.number}): {f.error}" for f in d.failures]
    out += ["", "## Figures", ""]
    for spec in figures:
        out.append(f"### {spec.title}")
        out.append("")
        if spec.name in drawn:
            out += [f"![{spec.title}]({spec.file})", "", f"*{spec.caption}*", ""]
        else:
            out += [f"Not drawn: {spec.reason}.", ""]
    if c.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in c.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1500px; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9rem; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.45rem; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wide { min-width: 14rem; } td.wider { min-width: 22rem; } td.name { white-space: nowrap; }
tr.section td { background: #eef3f8; font-weight: 600; }
tr.reported td { color: #555; font-style: italic; }
tr.baseline td { background: #fff8ee; }
.beats { color: #0a7a2f; font-weight: 600; } .loses { color: #b3261e; font-weight: 600; } .ties { color: #7a5c00; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9rem; margin-top: 0.3rem; }
.missing { color: #8a4b00; }
ul.notes { font-size: 0.85rem; color: #444; }
"""

_NUMERIC = {
    "rank",
    "epochs",
    "best val acc",
    "test acc",
    "test images",
    "PrivateTest",
    "PublicTest",
    "macro-F1",
    "params",
    "train time",
    "images/s",
    "Δ best ref (pts)",
    "Δ family ref (pts)",
    "Δ baseline (pts)",
    "McNemar p",
    "images compared",
    "trial acc",
    "baseline acc",
    "Δ (pts)",
    "b (trial only right)",
    "c (baseline only right)",
    "n",
    "mean test acc",
    "sd",
    "min",
    "max",
}


_WIDE = {"key hyperparameters": "wide", "notes": "wider", "note": "wider", "trial": "name", "runs": "wide"}


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_cells(columns, item) -> str:
    cells = []
    for header, f in columns:
        text = f(item)
        cls = []
        if header in _NUMERIC:
            cls.append("num")
        if header in _WIDE:
            cls.append(_WIDE[header])
        if header == "verdict" and text in ("beats", "ties", "loses"):
            cls.append(text)
        attr = f' class="{" ".join(cls)}"' if cls else ""
        cells.append(f"<td{attr}>{_e(text)}</td>")
    return "".join(cells)


def _html_table(columns, items, *, row_class=None, sections=()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h, _ in columns)
    body = []
    sections = dict(sections)
    for i, item in enumerate(items):
        if i in sections:
            body.append(f'<tr class="section"><td colspan="{len(columns)}">{_e(sections[i])}</td></tr>')
        cls = f' class="{row_class(item)}"' if row_class else ""
        body.append(f"<tr{cls}>{_html_cells(columns, item)}</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def page(c: ReportContent, *, generated: str, figures: list[FigureSpec], folder: Path, drawn: set[str]) -> str:
    d = c.data
    ranked, rest = _reference_split(c.rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Report: study {_e(d.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Report: study <code>{_e(d.name)}</code></h1>",
        f'<p class="meta">Generated {_e(generated)} from <code>{_e(d.url)}</code>.</p>',
        "<h2>Summary</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in c.summary) + "</ul>",
        "<h2>Ranking</h2>",
        f"<p>Ranked by {_e(objective_label(d.objective_name))}; the reference configurations follow, each reported "
        "number beside its reproduced runs.</p>",
        _html_table(
            TABLE,
            ranked + rest,
            row_class=lambda r: r["kind"],
            sections=[(len(ranked), "Reference configurations: reported and reproduced")],
        ),
        '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in c.footnotes) + "</ul>",
        f"<h2>Against the best baseline (top {c.top})</h2>",
        _html_table(COMPARISON, c.comparisons) if c.comparisons else "<p>No complete run to compare.</p>",
        *(
            [
                "<h2>Fidelity across rungs</h2>",
                f"<p>{html.escape(FIDELITY_NOTE)}</p>",
                _html_table(RUNG_PAIRS, c.fidelity["pairs"]),
                _html_table(RUNG_RANKS, _rung_rows(c.fidelity)),
            ]
            if c.fidelity
            else []
        ),
        *(
            ["<h2>Ensembles</h2>", f"<p>{html.escape(ENSEMBLES_NOTE)}</p>", _html_table(ENSEMBLES, c.ensembles)]
            if c.ensembles
            else []
        ),
        "<h2>Seeds</h2>",
        (
            f"<p>{html.escape(SEEDS_NOTE)}</p>" + _html_table(SEEDS, c.seed_groups)
            if c.seed_groups
            else "<p>No configuration was run with more than one seed.</p>"
        ),
    ]
    if d.failures:
        parts.append(
            "<h2>Failed trials</h2><ul>"
            + "".join(f"<li>{_e(f.run)} (trial {f.number}): {_e(f.error)}</li>" for f in d.failures)
            + "</ul>"
        )
    parts.append("<h2>Figures</h2>")
    for spec in figures:
        if spec.name in drawn:
            data = base64.b64encode((folder / spec.file).read_bytes()).decode("ascii")
            parts.append(
                f'<figure id="{_e(spec.name)}"><img src="data:image/png;base64,{data}" alt="{_e(spec.title)}">'
                f"<figcaption><strong>{_e(spec.title)}.</strong> {_e(spec.caption)}</figcaption></figure>"
            )
        else:
            parts.append(f'<p class="missing"><strong>{_e(spec.title)}</strong> not drawn: {_e(spec.reason)}.</p>')
    if c.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in c.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- CSV and JSON


def _clean(value):
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def csv_text(c: ReportContent) -> str:
    frame = pd.DataFrame([{k: row[k] for k in COLUMNS} for row in c.rows], columns=list(COLUMNS))
    frame["hyperparameters"] = [json.dumps(_clean(h), sort_keys=True) if h else "" for h in frame["hyperparameters"]]
    for column in (
        "rank",
        "trial_number",
        "epochs",
        "max_epochs",
        "test_images",
        "params",
        "mcnemar_b",
        "mcnemar_c",
        "images_compared",
        "seed_runs",
    ):
        frame[column] = frame[column].astype("Int64")
    return frame.to_csv(index=False, lineterminator="\n")


def json_text(c: ReportContent, *, generated: str, figures: list[FigureSpec], drawn: set[str]) -> str:
    d = c.data
    best = c.best
    doc = {
        "study": d.name,
        "storage": d.url,
        "generated": generated,
        "snapshot": d.running > 0,
        "summary": c.summary,
        "best": None
        if best is None
        else {
            "run": best.name,
            "trial_number": best.number,
            "objective": best.objective,
            "test_accuracy": best.record.test_accuracy,
            "hyperparameters": best.record.hyperparameters,
            "run_id": best.record.run_id,
        },
        "baseline": None
        if c.best_baseline is None
        else {
            "run": c.best_baseline.name,
            "run_id": c.best_baseline.record.run_id,
            "study": c.best_baseline.record.study,
            "budget": c.best_baseline.record.budget.get("name"),
            "test_accuracy": c.best_baseline.record.test_accuracy,
        },
        "compute": c.compute,
        "comparisons": c.comparisons,
        "seed_groups": c.seed_groups,
        "ensembles": c.ensembles,
        "fidelity": c.fidelity,
        "failures": [
            {"run": f.run, "trial_number": f.number, "error": f.error, "hyperparameters": f.hyperparameters} for f in d.failures
        ],
        "figures": [
            {
                "name": s.name,
                "file": s.file if s.name in drawn else None,
                "title": s.title,
                "caption": s.caption,
                "drawn": s.name in drawn,
                "reason": s.reason or None,
            }
            for s in figures
        ],
        "notes": c.notes,
        "footnotes": c.footnotes,
        "columns": list(COLUMNS),
        "rows": [{k: row[k] for k in COLUMNS} for row in c.rows],
    }
    return json.dumps(_clean(doc), indent=2, allow_nan=False, default=str) + "\n"
