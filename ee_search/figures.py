"""Figures as files: a small interactive HTML and a static PNG for every plotly figure.

Why not plotly's own `to_html`: with plotly.js inlined, every file is 4.6 MB (a 50-trial study carried
~240 MB of copies of one library); with `include_plotlyjs="cdn"` (what MLflow's `log_figure` writes)
nothing renders offline. And inside the MLflow UI an HTML artifact is shown in a sandboxed iframe
(opaque origin) made from a blob: URL, where no relative path resolves and the tracking server's
artifact endpoint answers `text/plain` + `nosniff` without CORS: no shared copy of plotly.js can be
loaded there. So each HTML file holds the figure as JSON and the static image, and a few lines of
script that load plotly.js from, in order:

1. `plotly.min.js` beside the file (or one folder up): `ee-search pareto --out` writes one copy, the
   study's parent run holds one under `figures/`, so a downloaded folder is interactive offline;
2. plotly's CDN, at the version of the installed plotly package, when the browser is online (this is
   what makes the figure interactive inside the MLflow UI);
3. otherwise the HTML shows its embedded PNG: never a blank page, offline included.

The PNG is drawn by matplotlib from the plotly figure's own traces (scatter lines and markers, which
is all our figures use), so one figure definition serves both; kaleido, plotly's exporter, needs a
Chrome install, which a fresh machine does not have.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go

PLOTLY_JS = "plotly.min.js"
_SIBLINGS = (PLOTLY_JS, f"../{PLOTLY_JS}", f"../figures/{PLOTLY_JS}")


def plotly_js() -> str:
    """The plotly.js the installed plotly package ships (the one file that figures load)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_cdn_url() -> str:
    from plotly.offline import get_plotlyjs_version

    return f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"


# ------------------------------------------------------------------------------------------- PNG
_SYMBOLS = {"star": "*", "diamond": "D", "x": "x", "circle": "o", "square": "s", "cross": "P"}


