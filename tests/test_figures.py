"""Every figure is a small HTML page (the figure as JSON, a PNG fallback, a loader for one shared
plotly.js) and a PNG drawn from the same plotly traces."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from ee_search.figures import PLOTLY_JS, figure_files, plotly_cdn_url, plotly_js, png_bytes


def _figure() -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0.2, 0.5, 1.0], y=[0.6, 0.8, 0.9], mode="lines+markers", name="front",
                             line={"color": "crimson"}))
    fig.add_trace(go.Scatter(x=[0.3], y=[0.7], mode="markers", name="chosen", marker={"symbol": "star", "size": 14,
                                                                                       "color": "gold"}))
    fig.add_trace(go.Scatter(x=[0.1, 0.9], y=[0.1, 0.2], mode="lines", name="hidden", visible="legendonly"))
    fig.update_layout(title="demo </script> title", xaxis_title="relative FLOPs", yaxis_title="accuracy")
    return fig


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_html_is_small_carries_the_figure_and_loads_plotly_from_beside_it_or_online():
    fig = _figure()
    files = figure_files(fig, "demo")
    page = files["demo.html"]
    assert len(page) < 200_000 < len(plotly_js())  # not a copy of plotly.js (4.6 MB)
    assert plotly_js()[:2000] not in page
    spec = json.loads(re.search(r'<script type="application/json" id="figure-json">(.*?)</script>', page,
                                re.S).group(1))
    assert [t["name"] for t in spec["data"]] == ["front", "chosen", "hidden"]
    assert spec["data"][0]["y"] == [0.6, 0.8, 0.9] and spec["layout"]["title"]["text"] == "demo </script> title"
    sources = json.loads(re.search(r"var sources = (\[.*?\]);", page).group(1))
    assert sources[0] == PLOTLY_JS and sources[-1] == plotly_cdn_url() and sources[-1].startswith("https://cdn.plot.ly/")
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == files["demo.png"]  # the fallback is the PNG beside it


def test_png_draws_the_visible_traces_in_their_colours():
    png = png_bytes(_figure(), size=(6, 4), dpi=100)
    pixels = _image(png)
    assert pixels.shape == (400, 600, 3)
    crimson = np.all(np.abs(pixels.astype(int) - (220, 20, 60)) < 30, axis=-1)
    gold = np.all(np.abs(pixels.astype(int) - (255, 215, 0)) < 30, axis=-1)
    assert crimson.sum() > 100 and gold.sum() > 20
    without_front = _figure()
    without_front.data[0].visible = "legendonly"
    assert np.all(np.abs(_image(png_bytes(without_front, size=(6, 4), dpi=100)).astype(int)
                         - (220, 20, 60)) < 30, axis=-1).sum() < crimson.sum() / 10
