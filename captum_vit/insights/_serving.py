"""The visualiser's web server as its users drive it: ``serve``, ``stop``,
``url``, ``render`` (a mixin of :class:`~captum_vit.insights.AttributionVisualizer`;
the server itself lives in :mod:`._server`, the Flask app in :mod:`._http`, both
imported only when a server starts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, cast

if TYPE_CHECKING:  # pragma: no cover
    from ._visualizer import AttributionVisualizer


class Serving:
    """Start, stop and show the page of a visualiser (see :meth:`serve`)."""

    _server: Any = None
    _app: Any = None

    def _stop_jobs(self) -> None:
        """Cancel the running jobs (the visualiser's own)."""
        raise NotImplementedError

    def _vis(self) -> AttributionVisualizer:
        return cast("AttributionVisualizer", self)

    @property
    def app(self) -> Any:
        """The Flask application (created on first use; loopback host names
        only: see :meth:`serve` for other hosts)."""
        if self._app is None:
            from ._http import create_app

            self._app = create_app(self._vis())
        return self._app

    def serve(
        self,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        blocking: bool = True,
        debug: bool = False,
        bind_all: bool = False,
        quiet: bool = False,
        allowed_hosts: Optional[Sequence[str]] = None,
        frame_ancestors: Optional[Sequence[str]] = None,
    ) -> int:
        r"""Start the web server (threaded: requests are served concurrently).

        Binding anything but a loopback address prints a warning: anyone who
        can reach the address can run the models. Requests must name one of
        ``allowed_hosts`` in their ``Host`` header (DNS rebinding defence).

        Args:
            host (str, optional): the address to bind. Keep the loopback
                default unless the machine's network is trusted: the page
                runs models on request. Default: ``"127.0.0.1"``
            port (int, optional): the port; None or 0 picks a free one.
                Default: None
            blocking (bool, optional): serve until interrupted (Ctrl-C);
                False serves from a background thread and returns at once
                (stop it with :meth:`stop`). Default: True
            debug (bool, optional): log the traceback of unexpected errors to
                the server's log (the client never receives one).
                Default: False
            bind_all (bool, optional): bind every interface (``0.0.0.0``), as
                Captum Insights' option. Default: False
            quiet (bool, optional): do not log each request. Default: False
            allowed_hosts (sequence of str, optional): host names (or
                addresses) accepted in the ``Host`` header, besides the
                loopback names; ``"*"`` accepts any. Default: None (the
                loopback names, and for a non-loopback ``host`` that address;
                for ``0.0.0.0`` this machine's name and addresses)
            frame_ancestors (sequence of str, optional): origins allowed to
                show the page in a frame (CSP ``frame-ancestors``).
                Default: None (none: the page refuses to be framed)

        Returns:
            int: the port the server listens on.

        Examples::

            >>> port = vis.serve(blocking=False, quiet=True)
            >>> import urllib.request
            >>> urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config").status
            200
            >>> vis.stop()
        """
        from ._server import Server

        if self._server is not None:
            raise RuntimeError("the visualiser is already serving; call stop()")
        server = Server(
            self._vis(),
            host="0.0.0.0" if bind_all else host,
            port=port,
            debug=debug,
            quiet=quiet,
            allowed_hosts=allowed_hosts,
            frame_ancestors=frame_ancestors,
        )
        self._server = server
        if not blocking:
            server.start()
            return server.port
        try:
            server.run_forever()
        finally:
            self._server = None
            self._stop_jobs()
        return server.port

    def stop(self) -> None:
        """Stop a server started with ``serve(blocking=False)``; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        self._stop_jobs()

    @property
    def url(self) -> Optional[str]:
        """``http://host:port/`` to open the running server from this
        machine, or None."""
        return None if self._server is None else self._server.local_url

    @property
    def port(self) -> Optional[int]:
        """The port of the running server, or None."""
        return None if self._server is None else self._server.port

    def render(self, height: int = 900, port: Optional[int] = None) -> Any:
        r"""Show the visualiser inline in a Jupyter notebook.

        Starts the server in a background thread on ``127.0.0.1`` (if it is
        not running yet) and returns an object that Jupyter displays as an
        ``<iframe>`` of the page; the page lets notebook front-ends on this
        machine frame it. Stop the server with :meth:`stop`. The browser must
        run on the machine of the kernel (a remote kernel's loopback is not
        the browser's): elsewhere, forward the port or use :meth:`serve`.

        Args:
            height (int, optional): height of the frame in pixels.
                Default: 900
            port (int, optional): the port. Default: None (a free one)

        Returns:
            InlinePage: displayed by Jupyter (``_repr_html_``); its ``url``
            is the page's address.

        Examples::

            >>> vis.render()  # the last line of a cell shows the page
            >>> vis.stop()
        """
        from ._widget import render

        return render(self._vis(), height=height, port=port)
