"""The pure parts of the Quality page: drift judged against a band, and charts drawn as SVG
that the Content-Security-Policy allows (no script, no style attribute), escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest

from app.monitoring import charts, quality
from app.monitoring.charts import Series

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(12)]


def test_a_day_outside_the_band_of_the_days_before_is_flagged():
    shares = [0.10, 0.12, 0.11, 0.09, 0.10, 0.11, 0.12, 0.10, 0.45, 0.11, 0.10, 0.02]
    judged = quality.judge(DAYS, shares, [20] * 12, floor=0.05, limits=(0.0, 1.0))
    assert [j.flagged for j in judged].index(True) == 8  # 0.45
    assert judged[4].low is None  # not before five days of history
    assert judged[5].low is not None and judged[5].low <= 0.11 <= judged[5].high  # type: ignore[operator]
    assert judged[11].flagged and judged[11].low >= 0.0  # type: ignore[operator]
    assert sum(j.flagged for j in judged) == 2


def test_days_with_few_answers_are_neither_judged_nor_counted():
    values = [0.5] * 6 + [0.9, 0.5]
    counts = [10] * 6 + [quality.MIN_ANSWERS - 1, 10]
    judged = quality.judge(DAYS[:8], values, counts, floor=0.02)
    assert judged[6].value is None and not judged[6].flagged
    assert not judged[7].flagged and judged[7].low == pytest.approx(0.48)  # the floor


def test_a_steady_series_uses_the_floor_not_a_zero_width_band():
    judged = quality.judge(DAYS[:7], [0.2] * 6 + [0.24], [9] * 7, floor=0.05)
    assert not judged[6].flagged and judged[6].high == pytest.approx(0.25)


def parse(svg: str) -> ET.Element:
    assert "style=" not in svg and "<script" not in svg.lower() and "javascript:" not in svg
    return ET.fromstring(svg)


def test_line_chart_with_band_gaps_and_flags():
    labels = [d.strftime("%m-%d") for d in DAYS]
    values = [0.1, 0.12, None, 0.11, 0.1, 0.1, 0.11, 0.1, 0.45, 0.1, None, None]
    band = [(None, None)] * 5 + [(0.05, 0.16)] * 7
    flagged = [v == 0.45 for v in values]
    svg = parse(
        charts.line_chart(
            "Declined",
            labels,
            [Series("declined", values, "s2")],
            charts.share,
            band=band,
            flagged=flagged,
        )
    )
    assert svg.findtext(f"{SVG}title") == "Declined"
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2  # broken at the gap; a lone point has no line
    points = svg.findall(f"{SVG}circle[@class='pt s2']")
    assert len(points) == 9
    tips = [p.findtext(f"{SVG}title") for p in points]
    assert tips[7] == "01-09 · declined: 45% · outside the band"
    assert len(svg.findall(f"{SVG}circle[@class='flag']")) == 1
    assert len(svg.findall(f"{SVG}polygon[@class='band']")) == 1


def test_stacked_bars_and_an_empty_chart():
    labels = ["01-01", "01-02"]
    stacks = [Series("answered", [3, 0], "o-answered"), Series("error", [1, 0], "o-error")]
    svg = parse(charts.bar_chart("Answers", labels, stacks))
    bars = svg.findall(f"{SVG}rect[@class]")
    titles = [b.findtext(f"{SVG}title") for b in bars if b.findtext(f"{SVG}title")]
    assert titles == ["01-01 · answered: 3", "01-01 · error: 1"]
    empty = parse(charts.bar_chart("Nothing", labels, [Series("a", [0, 0], "s0")]))
    assert "nothing recorded in these days" in ET.tostring(empty, encoding="unicode")


def test_hostile_names_are_escaped():
    hostile = '<script>alert("x")</script>'
    svg = charts.line_chart(
        hostile, ['"><img src=x onerror=alert(1)>'], [Series(hostile, [1.0], "s0")], charts.score
    )
    parse(svg)
    assert "<script>" not in svg and "<img" not in svg and "&lt;script&gt;" in svg


@pytest.mark.parametrize(("value", "text"), [(12.3, "12 ms"), (2450.0, "2.45 s")])
def test_millisecond_labels(value: float, text: str):
    assert charts.ms(value) == text
