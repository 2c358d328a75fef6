"""Findings as one self-contained HTML file: summary, table and charts, fetched from nowhere.

Takes the plain document a replay builds (``summary``, ``findings``,
``charts``). The table is written into the page; the charts (connections per
destination class over time for each listed source, and the patterns raised
over time) are drawn as inline SVG by a short script from the data embedded
in the page, so the file opens offline and needs nothing but a browser.
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Mapping
from typing import Any

from .text import evidence_text, moment

__all__ = ["render_html"]

_PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>connguard replay: $title</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.evidence { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; }
dl.summary dt { font-weight: 600; }
.chart { margin: .5em 0 1.5em; }
.chart svg { max-width: 100%; height: auto; background: #fcfcfc; border: 1px solid #eee; }
.legend span { display: inline-block; margin-right: 1em; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: .3em; }
</style>
</head>
<body>
<h1>connguard replay</h1>
<dl class="summary">
$summary
</dl>
<h2>Findings over time</h2>
<div class="chart" id="overview"></div>
<h2>Findings ($shown of $flagged flagged sources)</h2>
$table
<h2>Connections per destination class, per flagged source</h2>
$sources
<script type="application/json" id="report-data">$data</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                 "#b07aa1", "#9c755f"];
  var NS = "http://www.w3.org/2000/svg";
  function make(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function when(t) {
    if (Math.abs(t) < 1e9) { return t.toFixed(0) + " s"; }
    return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + "Z";
  }
  function chart(box, counts, names, start, bucket) {
    var width = 720, height = 200, left = 44, bottom = 22, top = 8;
    var most = 1, drawn = 0;
    counts.forEach(function (bar) {
      most = Math.max(most, bar.reduce(function (a, b) { return a + b; }, 0));
    });
    var svg = make("svg", {viewBox: "0 0 " + width + " " + height, width: width,
                           height: height, role: "img"}, box);
    var step = Math.min((width - left - 8) / Math.max(counts.length, 1), 48);
    var scale = (height - top - bottom) / most;
    var used = {};
    counts.forEach(function (bar, i) {
      var y = height - bottom;
      bar.forEach(function (n, c) {
        if (!n) { return; }
        var h = Math.max(n * scale, 1);
        y -= h;
        var rect = make("rect", {x: left + i * step + 1, y: y, width: Math.max(step - 2, 1),
                                 height: h, fill: palette[c % palette.length]}, svg);
        make("title", {}, rect).textContent = names[c] + ": " + n + " at " +
          when(start + i * bucket);
        used[c] = true;
        drawn += 1;
      });
    });
    make("line", {x1: left, y1: height - bottom, x2: width - 8, y2: height - bottom,
                  stroke: "#888"}, svg);
    make("text", {x: left - 4, y: top + 10, "text-anchor": "end", "font-size": 11},
         svg).textContent = String(most);
    make("text", {x: left - 4, y: height - bottom, "text-anchor": "end", "font-size": 11},
         svg).textContent = "0";
    make("text", {x: left, y: height - 6, "font-size": 11}, svg).textContent = when(start);
    make("text", {x: width - 8, y: height - 6, "text-anchor": "end", "font-size": 11},
         svg).textContent = when(start + counts.length * bucket) + " (" +
         Math.round(bucket / 60) + " min per bar)";
    var legend = document.createElement("div");
    legend.className = "legend";
    names.forEach(function (name, c) {
      if (!used[c]) { return; }
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = palette[c % palette.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    });
    box.appendChild(legend);
    box.setAttribute("data-drawn", String(drawn));
  }
  var overview = data.charts.overview;
  chart(document.getElementById("overview"), overview.counts, overview.patterns,
        overview.start, overview.bucket);
  data.charts.sources.forEach(function (source, i) {
    chart(document.getElementById("chart-" + i), source.counts, data.charts.classes,
          source.start, source.bucket);
  });
  document.body.setAttribute("data-charts", "drawn");
})();
</script>
</body>
</html>
""")


def _summary(summary: Mapping[str, Any]) -> str:
    found = ", ".join(f"{p}: {n:,}" for p, n in summary["findings"].items()) or "none"
    skipped = summary["skipped"]
    rows = [
        ("Files", "; ".join(f"{f['path']} ({f['format']}, {f['flows']:,} flows)"
                            for f in summary["files"])),
        ("Flows", f"{summary['flows']:,} from {summary['sources']:,} sources"),
        ("Time", f"{moment(summary['first_flow'])} to {moment(summary['last_flow'])}"),
        ("Flagged sources", f"{summary['flagged_sources']:,} ({found})"),
        ("Late flows", f"{summary['late']:,}"),
        ("Rows skipped", f"{skipped['rows']:,}" + "".join(
            f"; {reason}: {n:,}" for reason, n in skipped["reasons"].items())),
        ("Replayed in", f"{summary['seconds']:.2f} s"),
    ]
    return "\n".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)


def _table(findings: list[Mapping[str, Any]]) -> str:
    if not findings:
        return "<p>No findings.</p>"
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td class=\"evidence\">{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(f["source"]), html.escape(", ".join(f["patterns"])),
            html.escape(evidence_text(f["evidence"])), html.escape(moment(f["first_seen"])),
            html.escape(moment(f["last_seen"])))
        for f in findings)
    return ("<table id=\"findings\"><thead><tr><th>Source</th><th>Patterns</th>"
            "<th>Evidence</th><th>First seen</th><th>Last seen</th></tr></thead>\n"
            f"<tbody>\n{rows}\n</tbody></table>")


def render_html(document: Mapping[str, Any]) -> str:
    """The report page for a replay document (summary, findings, charts)."""
    summary = document["summary"]
    sources = "\n".join(
        f"<h3>{html.escape(s['source'])}</h3>\n<div class=\"chart\" id=\"chart-{i}\"></div>"
        for i, s in enumerate(document["charts"]["sources"]))
    # "<" escaped: the data can never close its script element.
    data = json.dumps({"charts": document["charts"]}).replace("<", "\\u003c")
    title = ", ".join(f["path"] for f in summary["files"])
    return _PAGE.substitute(
        title=html.escape(title), summary=_summary(summary), table=_table(document["findings"]),
        shown=f"{summary['shown']:,}", flagged=f"{summary['flagged_sources']:,}",
        sources=sources, data=data)
