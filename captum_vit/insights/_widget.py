"""The visualiser inline in a Jupyter notebook: an ``<iframe>`` of the page,
served from a background thread on 127.0.0.1 (Captum Insights' ``render()``)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ._visualizer import AttributionVisualizer

#: Origins that may frame the page: notebook front-ends on this machine
#: (Jupyter, JupyterLab, VS Code's notebook web views).
NOTEBOOK_ORIGINS = (
    "'self'",
    "http://localhost:*",
    "http://127.0.0.1:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "vscode-webview:",
)


class InlinePage:
    """What :meth:`AttributionVisualizer.render` returns: Jupyter displays it
    as an ``<iframe>`` of the page at ``url``.

    Args:
        url (str): the page's address.
        height (int, optional): frame height in pixels. Default: 900
    """

    def __init__(self, url: str, height: int = 900) -> None:
        self.url = url
        self.height = int(height)

    def _repr_html_(self) -> str:
        return (
            f'<iframe src="{html.escape(self.url, quote=True)}" width="100%" '
            f'height="{self.height}" style="border: 1px solid #ccc" '
            'title="captum_vit insights"></iframe>'
        )

    def __repr__(self) -> str:
        return f"InlinePage({self.url!r})"


def render(
    vis: AttributionVisualizer, height: int = 900, port: Optional[int] = None
) -> InlinePage:
    """Serve ``vis`` on 127.0.0.1 from a thread (if it is not serving yet) and
    return the displayable page (see :meth:`AttributionVisualizer.render`)."""
    server = vis._server
    if server is None:
        vis.serve(
            host="127.0.0.1",
            port=port,
            blocking=False,
            quiet=True,
            frame_ancestors=NOTEBOOK_ORIGINS,
        )
    elif not server.frame_ancestors:
        raise RuntimeError(
            "the visualiser is already serving a page that refuses frames; call "
            "stop() first, then render()"
        )
    url = vis.url
    assert url is not None
    return InlinePage(url, height)
