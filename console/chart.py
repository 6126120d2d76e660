"""A unit's weekly figures as an SVG bar chart drawn on the server: no script, no chart library."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 260, 40, 40, 16
SERIES = (("received", "Nhận", "Received", "bar-received"), ("answered", "Đã trả lời", "Answered", "bar-answered"),
          ("answered_on_time", "Đúng hạn", "On time", "bar-on-time"))


def weekly_chart(rows: list[dict], t) -> Markup:
    peak = max([2, *(r[key] for r in rows for key, *_ in SERIES)])
    peak += peak % 2  # even, so the middle grid line is a whole number
    step = (WIDTH - LEFT - 10) / max(len(rows), 1)
    bar = step / (len(SERIES) + 1)
    plot = HEIGHT - BOTTOM - TOP
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title">',
             f'<title id="chart-title">{escape(t("Phản ánh theo tuần", "Reports per week"))}</title>']
    for fraction in (0, 0.5, 1):
        y = TOP + plot * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{int(peak * fraction)}</text>')
    for i, row in enumerate(rows):
        x0 = LEFT + i * step + bar / 2
        for j, (key, vi, en, css) in enumerate(SERIES):
            height = plot * row[key] / peak
            label = f'{escape(t(vi, en))} {row["week"]:%d/%m}: {row[key]}'
            parts.append(f'<rect class="{css}" x="{x0 + j * bar:.1f}" y="{TOP + plot - height:.1f}" '
                         f'width="{bar:.1f}" height="{height:.1f}"><title>{label}</title></rect>')
        if i % max(1, len(rows) // 8) == 0:
            parts.append(f'<text class="axis" x="{x0 + bar * 1.5:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                         f'text-anchor="middle">{row["week"]:%d/%m}</text>')
    for j, (_, vi, en, css) in enumerate(SERIES):
        x = LEFT + j * 140
        parts.append(f'<rect class="{css}" x="{x}" y="{HEIGHT - 14}" width="12" height="12"/>'
                     f'<text class="axis" x="{x + 16}" y="{HEIGHT - 4}">{escape(t(vi, en))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