def _text(value) -> str:
    """A plotly title/label without its HTML tags (matplotlib draws plain text)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else (getattr(value, "text", None) or "")
    for tag in ("<b>", "</b>", "<i>", "</i>"):
        text = text.replace(tag, "")
    return text.replace("<br>", "\n")


def png_bytes(fig: go.Figure, size: tuple[float, float] | None = None, dpi: int = 110) -> bytes:
    """The figure's scatter traces drawn by matplotlib (Agg, no display): lines, markers, colours,
    symbols, legend names, title and axis titles; a figure of subplots stacked in rows (make_subplots
    with one column) gets one panel per row. Traces hidden behind the legend stay hidden."""
    import matplotlib.style

    panels = _panels(fig)
    size = size or ((9.0, 5.6) if len(panels) == 1 else (9.0, 3.4 * len(panels) + 0.6))
    # Optuna's matplotlib plots switch pyplot's global style to ggplot; ours keep matplotlib's default.
    with matplotlib.style.context("default"):
        return _draw(fig, panels, size, dpi)


def _panels(fig: go.Figure) -> list[str]:
    """The x axes that traces are drawn on ("x", "x2", ...), in order: one panel each."""
    names = {trace.xaxis or "x" for trace in fig.data} or {"x"}
    return sorted(names, key=lambda name: int(name[1:] or 1))


def _draw(fig: go.Figure, panels: list[str], size: tuple[float, float], dpi: int) -> bytes:
    from matplotlib.figure import Figure

    canvas = Figure(figsize=size, dpi=dpi, layout="constrained")
    axes = canvas.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        _draw_panel(canvas, ax, [t for t in fig.data if (t.xaxis or "x") == panel])
        layout_axis = fig.layout["xaxis" + panel[1:]]
        ax.set_xlabel(_text(layout_axis.title.text if layout_axis.title else None))
        y_axis = fig.layout["yaxis" + panel[1:]]
        ax.set_ylabel(_text(y_axis.title.text if y_axis.title else None))
        ax.grid(True, alpha=0.3)
        if any(artist.get_label() and not artist.get_label().startswith("_") for artist in ax.get_children()):
            ax.legend(fontsize=8, loc="best")
    title = _text(fig.layout.title.text if fig.layout.title else None)
    if len(panels) == 1:
        axes[0].set_title(title, fontsize=10, wrap=True)
    else:
        canvas.suptitle(title, fontsize=10, wrap=True)
    out = io.BytesIO()
    canvas.savefig(out, format="png")
    return out.getvalue()


def _draw_panel(canvas, ax, traces) -> None:
    for trace in traces:
        if trace.type != "scatter" or trace.visible in (False, "legendonly") or trace.x is None:
            continue
        x, y = list(trace.x), list(trace.y)
        mode = trace.mode or "lines+markers"
        line_color = trace.line.color if trace.line else None
        marker = trace.marker
        colors = marker.color if marker is not None else None
        step = "post" if trace.line is not None and trace.line.shape == "hv" else None
        label = trace.name or None
        if "lines" in mode:
            style = {"color": line_color or (colors if isinstance(colors, str) else None),
                     "linestyle": ":" if trace.line is not None and trace.line.dash == "dot" else "-",
                     "linewidth": (trace.line.width or 1.5) if trace.line else 1.5, "alpha": trace.opacity or 1.0}
            if step:
                ax.step(x, y, where=step, label=label, **style)
            else:
                ax.plot(x, y, label=label, **style)
            label = None if "markers" in mode else label  # one legend entry per trace
        if "markers" in mode:
            size_ = (marker.size if marker is not None and isinstance(marker.size, (int, float)) else 6) ** 2 * 0.8
            symbol = _SYMBOLS.get(marker.symbol if marker is not None and isinstance(marker.symbol, str) else "", "o")
            if isinstance(colors, (list, tuple)) and colors and not isinstance(colors[0], str):
                points = ax.scatter(x, y, c=colors, s=size_, marker=symbol, cmap="viridis", label=label, zorder=3)
                bar_title = marker.colorbar.title.text if marker.colorbar and marker.colorbar.title else ""
                canvas.colorbar(points, ax=ax, label=bar_title or None)
            else:
                edge = marker.line.color if marker is not None and marker.line and marker.line.color else None
                ax.scatter(x, y, color=colors if isinstance(colors, str) else line_color, s=size_, marker=symbol,
                           label=label, zorder=3, edgecolors=edge, alpha=(marker.opacity if marker is not None
                                                                          and marker.opacity else 1.0))


# ------------------------------------------------------------------------------------------ HTML
_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{margin:0;font-family:sans-serif}} #static img{{max-width:100%;height:auto}}
#note{{color:#666;font-size:12px;margin:4px 8px}}</style></head>
<body>
<div id="figure" style="width:100%;height:{height}px;display:none"></div>
<div id="static">{image}<div id="note">Static view: the interactive figure needs plotly.js, found
neither beside this file ({siblings}) nor online.</div></div>
<script type="application/json" id="figure-json">{figure_json}</script>
<script>
// Try plotly.js beside the file, then plotly's CDN; keep the static image if none loads.
(function () {{
  var sources = {sources};
  function draw() {{
    var spec = JSON.parse(document.getElementById("figure-json").textContent);
    document.getElementById("figure").style.display = "block";
    window.Plotly.newPlot("figure", spec.data, spec.layout, {{responsive: true}}).then(function () {{
      document.getElementById("static").style.display = "none";
    }});
  }}
  function load(i) {{
    if (window.Plotly) {{ return draw(); }}
    if (i >= sources.length) {{ return; }}
    var script = document.createElement("script");
    script.src = sources[i];
    script.onload = function () {{ window.Plotly ? draw() : load(i + 1); }};
    script.onerror = function () {{ load(i + 1); }};
    document.head.appendChild(script);
  }}
  load(0);
}})();
</script>
</body></html>
"""


def html_text(fig: go.Figure, png: bytes | None = None, height: int | None = None) -> str:
    """A small HTML page for `fig` (tens of kB, not MBs): the figure as JSON, its PNG inline as the
    fallback, and the loader described in this module's docstring. Its height: `height`, else the
    figure's own, else 620 px."""
    png = png if png is not None else png_bytes(fig)
    height = height or fig.layout.height or 620
    image = f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    # "</" inside the JSON would end the <script> element early: escape it the way JSON allows.
    figure_json = fig.to_json().replace("</", "<\\/")
    title = html.escape(_text(fig.layout.title.text if fig.layout.title else "figure"))
    return _PAGE.format(title=title, height=height, image=image, siblings=", ".join(_SIBLINGS[:1]),
                        figure_json=figure_json, sources=json.dumps([*_SIBLINGS, plotly_cdn_url()]))


def figure_files(fig: go.Figure, stem: str) -> dict[str, str | bytes]:
    """`{stem}.html` and `{stem}.png` for one figure, rendered once."""
    png = png_bytes(fig)
    return {f"{stem}.html": html_text(fig, png), f"{stem}.png": png}


def write_files(files: Mapping[str, str | bytes], directory: Path) -> dict[str, Path]:
    """Figure files (texts or bytes, by file name) into `directory`; returns their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in files.items():
        paths[name] = directory / name
        if isinstance(content, bytes):
            paths[name].write_bytes(content)
        else:
            paths[name].write_text(content, encoding="utf-8", newline="")
    return paths
