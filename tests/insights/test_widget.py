"""``AttributionVisualizer.render()``: the page inline in a notebook, as an
iframe of a server on 127.0.0.1 that a notebook may frame."""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.request

import pytest

from captum_vit.insights import InlinePage

from .conftest import make_visualizer


def test_render_returns_a_displayable_page_whose_server_answers_and_stops():
    vis = make_visualizer()
    page = vis.render(height=640)
    try:
        assert isinstance(page, InlinePage)
        assert page.url == vis.url and page.url.startswith("http://127.0.0.1:")
        # what Jupyter shows: the HTML of an iframe of the page
        from IPython.core.formatters import DisplayFormatter

        data, _ = DisplayFormatter().format(page)
        frame = data["text/html"]
        src = re.search(r'<iframe src="([^"]+)"', frame).group(1)
        assert html.unescape(src) == page.url and 'height="640"' in frame
        # the server answers, and lets a notebook on this machine frame it
        with urllib.request.urlopen(page.url, timeout=10) as resp:
            assert resp.status == 200 and b"captum_vit" in resp.read()
            csp = resp.headers["Content-Security-Policy"]
            assert "frame-ancestors 'self' http://localhost:*" in csp
            assert resp.headers.get("X-Frame-Options") is None
        with urllib.request.urlopen(page.url + "api/config", timeout=10) as resp:
            assert resp.status == 200
        assert vis.render().url == page.url  # the same server, not a second one
    finally:
        vis.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(page.url, timeout=5)
    assert vis.url is None


def test_render_refuses_a_server_that_forbids_frames():
    vis = make_visualizer()
    vis.serve(port=0, blocking=False, quiet=True)
    try:
        with urllib.request.urlopen(vis.url, timeout=10) as resp:
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Frame-Options"] == "DENY"
        with pytest.raises(RuntimeError, match="stop"):
            vis.render()
    finally:
        vis.stop()
