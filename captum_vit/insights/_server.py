"""The Flask application of the visualiser: JSON API, static page, errors.

Every error is answered as JSON ``{"error": ..., "message": ...}`` with a 4xx
status for what the client got wrong (the traceback of an unexpected error
goes to the server's log when ``debug`` is set, never to the client). Static
files are read once, at start, from a fixed list into memory: no request
names a path on the server's disk.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any, Dict, Tuple

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .app import AttributionVisualizer, RequestError

#: The page's files and their content types: the only files ever served.
STATIC_FILES: Dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}

_log = logging.getLogger("captum_vit.insights")


def _load_static() -> Dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    return {name: root.joinpath(name).read_bytes() for name in STATIC_FILES}


def _error(status: int, error: str, message: str) -> Tuple[Response, int]:
    return jsonify({"error": error, "message": message}), status


def create_app(vis: AttributionVisualizer) -> Flask:
    """The Flask app serving ``vis`` (see :meth:`AttributionVisualizer.serve`)."""
    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = vis.max_upload_bytes + 64 * 1024
    app.config["MAX_FORM_MEMORY_SIZE"] = vis.max_upload_bytes + 64 * 1024
    app.json.sort_keys = False
    app.config.setdefault("CAPTUM_VIT_LOOPBACK", True)
    static = _load_static()

    # ------------------------------------------------------------- hardening
    @app.before_request
    def check_host():
        # A server on loopback answers only loopback host names: a web page
        # elsewhere cannot reach it through DNS rebinding.
        if app.config.get("CAPTUM_VIT_LOOPBACK"):
            host = (
                request.host.rsplit(":", 1)[0]
                if "]" not in request.host
                else (request.host.split("]")[0] + "]")
            )
            if host.lower() not in _LOOPBACK_HOSTS:
                return _error(
                    400, "bad_host", "this server answers loopback hosts only"
                )
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; script-src 'self'; "
            "style-src 'self'; object-src 'none'; frame-ancestors 'none'"
        )
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # ---------------------------------------------------------------- errors
    @app.errorhandler(RequestError)
    def request_error(e: RequestError):
        return _error(
            e.status, "bad_request" if e.status == 400 else "error", e.message
        )

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        messages = {
            404: "not found",
            405: "method not allowed",
            413: f"request too large (uploads are limited to {vis.max_upload_bytes} bytes)",
        }
        code = e.code or 400
        return _error(
            code,
            (e.name or "error").lower().replace(" ", "_"),
            messages.get(code, e.description or e.name),
        )

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        if app.config.get("CAPTUM_VIT_DEBUG"):
            _log.exception("unexpected error")
        else:
            _log.error("unexpected error: %s: %s", type(e).__name__, e)
        return _error(
            500, "internal_error", "unexpected server error (see the server's log)"
        )

    def body() -> Dict[str, Any]:
        data = request.get_json(silent=True)
        if not request.is_json:
            raise RequestError(415, "send the request body as application/json")
        if not isinstance(data, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return data

    # ---------------------------------------------------------------- static
    def static_response(name: str) -> Response:
        resp = Response(static[name], content_type=STATIC_FILES[name])
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/")
    def index():
        return static_response("index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        if name not in static:
            return _error(404, "not_found", "not found")
        return static_response(name)

    # ------------------------------------------------------------------- API
    @app.get("/api/config")
    def config():
        return jsonify(vis.config())

    @app.get("/api/samples")
    def samples():
        return jsonify({"samples": vis.samples()})

    @app.get("/api/images/<image_id>.png")
    def image_png(image_id: str):
        return Response(vis.image_png(image_id), content_type="image/png")

    @app.post("/api/upload")
    def upload():
        f = request.files.get("file")
        if f is None:
            raise RequestError(400, "send the image as a multipart form field 'file'")
        data = f.stream.read(vis.max_upload_bytes + 1)
        image_id = vis.add_upload(data)
        return jsonify({"image": image_id}), 201

    @app.post("/api/predict")
    def predict():
        b = body()
        return jsonify(vis.predict(b.get("image"), b.get("model")))

    @app.post("/api/explain")
    def explain():
        b = body()
        return jsonify(
            vis.explain(
                b.get("image"), b.get("methods"), b.get("target"), b.get("model")
            )
        )

    @app.post("/api/attention")
    def attention():
        b = body()
        return jsonify(
            vis.attention(
                b.get("image"), b.get("layer", -1), b.get("model"), b.get("view", "row")
            )
        )

    @app.post("/api/scores")
    def scores():
        b = body()
        job = vis.start_scores(
            b.get("image"),
            b.get("methods"),
            b.get("metrics"),
            b.get("target"),
            b.get("model"),
            b.get("n_steps", 16),
        )
        return jsonify(job), 202

    @app.get("/api/jobs/<job_id>")
    def job(job_id: str):
        return jsonify(vis.job(job_id))

    return app
