"""The search's live progress driven by a constructed running study (no training).

The same study as tests/test_status.py: a finished trial, a trial at epoch 2/5 after
two 60 s epochs, and a trial whose worker died. The live line must show each running
trial's epoch, value, elapsed time and time left, mark the stale one, give the study's
time left, and say once what a trial and the search cost, from the measured times.
"""

from __future__ import annotations

import io

import pytest

from ferhpo.cli.common import estimate_lines
from ferhpo.cli.search import _LiveLine
from ferhpo.engines.runner import Progress
from ferhpo.status import RunningTrial, StudyStatus, study_status
from test_status import make_running_study


@pytest.fixture
def progress(tmp_path, monkeypatch):
    monkeypatch.delenv("FERHPO_HEARTBEAT", raising=False)
    url = f"sqlite:///{tmp_path}/studies.db"
    make_running_study(url)
    s = study_status("watched", url)
    return Progress(s.counts, 4, s.best, 725.0, s)


def test_live_line_shows_each_running_trial(progress):
    out = io.StringIO()
    live = _LiveLine("val_accuracy", workers=1, out=out, interactive=False)
    live.update(progress)
    lines = out.getvalue().splitlines()
    estimate = [line for line in lines if line.startswith("estimate")]
    assert estimate == [
        "estimate (measured on trial 1): ~0:01:00 an epoch, ~0:05:00 for its 5 epoch(s); 4 trial(s): up to ~0:20:00 "
        "(pruned trials end sooner)"
    ]
    study = next(line for line in lines if line.startswith("trials "))
    assert study.startswith("trials 1/4 (complete 1, pruned 0, failed 0), running 2, best val_accuracy 0.5500")
    assert study.endswith("elapsed 0:12:05, left ~0:23:00")
    trial1 = next(line for line in lines if line.startswith("  trial 1:"))
    assert "epoch 2/5, val_accuracy 0.4321" in trial1 and trial1.endswith("left ~0:03:00")
    trial2 = next(line for line in lines if line.startswith("  trial 2:"))
    assert "starting" in trial2 and "STALE" in trial2

    # nothing changed: no new line (off a terminal, lines come with changes); the estimate only once
    before = out.getvalue()
    live.update(progress)
    assert out.getvalue() == before


def test_terminal_redraws_the_block_in_place(progress):
    out = io.StringIO()
    live = _LiveLine("val_accuracy", out=out, interactive=True)
    live.update(progress)
    live.update(progress)
    text = out.getvalue()
    assert text.count("\x1b[3F\x1b[J") == 1  # the second draw moved up over the 3-line block and cleared it
    assert text.count("estimate (measured on trial 1)") == 1


def test_a_day_without_an_accelerator_names_the_cpu_budget():
    r = RunningTrial(
        number=0,
        epoch=0,
        epochs=200,
        batch=40,
        batches=898,
        value=None,
        elapsed=100.0,
        heartbeat_age=1.0,
        stale=False,
        seconds_left=None,
        seconds_per_epoch=24 * 60.0,
        accelerator=False,
    )
    s = StudyStatus(
        "s",
        "search",
        "val_accuracy",
        {"done": 0, "complete": 0, "pruned": 0, "failed": 0, "running": 1, "waiting": 0},
        2,
        None,
        None,
        [r],
    )
    out = io.StringIO()
    _LiveLine("val_accuracy", out=out, interactive=False).update(Progress(s.counts, 2, None, 100.0, s))
    text = out.getvalue()
    assert "~0:24:00 an epoch, ~3d 8:00:00 for its 200 epoch(s); 2 trial(s): up to ~6d 16:00:00" in text
    assert "more than a day" in text and "--budget cpu" in text
    # with a GPU, the same numbers carry no warning
    assert len(estimate_lines("x", 24 * 60.0, 200, 2, 1, True, what="trial(s)")) == 1
