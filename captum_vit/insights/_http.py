"""The Flask application of the visualiser: routes, host check, headers, errors.

Every error is answered as JSON ``{"error": code, "message": text}``, the code
drawn from :data:`ERROR_STATUS` (which fixes its HTTP status), whatever raised
it: the request parser, the visualiser, werkzeug, or an unexpected exception
(whose traceback goes to the server's log when ``debug`` is set, never to the
client). Static files are read once, at start, from a fixed list into memory:
no request names a path on the server's disk. Uploads are parsed in memory.
"""

from __future__ import annotations

import io
import logging
import select
import socket
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from flask import Flask, Request, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from . import _requests as R
from ._errors import InsightsError
from ._jobs import Budget
from ._methods import MethodCall

if TYPE_CHECKING:  # pragma: no cover
    from ._visualizer import AttributionVisualizer

#: Every error code the API answers with, and its HTTP status.
ERROR_STATUS: Dict[str, int] = {
    "bad_request": 400,  # a field or parameter the visualiser cannot use
    "bad_json": 400,  # the body is not JSON, or nested too deeply
    "bad_host": 400,  # the Host header is not an allowed name
    "not_found": 404,  # no such page, image or job
    "method_not_allowed": 405,
    "payload_too_large": 413,  # an upload or a JSON body over its limit
    "unsupported_media_type": 415,  # a body that is not JSON (or multipart)
    "method_failed": 422,  # an attribution method raised on this input
    "internal_error": 500,  # a bug: see the server's log
    "busy": 503,  # no model replica became free in time
    "cancelled": 503,  # the client went away, or cancelled the job
    "timeout": 504,  # the computation ran past its time budget
}

#: The page's files and their content types: the only files ever served.
STATIC_FILES: Dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

#: Host names a loopback server answers to.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: Largest JSON body of the API's POST requests.
MAX_JSON_BYTES = 256 * 1024

_log = logging.getLogger("captum_vit.insights")


