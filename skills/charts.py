"""PNG line charts of range results (matplotlib, Agg backend: no display needed).

A chart says what it shows: the y axis names the unit (from the metric names' suffixes and
the functions around them, :func:`unit_of`, or the skill's recipe), the legend keeps only the
labels that differ between series (:func:`common_labels`; the shared ones are said once, in
the caption), time ticks are ``HH:MM`` with the day where it changes, and a caption under the
plot holds the full query and, when only the top N of M series are drawn, says so.

matplotlib is imported by the drawing functions only, so importing this module (for
:func:`unit_of`) loads nothing heavy.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Points = list[tuple[float, float]]  # [(unix seconds, value)]
#: a series: its labels (a mapping, or Prometheus' text form ``name{k="v"}``) and its points
Series = tuple[str | Mapping[str, str], Points]

CAPTION_WIDTH = 120  # characters of the caption's monospace lines
LEGEND_WIDTH = 50


# -- units -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A y axis: its ``label`` and how ticks read (``kind``: plain, seconds, bytes, ratio)."""

    label: str = ""
    kind: str = "plain"

    @property
    def axis_label(self) -> str:
        if self.kind == "ratio":
            return f"{self.label} (%)"
        return self.label

    @property
    def per_second(self) -> bool:
        return self.label.endswith("/s")

    @property
    def from_zero(self) -> bool:
        """Whether the y axis should start at 0: values that cannot be negative."""
        return self.kind != "plain" or self.per_second or self.label in ("series", "samples")


NONE = Unit()
RATIO = Unit("ratio", "ratio")
#: Prometheus' base-unit suffixes (https://prometheus.io/docs/practices/naming/)
SUFFIXES = {
    "seconds": Unit("seconds", "seconds"),
    "bytes": Unit("bytes", "bytes"),
    "ratio": RATIO,
    "percent": Unit("%"),
    "celsius": Unit("°C"),
    "volts": Unit("volts"),
    "amperes": Unit("amperes"),
    "joules": Unit("joules"),
    "meters": Unit("meters"),
    "grams": Unit("grams"),
    "hertz": Unit("hertz"),
}
SHORT_NOUNS = {"requests": "req", "operations": "ops"}
PER_SECOND = ("rate", "irate", "deriv")
INCREASE = ("increase", "delta", "idelta")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"and", "or", "unless", "atan2"}


OPENERS, CLOSERS = ("(", "[", "{"), (")", "]", "}")


def _scan(expr: str) -> Iterator[tuple[int, str, int]]:
    """``(index, character, depth)`` of each character of ``expr`` outside quotes, depth
    being the brackets open around it (a bracket and its partner share the depth outside
    them); last ``(len(expr), "", depth)``. Depth -1 (and the end) where a bracket closes
    none or one of another kind, or where a quote is left open."""
    stack: list[str] = []
    quote = ""
    for i, ch in enumerate(expr):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in ('"', "'", "`"):
            quote = ch
        elif ch in OPENERS:
            yield i, ch, len(stack)
            stack.append(CLOSERS[OPENERS.index(ch)])
        elif ch in CLOSERS:
            if not stack or stack.pop() != ch:
                yield i, ch, -1
                return
            yield i, ch, len(stack)
        else:
            yield i, ch, len(stack)
    yield len(expr), "", -1 if quote else len(stack)


def balanced(expr: str) -> bool:
    """Whether every bracket of ``expr`` (outside quotes) closes, in order, and every quote."""
    *_, (_, _, depth) = _scan(expr)
    return depth == 0


def _split_top(expr: str, ops: Sequence[str]) -> list[str]:
    """``expr`` split at the binary operators ``ops`` outside brackets and quotes (the
    operator stays at the head of each later part)."""
    parts, last, after = [], 0, 0
    for i, ch, depth in _scan(expr):
        if depth != 0 or i < max(1, after) or ch in OPENERS or ch in CLOSERS:
            continue
        for op in ops:
            if expr.startswith(op, i) and (not op.isalpha() or _word_at(expr, i, op)):
                parts.append(expr[last:i])
                last, after = i, i + len(op)
                break
    parts.append(expr[last:])
    return [p for p in (p.strip() for p in parts) if p]


