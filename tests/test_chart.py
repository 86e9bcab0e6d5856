"""The Pillow charts: ticks a reader can read, and lines drawn where their data says."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from loadtest.output.chart import Chart, Panel, nice_ticks


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    assert nice_ticks(3, 47) == [10.0, 20.0, 30.0, 40.0]
    assert nice_ticks(0, 2500, 6) == [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]
    assert nice_ticks(5, 5) == [5]


def _pixels(chart: Chart) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(chart.png())).convert("RGB")).astype(int)


def test_a_line_is_drawn_at_its_value_and_nowhere_else() -> None:
    chart = Chart(400, 300)
    (ax,) = chart.panels
    ax.ymin, ax.ymax = 0.0, 10.0
    ax.plot([0, 10], [7.5, 7.5], "#ff0000")  # a red level line three quarters up
    px = _pixels(chart)
    red = (px[:, :, 0] > 200) & (px[:, :, 1] < 80) & (px[:, :, 2] < 80)
    rows = np.nonzero(red.sum(axis=1) > 100)[0]  # rows where the line runs across the frame
    assert len(rows) and rows.max() - rows.min() <= 3
    top, bottom = 26, 300 - 40  # the frame (chart.py's margins): y = 7.5 is 75% of the way up
    assert abs(rows.mean() - (bottom - 0.75 * (bottom - top))) <= 2
    assert not red[:, :40].any()  # nothing red in the tick labels' margin


def test_stacked_panels_share_one_x_range() -> None:
    chart = Chart(400, 400, 2, 1, sharex=True)
    chart.panels[0].plot([0, 10], [1, 2], "#000000")
    chart.panels[1].plot([5, 30], [1, 2], "#000000")
    chart.png()
    assert chart.panels[0].xlim == chart.panels[1].xlim
    lo, hi = chart.panels[0].xlim or (0, 0)
    assert lo < 0 and 30 < hi < 32  # both lines' data, padded 5%


def test_stacked_panels_keep_one_frame_width_when_one_has_a_right_axis() -> None:
    """A vertical mark at x = 5 in each of two stacked panels, one with a right axis: both marks are
    drawn in the same pixel column (matplotlib's twinx kept the frame; so must we)."""
    from loadtest.output.chart import Mark

    chart = Chart(400, 400, 2, 1, sharex=True)
    chart.panels[0].plot([0, 10], [1, 2], "#000000")
    chart.panels[1].plot([0, 10], [1, 2], "#000000", right=True)
    for ax in chart.panels:
        ax.marks.append(Mark("#ff0000", x=5.0))
    px = _pixels(chart)
    red = (px[:, :, 0] > 200) & (px[:, :, 1] < 80) & (px[:, :, 2] < 80)
    top, bottom = red[:200].sum(axis=0).argmax(), red[200:].sum(axis=0).argmax()
    assert red[:200].sum() and red[200:].sum() and abs(int(top) - int(bottom)) <= 1, (top, bottom)


def test_a_log_axis_narrower_than_a_decade_still_has_ticks() -> None:
    from loadtest.output.chart import _Scale, _x_ticks

    panel = Panel(xlog=10)
    ticks = _x_ticks(panel, _Scale(np.log10(31), np.log10(52), 0, 100, 10))
    values = [v for v, _ in ticks]
    assert len(values) >= 3 and all(31 <= v <= 52 for v in values), ticks


def test_the_legend_lists_what_is_labelled() -> None:
    panel = Panel()
    panel.plot([1, 2], [1, 2], "#000000", "a p50")
    panel.plot([1, 2], [2, 3], "#000000")
    assert panel.labels() == ["a p50"]