class _InMemoryRequest(Request):
    """Multipart file parts stay in memory (bounded by the upload limit)."""

    def _get_file_stream(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO()


def _load_static() -> Dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    return {name: root.joinpath(name).read_bytes() for name in STATIC_FILES}


def error_response(code: str, message: str) -> Tuple[Response, int]:
    """``{"error": code, "message": message}`` with the code's status."""
    return jsonify({"error": code, "message": message}), ERROR_STATUS[code]


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _client_gone(environ: Dict[str, Any]) -> Optional[Callable[[], bool]]:
    """A test that the client of this request has closed its connection."""
    sock = environ.get("werkzeug.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone


def create_app(
    vis: AttributionVisualizer,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    frame_ancestors: Optional[Iterable[str]] = None,
    debug: bool = False,
) -> Flask:
    """The Flask app serving ``vis`` (see :meth:`AttributionVisualizer.serve`).

    Args:
        vis (AttributionVisualizer): what to serve.
        allowed_hosts (iterable of str, optional): host names accepted in the
            ``Host`` header; ``"*"`` accepts any. Default: the loopback names
        frame_ancestors (iterable of str, optional): origins that may frame
            the page. Default: None (none)
        debug (bool, optional): log tracebacks of unexpected errors.
            Default: False
    """
    app = Flask(__name__, static_folder=None)
    app.request_class = _InMemoryRequest
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = vis.max_upload_bytes + 64 * 1024
    app.config["MAX_FORM_MEMORY_SIZE"] = vis.max_upload_bytes + 64 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    hosts = {h.lower().strip("[]") for h in allowed_hosts}
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    static = _load_static()

    # ------------------------------------------------------------- hardening
    @app.before_request
    def check_host() -> Optional[ResponseReturnValue]:
        # DNS rebinding: a page elsewhere must not reach the server through a
        # name of its own that resolves to this address.
        if "*" not in hosts and host_name(request.host) not in hosts:
            return error_response(
                "bad_host",
                f"this server answers the host names {', '.join(sorted(hosts))} "
                "only (captum-vit insights --allowed-host NAME adds one)",
            )
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        if not frame_ancestors:
            resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; script-src 'self'; "
            f"style-src 'self'; object-src 'none'; frame-ancestors {ancestors}"
        )
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # ---------------------------------------------------------------- errors
    @app.errorhandler(InsightsError)
    def insights_error(e: InsightsError) -> ResponseReturnValue:
        return error_response(
            e.code if e.code in ERROR_STATUS else "bad_request", e.message
        )

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        code = e.code or 400
        if code == 413:
            if request.path == "/api/upload":
                message = (
                    f"the upload is too large: the limit is {vis.max_upload_bytes} "
                    "bytes (captum-vit insights --max-upload-mb raises it)"
                )
            else:
                message = (
                    "the request body is too large: the API's JSON bodies are "
                    f"limited to {MAX_JSON_BYTES} bytes"
                )
            return error_response("payload_too_large", message)
        named = {
            404: ("not_found", "not found"),
            405: ("method_not_allowed", "method not allowed"),
            415: ("unsupported_media_type", e.description or "unsupported media type"),
        }
        if code in named:
            return error_response(*named[code])
        if code >= 500:
            return error_response("internal_error", "unexpected server error")
        return error_response("bad_request", e.description or e.name)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> ResponseReturnValue:
        if debug:
            _log.exception("unexpected error")
        else:
            _log.error("unexpected error: %s: %s", type(e).__name__, e)
        return error_response(
            "internal_error", "unexpected server error (see the server's log)"
        )

    def body(*known: str) -> Dict[str, Any]:
        data = R.read_json(request, MAX_JSON_BYTES)
        R.check_fields(data, known)
        return data

    def budget() -> Budget:
        return Budget(vis.time_budget, gone=_client_gone(request.environ))

    def calls(b: Dict[str, Any]) -> List[MethodCall]:
        return R.method_calls(b.get("methods"), vis.int_limits, vis.max_methods)

    # ---------------------------------------------------------------- static
    def static_response(name: str) -> Response:
        resp = Response(static[name], content_type=STATIC_FILES[name])
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/")
    def index() -> ResponseReturnValue:
        return static_response("index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str) -> ResponseReturnValue:
        if name not in static:
            return error_response("not_found", "not found")
        return static_response(name)

    # ------------------------------------------------------------------- API
    @app.get("/api/config")
    def config() -> ResponseReturnValue:
        return jsonify(vis.config())

    @app.get("/api/samples")
    def samples() -> ResponseReturnValue:
        return jsonify({"samples": vis.samples()})

    @app.get("/api/images/<image_id>.png")
    def image_png(image_id: str) -> ResponseReturnValue:
        return Response(vis.image_png(image_id), content_type="image/png")

    @app.post("/api/upload")
    def upload() -> ResponseReturnValue:
        f = request.files.get("file")
        if f is None:
            raise R.RequestError(
                "bad_request", "send the image as a multipart/form-data field 'file'"
            )
        data = f.stream.read(vis.max_upload_bytes + 1)
        return jsonify({"image": vis.add_upload(data)}), 201

    @app.post("/api/predict")
    def predict() -> ResponseReturnValue:
        b = body("image", "model", "prompts")
        model = R.optional_int(b, "model", "a model index")
        return jsonify(vis.predict(b.get("image"), model, budget(), b.get("prompts")))

    @app.post("/api/explain")
    def explain() -> ResponseReturnValue:
        b = body("image", "model", "target", "methods", "prompts")
        model = R.optional_int(b, "model", "a model index")
        target = R.optional_int(b, "target", "a class index")
        return jsonify(
            vis.explain(
                b.get("image"), calls(b), target, model, budget(), b.get("prompts")
            )
        )

    @app.post("/api/attention")
    def attention() -> ResponseReturnValue:
        b = body("image", "model", "layer", "view")
        model = R.optional_int(b, "model", "a model index")
        layer = b.get("layer", -1)
        return jsonify(
            vis.attention(b.get("image"), layer, model, b.get("view", "row"), budget())
        )

    @app.post("/api/scores")
    def scores() -> ResponseReturnValue:
        b = body("image", "model", "target", "methods", "metrics", "n_steps", "prompts")
        model = R.optional_int(b, "model", "a model index")
        target = R.optional_int(b, "target", "a class index")
        job = vis.start_scores(
            b.get("image"),
            calls(b),
            b.get("metrics"),
            target,
            model,
            b.get("n_steps", 16),
            b.get("prompts"),
        )
        return jsonify(job), 202

    @app.get("/api/jobs/<job_id>")
    def job(job_id: str) -> ResponseReturnValue:
        return jsonify(vis.job(job_id))

    @app.delete("/api/jobs/<job_id>")
    def cancel_job(job_id: str) -> ResponseReturnValue:
        return jsonify(vis.cancel_job(job_id))

    return app