def _word_at(expr: str, i: int, word: str) -> bool:
    before = expr[i - 1] if i else " "
    after = expr[i + len(word)] if i + len(word) < len(expr) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def _strip_op(part: str, ops: Sequence[str]) -> str:
    for op in sorted(ops, key=len, reverse=True):
        if part.startswith(op):
            return part[len(op) :].strip().removeprefix("bool").strip()
    return part


def _unwrap(expr: str) -> str:
    """``expr`` without redundant outer parentheses and a trailing ``offset``/``@``."""
    expr = re.sub(r"\s+(?:offset\s+-?\w+|@\s*[\w.()]+)\s*$", "", expr.strip())
    while expr.startswith("(") and expr.endswith(")") and _closes_at_end(expr):
        expr = expr[1:-1].strip()
    return expr


def _closes_at_end(expr: str) -> bool:
    """Whether the bracket ``expr`` starts with closes at its last character."""
    first = next((i for i, ch, depth in _scan(expr) if ch in CLOSERS and depth == 0), None)
    return first == len(expr) - 1


def _number(expr: str) -> bool:
    return re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", expr.strip(), re.I) is not None


_GROUPING = r"(?:by|without)\s*\([^)]*\)\s*"


def _call(expr: str) -> tuple[str, str] | None:
    """``(function, its arguments)`` when ``expr`` is one call, grouping clause included
    (``sum by (x) (...)``, ``sum(...) by (x)``); None otherwise."""
    m = re.match(rf"([a-zA-Z_]\w*)\s*(?:{_GROUPING})?\(", expr)
    if not m:
        return None
    close = next(
        (i for i, ch, depth in _scan(expr) if i >= m.end() and ch in CLOSERS and depth == 0),
        None,
    )
    if close is None or not re.fullmatch(rf"\s*(?:{_GROUPING})?", expr[close + 1 :]):
        return None
    return m.group(1), expr[m.end() : close]


def _metric_unit(name: str) -> tuple[Unit, str]:
    """The unit of a metric by its name, and the noun a rate of it counts (``requests``)."""
    if name == "up":
        return Unit("up (1) / down (0)"), ""
    base = name
    counter = base.endswith("_total")
    base = base.removesuffix("_total")
    if base.endswith(("_bucket", "_count")):  # a histogram's observation counts
        return Unit("count"), "events"
    words = base.removesuffix("_sum").split("_")
    if words[-1] in SUFFIXES:
        return SUFFIXES[words[-1]], words[-1]
    if counter:
        return Unit(f"{words[-1]} (cumulative)"), words[-1]
    return NONE, ""


def unit_of(expr: str) -> Unit:
    """The unit a PromQL expression's values have, from its metrics' suffixes and the
    functions and operators around them; ``Unit()`` (no label) when it cannot be told."""
    expr = _unwrap(expr)
    for ops in (("and", "or", "unless"), ("==", "!=", ">=", "<=", ">", "<"), ("+", "-")):
        parts = _split_top(expr, ops)
        if len(parts) > 1:  # a filter or a sum keeps the unit of its left side
            return unit_of(parts[0])
    parts = _split_top(expr, ("*", "/", "%"))
    if len(parts) > 1:
        return _product(parts)
    if call := _call(expr):
        return _call_unit(*call)
    name = re.match(r"[a-zA-Z_:][\w:]*", expr)
    if name and name.group(0) not in KEYWORDS:
        return _metric_unit(name.group(0))[0]
    if m := re.search(r'__name__\s*=\s*"([^"]+)"', expr):
        return _metric_unit(m.group(1))[0]
    return NONE


