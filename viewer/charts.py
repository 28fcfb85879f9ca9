"""Line charts of training metrics as inline SVG, drawn on the server: the page needs no script and no
network, and an exported file stays one file."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 440, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 24, 30  # margins for the axis labels
MAIN_METRICS = ("reward_mean", "kl", "loss", "lr")  # drawn first, in this order; other numeric columns follow


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-2:
        return f"{value:.2e}"
    return f"{value:.3g}"


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """The columns worth a chart: numeric somewhere, not the step or a timing."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and not key.startswith("time_") and isinstance(value, (int, float)):
                seen.setdefault(key)
    return [m for m in MAIN_METRICS if m in seen] + [m for m in seen if m not in MAIN_METRICS]


def line_chart(rows: list[dict[str, Any]], metric: str) -> Markup:
    """One metric against the step; steps without the metric (e.g. held-out scores logged every N steps)
    are left out, not drawn as zero."""
    points = [
        (float(r["step"]), float(r[metric]))
        for r in rows
        if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]) and "step" in r
    ]
    title = escape(metric)
    if not points:
        return Markup(f'<p class="muted">{title}: no finite values</p>')
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    coords = [(LEFT + (x - x0) / (x1 - x0) * plot_w, TOP + (1 - (y - y0) / (y1 - y0)) * plot_h) for x, y in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in coords) if len(coords) <= 60 else ""
    bottom, right = TOP + plot_h, LEFT + plot_w
    return Markup(
        f'<svg class="chart" data-metric="{title}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{title} by step">'
        f'<text x="{LEFT}" y="15" class="chart-title">{title}</text>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" class="axis"/>'
        f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{_number(y1)}</text>'
        f'<text x="{LEFT - 4}" y="{bottom}" text-anchor="end">{_number(y0)}</text>'
        f'<text x="{LEFT}" y="{bottom + 16}">step {_number(x0)}</text>'
        f'<text x="{right}" y="{bottom + 16}" text-anchor="end">{_number(x1)}</text>'
        f'<polyline points="{path}" class="series"/>'
        f'<g class="dots">{dots}</g>'
        f'<text x="{right}" y="15" text-anchor="end">last {_number(ys[-1])}</text>'
        "</svg>"
    )
