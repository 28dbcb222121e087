"""Charts that read right: a y-axis label with the unit, legends without the labels every
series shares, time ticks a person reads, a note when only the top N of M series are drawn,
and the full query in a caption. ``prometheus.range`` and ``service.health`` draw them from
the real Prometheus (the ``stack`` fixture); what each figure says is read off the matplotlib
figure as it is saved."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

from opsbot.engine import Engine
from opsbot.model import Image, Table
from tests.test_silences import run


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What each figure saved during the test shows: titles and free texts, y labels,
    legend entries and x tick labels per axes."""
    import matplotlib.figure

    seen: list[dict[str, Any]] = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig: Any, *args: Any, **kwargs: Any) -> Any:
        fig.canvas.draw()  # tick labels exist once drawn
        axes = [ax for ax in fig.axes if ax.get_visible()]
        seen.append(
            {
                "texts": [t.get_text() for t in fig.texts]
                + [t.get_text() for ax in axes for t in ax.texts]
                + [ax.get_title() for ax in axes]
                + ([fig._suptitle.get_text()] if fig._suptitle else []),
                "ylabels": [ax.get_ylabel() for ax in axes],
                "legends": [
                    [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
                    for ax in axes
                ],
                "xticks": [
                    [t.get_text() for t in ax.get_xticklabels() if t.get_text()] for ax in axes
                ],
                "xlabels": [ax.get_xlabel() for ax in axes if ax.get_xlabel()],
            }
        )
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    yield seen


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


# -- units, legends and captions of prometheus.range ------------------------------------------


@pytest.mark.parametrize(
    ("query", "unit"),
    [
        ("sum by (service) (rate(http_requests_total[1m]))", "req/s"),
        (
            "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))",
            "seconds",
        ),
        ('process_resident_memory_bytes{job="prometheus"}', "bytes"),
        (
            'sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))',
            "ratio",
        ),
    ],
)
async def test_range_chart_y_axis_names_the_unit(
    live: Engine, drawn: list[dict[str, Any]], query: str, unit: str
) -> None:
    await run(live, "prometheus.range", {"query": query, "since": "15m"})
    [figure] = drawn
    [ylabel] = figure["ylabels"]
    assert unit in ylabel, ylabel


async def test_range_legend_drops_common_labels_and_caption_has_the_full_query(
    live: Engine, drawn: list[dict[str, Any]]
) -> None:
    query = 'rate(http_requests_total{namespace="shop"}[1m])'
    await run(live, "prometheus.range", {"query": query, "since": "15m"})
    [figure] = drawn
    [legend] = figure["legends"]
    assert "code=200, service=checkout" in legend, legend
    assert not [e for e in legend if "instance" in e or "job" in e or "namespace" in e], legend
    text = "\n".join(figure["texts"])
    assert query in text, text
    assert 'job="shop"' in text and 'namespace="shop"' in text  # said once, in the caption


async def test_long_query_is_whole_in_the_caption(
    live: Engine, drawn: list[dict[str, Any]]
) -> None:
    query = (
        'sum by (service) (rate(http_requests_total{namespace="shop",code=~"5..",job="shop"}[1m]))'
        ' / sum by (service) (rate(http_requests_total{namespace="shop",job="shop"}[1m]))'
    )
    assert len(query) > 150
    thread = await run(live, "prometheus.range", {"query": query, "since": "15m"})
    [figure] = drawn
    assert squeeze(query) in squeeze("".join(figure["texts"])), figure["texts"]
    [image] = [b for m in thread.messages for b in m.blocks if isinstance(b, Image)]
    assert image.alt == query and len(image.title) <= 80, image.title


async def test_only_the_top_series_are_drawn_and_the_chart_says_so(
    live: Engine, drawn: list[dict[str, Any]]
) -> None:
    # 9 buckets x 3 services: more than max_series (8)
    query = 'http_request_duration_seconds_bucket{job="shop"}'
    thread = await run(live, "prometheus.range", {"query": query, "since": "15m"})
    [figure] = drawn
    assert "top 8 of 27 series" in "\n".join(figure["texts"]), figure["texts"]
    assert len(figure["legends"][0]) == 8
    [table] = [b for m in thread.messages for b in m.blocks if isinstance(b, Table)]
    assert "19 more series not shown (top 8 by last value)" in table.note


async def test_time_ticks_are_readable(live: Engine, drawn: list[dict[str, Any]]) -> None:
    await run(live, "prometheus.range", {"query": "up", "since": "30m"})
    await run(live, "prometheus.range", {"query": "up", "since": "2d"})
    short, long = drawn
    [ticks] = short["xticks"]
    assert 3 <= len(ticks) <= 10 and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks), ticks
    # over two days a tick says the day where it changes ("Nov 24"), hours between
    [ticks] = long["xticks"]
    assert 3 <= len(ticks) <= 10, ticks
    days = [t for t in ticks if re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", t)]
    assert days and all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks if t not in days), ticks
    assert all("UTC" in x for x in (short["xlabels"] + long["xlabels"]))


# -- service.health's chart: the recipe's units ----------------------------------------------


async def test_service_health_charts_rate_errors_and_latency_with_units(
    live: Engine, drawn: list[dict[str, Any]]
) -> None:
    for _ in range(20):  # a stack seconds old has too little data for a chart: none is drawn
        thread = await run(live, "service.health", {"service": "checkout", "namespace": "shop"})
        if drawn:
            break
        await asyncio.sleep(1)
    [image] = [b for m in thread.messages for b in m.blocks if isinstance(b, Image)]
    assert image.data.startswith(b"\x89PNG")
    [figure] = drawn
    assert figure["ylabels"] == ["req/s", "error ratio (%)", "latency (seconds)"]
    assert figure["legends"][2] == ["p95", "p99"]
    assert "checkout in shop" in "\n".join(figure["texts"])


# -- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ("rate(http_requests_total[5m])", "req/s"),
        ("sum(irate(node_network_receive_bytes_total[1m]))", "bytes/s"),
        ("rate(process_cpu_seconds_total[1m])", "seconds/s"),
        ("increase(errors_total[1h])", "errors per 1h"),
        (
            "rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])",
            "seconds",
        ),
        ("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "ratio"),
        ("avg(node_load1)", ""),
        ("up", "up (1) / down (0)"),
        ("kube_pod_status_ready_ratio", "ratio"),
        ("count(up)", "series"),
        ("max_over_time(temperature_celsius[1h])", "°C"),
    ],
)
def test_unit_of_a_query(query: str, label: str) -> None:
    from opsbot.skills.charts import unit_of

    assert unit_of(query).label == label


def test_common_labels_are_split_from_the_ones_that_differ() -> None:
    from opsbot.skills.charts import common_labels, parse_series_label

    metrics = [
        {"__name__": "x", "job": "shop", "service": "cart", "code": "200"},
        {"__name__": "x", "job": "shop", "service": "checkout", "code": "200"},
        {"__name__": "x", "job": "shop", "service": "checkout", "code": "500"},
    ]
    common, legends = common_labels(metrics)
    assert common == {"__name__": "x", "job": "shop"}
    assert legends == [
        "code=200, service=cart",
        "code=200, service=checkout",
        "code=500, service=checkout",
    ]
    assert common_labels([{"job": "a"}]) == ({"job": "a"}, [""])
    assert parse_series_label('up{instance="a:1",job="x"}') == {
        "__name__": "up",
        "instance": "a:1",
        "job": "x",
    }
    assert parse_series_label("{}") == {}