def _product(parts: list[str]) -> Unit:
    left, *rest = parts
    if len(rest) != 1:
        return NONE
    right = rest[0]
    op = right[0]
    right = _strip_op(right, ("*", "/", "%"))
    if op == "*":
        if _number(right) and float(right) == 100 and unit_of(left).kind == "ratio":
            return Unit("%")
        if _number(right) and float(right) == 1:
            return unit_of(left)
        return NONE
    if op != "/" or _number(right):
        return NONE
    lname, rname = _first_metric(left), _first_metric(right)
    if lname.endswith("_sum") and rname == lname.removesuffix("_sum") + "_count":
        return _metric_unit(lname.removesuffix("_sum"))[0]  # an average observation
    lunit, runit = unit_of(left), unit_of(right)
    if lunit == runit or (lunit.per_second and runit.per_second):
        return RATIO
    if lunit.label and runit.label:
        return Unit(f"{lunit.label} / {runit.label}")
    return NONE


def _first_metric(expr: str) -> str:
    for name in metric_names(expr):
        return name
    return ""


def _call_unit(fn: str, inner: str) -> Unit:
    args = _split_top(inner, (",",))
    args = [_strip_op(a, (",",)) for a in args]
    vector = next((a for a in args if not _number(a) and not a.startswith('"')), "")
    if fn in PER_SECOND or fn in INCREASE:
        name = _first_metric(vector)
        unit, noun = _metric_unit(name)
        window = re.search(r"\[(\w+)(?::\w*)?\]\s*\)?\s*$", vector)
        if unit.kind in ("seconds", "bytes") or unit.label in ("°C", "%"):
            what = unit.label
        else:
            what = SHORT_NOUNS.get(noun, noun) if fn in PER_SECOND else noun
            what = what or "units"
        if fn in PER_SECOND:
            return Unit(f"{what}/s")
        return Unit(f"{what} per {window.group(1)}" if window else what)
    if fn == "histogram_quantile":
        name = next((n for n in metric_names(inner) if n.endswith("_bucket")), "")
        return _metric_unit(name.removesuffix("_bucket"))[0] if name else NONE
    if fn == "count":
        return Unit("series")
    if fn in ("count_over_time", "count_values"):
        return Unit("samples")
    if fn in ("absent", "absent_over_time", "changes", "resets", "timestamp", "time"):
        return NONE
    # aggregations, *_over_time, abs, clamp, round, sort, label_replace...: the vector's unit
    return unit_of(re.sub(r"\[[^\]]*\]\s*$", "", vector)) if vector else NONE


def metric_names(expr: str) -> list[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or strings),
    in order, each once."""
    names: list[str] = []
    depth_braces, quote = 0, ""
    for m in re.finditer(r'"|\'|`|\{|\}|\[[^\]]*\]|(?<![\w.])[a-zA-Z_:][\w:]*', expr):
        token = m.group(0)
        if quote:
            quote = "" if token == quote else quote
            continue
        if token in ('"', "'", "`"):
            quote = token
        elif token == "{":
            depth_braces += 1
        elif token == "}":
            depth_braces -= 1
        elif token[0] != "[" and depth_braces == 0:
            following = expr[m.end() :]
            if token in KEYWORDS or token in names:
                continue
            if re.match(rf"\s*(?:{_GROUPING})?\(", following):  # a function or aggregation
                continue
            if re.match(r"(by|without|on|ignoring|group_left|group_right)\s*\(", expr[m.start() :]):
                continue
            if _inside_grouping(expr, m.start()):
                continue
            names.append(token)
    return names


def _inside_grouping(expr: str, index: int) -> bool:
    """Whether ``index`` is inside ``by (...)``/``on (...)``: those name labels, not metrics."""
    opened = expr.rfind("(", 0, index)
    if opened < 0 or ")" in expr[opened:index]:
        return False
    return bool(re.search(r"\b(by|without|on|ignoring|group_left|group_right)\s*$", expr[:opened]))


# -- labels ------------------------------------------------------------------------------------


def parse_series_label(label: str) -> dict[str, str]:
    """``up{instance="a:1",job="x"}`` -> ``{"__name__": "up", "instance": "a:1", "job": "x"}``."""
    m = re.match(r"^([a-zA-Z_:][\w:]*)?\s*(?:\{(.*)\})?$", label.strip(), re.S)
    if not m:
        return {"": label}
    labels = {"__name__": m.group(1)} if m.group(1) else {}
    for pair in re.finditer(r'([a-zA-Z_][\w]*)\s*=\s*"((?:[^"\\]|\\.)*)"', m.group(2) or ""):
        labels[pair.group(1)] = pair.group(2).replace('\\"', '"').replace("\\\\", "\\")
    return labels


def common_labels(metrics: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The labels every series has with the same value, and per series a legend entry of
    the labels that differ (``code=200, service=cart``; the metric name first when names
    differ). One series: everything is common and its entry is empty."""
    if not metrics:
        return {}, []
    first = metrics[0]
    common = {k: v for k, v in first.items() if all(m.get(k) == v for m in metrics[1:])}
    legends = []
    for metric in metrics:
        name = metric.get("__name__", "") if "__name__" not in common else ""
        rest = ", ".join(
            f"{k}={v}" for k, v in sorted(metric.items()) if k not in common and k != "__name__"
        )
        legends.append(", ".join(p for p in (name, rest) if p))
    return common, legends


