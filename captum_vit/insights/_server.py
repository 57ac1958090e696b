"""The life of the visualiser's web server: bind, announce, serve, stop.

werkzeug's threaded server runs the Flask app of :mod:`._http`. The server
prints the address it really listens on (``0.0.0.0`` is every interface, not
127.0.0.1), warns when that is not a loopback address (the page runs models
for whoever reaches it; there is no authentication), and derives the host
names the app accepts in the ``Host`` header.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Set, TextIO

from ._http import LOOPBACK_HOSTS, create_app

if TYPE_CHECKING:  # pragma: no cover
    from ._visualizer import AttributionVisualizer

_WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _this_machine() -> Set[str]:
    """Names and addresses under which other machines may reach this one."""
    names: Set[str] = set()
    try:
        hostname = socket.gethostname()
        names.add(hostname.lower())
        names.update(socket.gethostbyname_ex(hostname)[2])
    except OSError:
        pass
    try:  # the address of the default route (no packet is sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            names.add(s.getsockname()[0])
    except OSError:
        pass
    return names


def allowed_host_names(host: str, extra: Optional[Iterable[str]] = None) -> Set[str]:
    """The ``Host`` names a server bound to ``host`` answers: the loopback
    names, ``host`` itself, for a wildcard address this machine's names and
    addresses, and ``extra`` (``"*"``: any)."""
    names = set(LOOPBACK_HOSTS)
    if host in _WILDCARDS:
        names |= _this_machine()
    else:
        names.add(host.lower().strip("[]"))
    names |= {h.lower().strip("[]") for h in (extra or ())}
    return names


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class Server:
    """werkzeug's threaded server around the app of one visualiser.

    Args:
        vis (AttributionVisualizer): what to serve.
        host (str): the address to bind.
        port (int, optional): the port; None or 0 picks a free one.
        debug (bool): log tracebacks of unexpected errors.
        quiet (bool): do not log each request.
        allowed_hosts (sequence of str, optional): extra ``Host`` names.
        frame_ancestors (sequence of str, optional): origins that may frame
            the page.
        stream (file, optional): where the address and warnings are printed.
            Default: ``sys.stderr`` for warnings, ``sys.stdout`` otherwise
    """

    def __init__(
        self,
        vis: AttributionVisualizer,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        debug: bool = False,
        quiet: bool = False,
        allowed_hosts: Optional[Sequence[str]] = None,
        frame_ancestors: Optional[Sequence[str]] = None,
        stream: Optional[TextIO] = None,
    ) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        self.host = host
        self.allowed_hosts = allowed_host_names(host, allowed_hosts)
        self.frame_ancestors = list(frame_ancestors or [])
        self.app = create_app(vis, self.allowed_hosts, self.frame_ancestors, debug)
        self._stream = stream

        class Handler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                if not quiet:
                    super().log_request(*args, **kwargs)

        self._httpd = make_server(
            host, int(port or 0), self.app, threaded=True, request_handler=Handler
        )
        self.port: int = self._httpd.socket.getsockname()[1]
        self._thread: Optional[threading.Thread] = None
        self.warn_if_exposed()

    @property
    def address(self) -> str:
        """The address bound, as printed (e.g. ``http://0.0.0.0:8050/``)."""
        return _url(self.host, self.port)

    @property
    def local_url(self) -> str:
        """The URL that reaches the server from this machine."""
        if self.host in _WILDCARDS:
            return _url("127.0.0.1", self.port)
        return _url(self.host, self.port)

    @property
    def exposed(self) -> bool:
        """Whether the server listens beyond the loopback interface."""
        return not is_loopback(self.host)

    def _print(self, text: str, error: bool = False) -> None:
        out = self._stream or (sys.stderr if error else sys.stdout)
        print(text, file=out, flush=True)

    def warn_if_exposed(self) -> None:
        if not self.exposed:
            return
        names = ", ".join(sorted(self.allowed_hosts))
        self._print(
            f"warning: captum_vit insights listens on {self.host} (port "
            f"{self.port}): anyone who can reach this address can run the models "
            "(there is no authentication). Bind 127.0.0.1 unless the network is "
            f"trusted. Accepted Host names: {names} (--allowed-host adds one).",
            error=True,
        )

    def announce(self) -> None:
        """Print where the server listens."""
        line = f"captum_vit insights: serving on {self.address}"
        if self.host in _WILDCARDS:
            line += f" (every interface; from this machine: {self.local_url})"
        self._print(line + " (Ctrl-C stops)")

    def run_forever(self) -> None:
        """Announce, serve until Ctrl-C, close."""
        self.announce()
        try:
            self._httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def start(self) -> None:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="captum-vit-insights", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def socket_name(self) -> List[Any]:
        """``getsockname()`` of the listening socket."""
        return list(self._httpd.socket.getsockname())
