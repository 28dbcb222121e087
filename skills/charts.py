"""PNG line charts of Prometheus range results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

Series = tuple[str, list[tuple[float, float]]]  # (label, [(unix seconds, value)])


def line_chart(
    title: str,
    series: list[Series],
    start: datetime,
    end: datetime,
    *,
    width: float = 9,
    height: float = 4,
) -> bytes:
    """Render ``series`` as one line each over ``start``..``end`` (UTC); returns PNG bytes
    (about 30-80 KB). Series with few points get markers so they stay visible."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    try:
        for label, points in series:
            xs = mdates.date2num([datetime.fromtimestamp(t, UTC) for t, _ in points])
            ys = [v for _, v in points]
            ax.plot(
                xs,
                ys,
                label=label[:60],
                linewidth=1.4,
                marker="o" if len(points) < 20 else None,
                markersize=3,
            )
        ax.set_xlim(float(mdates.date2num(start)), float(mdates.date2num(end)))
        ax.set_title(title[:100], fontsize=10)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
        ax.set_xlabel("time (UTC)")
        ax.grid(True, alpha=0.3)
        if series and len(series) <= 10:
            ax.legend(fontsize=7, loc="upper left")
        fig.autofmt_xdate()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)