def _labels_text(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else name


def shorten(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with an ellipsis when longer."""
    return text if len(text) <= width else text[: width - 1] + "…"


# -- drawing -------------------------------------------------------------------------------


@dataclass
class Panel:
    """One plot of a chart with panels: its unit (the y axis) and series."""

    unit: Unit
    series: list[Series]


@dataclass(frozen=True)
class Marker:
    """A moment marked across a chart: a dashed vertical line (an alert's start, a deploy)
    with its ``label`` at the top. Markers outside the chart's time span are left out."""

    at: datetime
    label: str = ""
    color: str = "#d62728"


def line_chart(
    title: str,
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    *,
    query: str = "",
    unit: Unit | None = None,
    total: int | None = None,
    note: str = "",
    width: float = 9,
    height: float = 4,
    marker: Marker | None = None,
) -> bytes:
    """Render ``series`` as one line each over ``start``..``end`` (UTC); returns PNG bytes.

    ``query`` goes whole into the caption (and gives the unit when ``unit`` is None);
    ``total``: how many series there were when fewer are drawn (the top ones); ``note``: one
    more caption line; ``marker``: a moment to mark (:class:`Marker`). Series with few points
    get markers so they stay visible."""
    unit = unit if unit is not None else unit_of(query) if query else NONE
    metrics = [parse_series_label(s) if isinstance(s, str) else dict(s) for s, _ in series]
    common, legends = common_labels(metrics)
    lines = [f"query: {query}"] if query else []
    if len(series) > 1 and common:
        lines.append(f"all series: {_labels_text(common)}")
    elif len(series) == 1 and metrics[0]:
        lines.append(f"series: {_labels_text(metrics[0])}")
    if total is not None and total > len(series):
        lines.append(f"showing the top {len(series)} of {total} series (by last value)")
    if note:
        lines.append(note)
    panel = Panel(
        unit, [(legend, points) for legend, (_, points) in zip(legends, series, strict=True)]
    )
    return render(
        title,
        [panel],
        start,
        end,
        caption=lines,
        width=width,
        height=height,
        markers=[marker] if marker else (),
    )


def render(
    title: str,
    panels: Sequence[Panel],
    start: datetime,
    end: datetime,
    *,
    caption: Sequence[str] = (),
    width: float = 9,
    height: float = 4,
    markers: Sequence[Marker] = (),
) -> bytes:
    """Panels stacked over one shared time axis, a title, and caption lines below (each
    wrapped, none cut). Legend entries are the series' labels as given; ``markers`` are
    drawn across every panel, labelled on the top one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(width, height * (1 + 0.55 * (len(panels) - 1))),
        dpi=100,
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    try:
        column = [row[0] for row in axes]
        for ax, panel in zip(column, panels, strict=True):
            _plot(ax, panel)
        _time_axis(column[-1], start, end)
        _mark(column, markers, start, end)
        fig.suptitle(shorten(title, 110), fontsize=10)
        text = "\n".join(
            textwrap.fill(line, CAPTION_WIDTH, subsequent_indent="  ", break_on_hyphens=False)
            for line in caption
        )
        if text:
            column[-1].annotate(
                text,
                xy=(0, 0),
                xycoords="axes fraction",
                xytext=(0, -38),
                textcoords="offset points",
                va="top",
                ha="left",
                fontsize=7.5,
                family="monospace",
                color="#333333",
            )
        return _png(fig)
    finally:
        plt.close(fig)


def _plot(ax: Axes, panel: Panel) -> None:
    from matplotlib import dates as mdates

    for label, points in panel.series:
        xs = mdates.date2num([datetime.fromtimestamp(t, UTC) for t, _ in points])
        ax.plot(
            xs,
            [v for _, v in points],
            label=shorten(str(label), LEGEND_WIDTH) or None,
            linewidth=1.4,
            marker="o" if len(points) < 20 else None,
            markersize=3,
        )
    if not any(points for _, points in panel.series):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="#777777")
    if panel.unit.from_zero:  # a rate, ratio, duration or size: a dip is not drawn as a cliff
        ax.update_datalim([(ax.get_xlim()[0], 0.0)])
        ax.autoscale_view(scalex=False)
        if ax.dataLim.y0 >= 0:
            ax.set_ylim(bottom=0.0)
    ax.set_ylabel(panel.unit.axis_label, fontsize=9)
    ax.yaxis.set_major_formatter(_formatter(panel.unit))
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    if any(label for label, _ in panel.series):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _mark(
    column: Sequence[Axes], markers: Sequence[Marker], start: datetime, end: datetime
) -> None:
    """Each marker as a dashed line across the panels; its label at the top of the first,
    left of the line in the chart's right part, one below the other when there are several."""
    from matplotlib import dates as mdates

    labelled = 0
    for marker in sorted(markers, key=lambda m: m.at):
        if not start <= marker.at <= end:
            continue
        x = float(mdates.date2num(marker.at))
        for ax in column:
            ax.axvline(x, color=marker.color, linestyle="--", linewidth=1.2, alpha=0.9)
        if marker.label:
            right = (marker.at - start) / (end - start) > 0.6 if end > start else True
            column[0].annotate(
                shorten(marker.label, LEGEND_WIDTH),
                xy=(x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3 if right else 3, -3 - 11 * labelled),
                textcoords="offset points",
                va="top",
                ha="right" if right else "left",
                fontsize=7.5,
                color=marker.color,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
            labelled += 1


def _formatter(unit: Unit) -> Any:
    from matplotlib import ticker

    if unit.kind == "ratio":
        return ticker.PercentFormatter(xmax=1.0, decimals=None)
    if unit.kind == "seconds":
        return ticker.EngFormatter(unit="s", sep=" ")
    if unit.kind == "bytes":
        return ticker.EngFormatter(unit="B", sep=" ")
    return ticker.FuncFormatter(lambda value, _: f"{value:.4g}")


def _time_axis(ax: Axes, start: datetime, end: datetime) -> None:
    """``HH:MM`` ticks (``HH:MM:SS`` under a few minutes), the day where it changes
    (``Nov 24``), the date once at the end; in UTC."""
    from matplotlib import dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8, tz=UTC)
    formatter = mdates.ConciseDateFormatter(
        locator,
        tz=UTC,
        formats=["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%H:%M:%S"],
        zero_formats=["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M:%S"],
        offset_formats=["", "%Y", "%Y %b", "%Y %b %d", "%Y %b %d", "%Y %b %d"],
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    ax.xaxis.get_offset_text().set_fontsize(8)
    ax.set_xlim(float(mdates.date2num(start)), float(mdates.date2num(end)))
    ax.set_xlabel("time (UTC)", fontsize=8)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
