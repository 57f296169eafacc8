#!/usr/bin/env python3
"""Draws dashboards/wsnorm.json as a person would see it, from the live Prometheus of run.sh.

Grafana is in no package registry here, so this evaluates every panel's queries over the run
(query_range for time series, an instant query for stat panels) and draws the panels on
Grafana's 24-column grid with matplotlib. It checks that every panel shows data and that the
1011 spike of the backend kill is visible, with the ok:/FAIL: lines run.sh counts.

Usage (run.sh with WSNORM_RENDER=1 does it): render.py PROM DASHBOARD OUT.png START END
Needs matplotlib: run.sh installs a pinned one in a venv under target/.
"""

import json
import math
import os
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helper import check, substitute, walk_panels  # noqa: E402

# Grafana's row height (30 px) and column width at a 1440 px wide screen, in inches at 100 dpi.
ROW_INCHES = 0.3
COLUMN_INCHES = 0.6


def query(prom, path, params):
    url = f"{prom}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=20) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def legend(fmt, labels):
    text = fmt or ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def evaluate(prom, panel, start, end):
    """[(legend, [(t, v)])] for a time series panel, [(legend, v)] for a stat or table."""
    range_s = f"{max(1, int(end - start))}s"
    out = []
    for target in panel.get("targets", []):
        expr = substitute(target["expr"].replace("$__range", range_s))
        if panel["type"] == "timeseries":
            step = max(1, int((end - start) / 300))
            series = query(prom, "query_range",
                           {"query": expr, "start": start, "end": end, "step": step})
            for s in series:
                points = [(float(t), float(v)) for t, v in s["values"]]
                out.append((legend(target.get("legendFormat"), s["metric"]), points))
        else:
            for s in query(prom, "query", {"query": expr, "time": end}):
                out.append((legend(target.get("legendFormat"), s["metric"]), float(s["value"][1])))
    return out


def finite(values):
    return [v for v in values if not math.isnan(v) and not math.isinf(v)]


def stat_text(value, panel):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    for mapping in defaults.get("mappings", []):
        hit = mapping.get("options", {}).get(f"{value:g}")
        if hit:
            return hit["text"], hit.get("color", "green")
    steps = defaults.get("thresholds", {}).get("steps", [])
    color = "green"
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            color = step["color"]
    unit = defaults.get("unit", "")
    decimals = defaults.get("decimals")
    if unit == "s":
        text = f"{value * 1e6:.0f} µs" if value < 1e-3 else f"{value * 1e3:.1f} ms"
    elif unit == "ops":
        text = f"{value:.2f}/s"
    elif decimals is not None:
        text = f"{value:.{decimals}f}"
    else:
        text = f"{value:g}"
    return text, color


def draw(prom, dash, out_path, start, end):
    panels = [p for p in walk_panels(dash["panels"])]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24 * COLUMN_INCHES, height * ROW_INCHES), dpi=100)
    fig.patch.set_facecolor("#111217")
    shown = {}
    for p in panels:
        g = p["gridPos"]
        box = [g["x"] / 24 + 0.004, 1 - (g["y"] + g["h"]) / height + 0.004,
               g["w"] / 24 - 0.008, g["h"] / height - 0.008]
        if p["type"] == "row":
            fig.text(box[0], box[1] + box[3] / 2, p["title"], color="white", fontsize=13,
                     weight="bold", va="center")
            continue
        ax = fig.add_axes(box)
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#ccccdc", labelsize=7)
        ax.set_title(p["title"], color="#ccccdc", fontsize=9, loc="left")
        data = evaluate(prom, p, start, end)
        shown[p["title"]] = data
        if p["type"] == "timeseries":
            for name, points in data[:12]:
                ax.plot([t - start for t, _ in points], [v for _, v in points], lw=1.2,
                        label=name[:40])
            if data:
                ax.legend(fontsize=6, loc="upper left", framealpha=0.3, labelcolor="#ccccdc",
                          facecolor="#181b1f", ncol=2)
            ax.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            lines = [stat_text(v, p) + (n,) for n, v in data[:6]]
            for i, (text, color, name) in enumerate(lines):
                y = 0.5 if len(lines) == 1 else 0.85 - i * 0.75 / len(lines)
                ax.text(0.5, y, text, color=color, fontsize=20 if len(lines) == 1 else 9,
                        ha="center", va="center", weight="bold", transform=ax.transAxes)
    fig.savefig(out_path, facecolor=fig.get_facecolor())
    return shown


def main(prom, dashboard, out_path, start, end):
    with open(dashboard) as f:
        dash = json.load(f)
    start, end = float(start), float(end)
    shown = draw(prom, dash, out_path, start, end)
    check(os.path.getsize(out_path) > 10_000, f"dashboard drawn to {out_path}")
    for title, data in shown.items():
        values = []
        for _, points in data:
            values += [v for _, v in points] if isinstance(points, list) else [points]
        check(bool(finite(values)), f"render: panel {title!r} shows data ({len(data)} series)")
    # The backend kill at the end of the run: 1011s towards the clients, visible as a spike.
    spike = [v for _, points in shown.get("1011 closes/s by initiator", []) for _, v in points]
    check(max(finite(spike), default=0) > 0,
          f"render: the 1011 spike is visible (peak {max(finite(spike), default=0):.3g}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
