"""Every endpoint of the visualiser, its errors (4xx JSON, never a 500 or a
traceback), upload limits and path traversal attempts."""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import time
import urllib.parse
import zlib

import pytest
import torch

from captum_vit.attr import list_methods
from captum_vit.insights import AttributionVisualizer
from captum_vit.insights._scores import PAGE_METRICS as METRICS

from .conftest import CLASS_NAMES, make_visualizer, png_bytes


def post(client, path, body):
    return client.post(path, json=body)


def assert_error(resp, status, fragment=""):
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert resp.is_json, resp.data[:200]
    data = resp.get_json()
    assert set(data) == {"error", "message"}
    assert fragment.lower() in data["message"].lower(), data["message"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return data


def png_size(data_url: str):
    raw = base64.b64decode(data_url.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


# ----------------------------------------------------------------- endpoints
def test_index_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and b"captum_vit" in r.data
    assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    for name, ctype in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(ctype)


def test_config_lists_models_methods_metrics(client):
    cfg = client.get("/api/config").get_json()
    assert cfg["classes"] == CLASS_NAMES
    assert cfg["models"][0]["num_layers"] == 2 and cfg["models"][0]["num_heads"] == 2
    assert [m["name"] for m in cfg["methods"]] == list_methods()
    rollout = next(m for m in cfg["methods"] if m["name"] == "rollout")
    params = {p["name"]: p for p in rollout["params"]}
    assert params["head_fusion"]["choices"] == ["mean", "max", "min"]
    assert params["discard_ratio"]["type"] == "float"
    assert [m["name"] for m in cfg["metrics"]] == list(METRICS)
    assert cfg["image_size"] == [32, 32] and cfg["num_samples"] == 6


def test_samples_and_sample_images(client):
    samples = client.get("/api/samples").get_json()["samples"]
    assert [s["id"] for s in samples] == [f"d{i}" for i in range(6)]
    assert samples[4]["label"] == 4 and samples[4]["label_name"] == "class 4"
    r = client.get("/api/images/d2.png")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.data[:4] == b"\x89PNG"


def test_predict_top_k(client, vis):
    r = post(client, "/api/predict", {"image": "d1"})
    assert r.status_code == 200
    data = r.get_json()
    preds = data["predictions"]
    assert len(preds) == 5 and data["label"] == 1
    with torch.no_grad():
        x = vis.model_input("d1")
        probs = vis.models[0](x).softmax(-1)[0]
    assert preds[0]["index"] == int(probs.argmax())
    assert preds[0]["score"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert [p["score"] for p in preds] == sorted(
        (p["score"] for p in preds), reverse=True
    )


def test_explain_two_methods_with_params(client, vis):
    r = post(
        client,
        "/api/explain",
        {
            "image": "d0",
            "target": 3,
            "methods": [
                "rollout",
                {"name": "raw_attention", "params": {"layer": 0, "head": "1"}},
            ],
        },
    )
    assert r.status_code == 200, r.data
    data = r.get_json()
    assert data["target"] == 3 and data["target_name"] == "class 3"
    assert [o["method"] for o in data["overlays"]] == ["rollout", "raw_attention"]
    assert data["overlays"][1]["label"] == "raw_attention head=1 layer=0"
    for o in data["overlays"]:
        assert png_size(o["image"]) == (224, 224)  # 32 px shown x7


def test_explain_default_target_is_prediction(client):
    pred = post(client, "/api/predict", {"image": "d5"}).get_json()["predictions"][0]
    data = post(client, "/api/explain", {"image": "d5", "methods": ["rollout"]})
    assert data.get_json()["target"] == pred["index"]


@pytest.mark.parametrize("view", ["row", "matrix"])
def test_attention_per_layer_and_head(client, view):
    r = post(client, "/api/attention", {"image": "d0", "layer": 0, "view": view})
    assert r.status_code == 200
    data = r.get_json()
    assert data["layer"] == 0 and data["num_heads"] == 2 and len(data["heads"]) == 2
    w, h = png_size(data["heads"][0])
    assert w == h and w >= 32
    assert png_size(data["mean"]) == (w, h)
    assert (
        post(client, "/api/attention", {"image": "d0", "layer": -1}).get_json()["layer"]
        == 1
    )


def test_upload_then_predict_and_explain(client):
    r = client.post(
        "/api/upload", data={"file": (io.BytesIO(png_bytes(50, 20)), "a.png")}
    )
    assert r.status_code == 201, r.data
    image_id = r.get_json()["image"]
    assert image_id.startswith("u")
    assert client.get(f"/api/images/{image_id}.png").status_code == 200
    assert post(client, "/api/predict", {"image": image_id}).status_code == 200
    r = post(client, "/api/explain", {"image": image_id, "methods": ["grad_sam"]})
    assert r.status_code == 200


def test_scores_job_reports_progress_and_result(client, vis):
    r = post(
        client,
        "/api/scores",
        {"image": "d2", "methods": ["rollout", "raw_attention"], "n_steps": 4},
    )
    assert r.status_code == 202
    job = r.get_json()
    assert job["total"] == 2 * (1 + len(METRICS)) and job["state"] in (
        "queued",
        "running",
    )
    seen = set()
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job['id']}").get_json()
        seen.add(job["done"])
        if job["state"] in ("done", "error"):
            break
        time.sleep(0.05)
    assert job["state"] == "done", job
    assert job["progress"] == 1.0
    res = job["result"]
    assert [row["method"] for row in res["rows"]] == ["rollout", "raw_attention"]
    for row in res["rows"]:
        assert set(row["scores"]) == set(METRICS)
        for key, auc in row["scores"].items():
            assert 0.0 <= auc <= 1.0
            assert len(row["curves"][key]["x"]) == len(row["curves"][key]["y"])
    # the deletion score equals captum_vit.metrics computed directly
    from captum_vit import metrics
    from captum_vit.attr import create_method

    x = vis.model_input("d2")
    t = res["target"]
    attr = create_method("rollout", vis.models[0]).attribute(x, target=t)
    direct = metrics.deletion_auc(
        vis.models[0], x, attr, target=t, n_steps=4, patch_size=8
    )
    assert res["rows"][0]["scores"]["deletion"] == pytest.approx(float(direct.auc[0]))


def test_long_job_does_not_block_other_requests(client, gated_method):
    r = post(client, "/api/scores", {"image": "d0", "methods": ["_test_gated"]})
    assert r.status_code == 202
    job_id = r.get_json()["id"]
    assert gated_method.started.wait(10), "the job did not start"
    # While the job is stuck inside its method, the page keeps working.
    t0 = time.perf_counter()
    assert client.get("/api/config").status_code == 200
    assert post(client, "/api/predict", {"image": "d1"}).status_code == 200
    r = post(client, "/api/explain", {"image": "d1", "methods": ["rollout"]})
    assert r.status_code == 200
    assert time.perf_counter() - t0 < 10
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert job["state"] == "running" and job["done"] == 0
    gated_method.gate.set()
    deadline = time.time() + 30
    while job["state"] == "running" and time.time() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job_id}").get_json()
    assert job["state"] == "done" and job["progress"] == 1.0


# -------------------------------------------------------------------- errors
E = "/api/explain"


def ex(methods, **kw):
    return {"image": "d0", "methods": methods, **kw}


def one(name, **params):
    return [{"name": name, "params": params}]


@pytest.mark.parametrize(
    "path, body, status, fragment",
    [
        (E, ex(["no_such_method"]), 400, "unknown method"),
        (E, ex([]), 400, "non-empty"),
        (E, ex("rollout"), 400, "list"),
        (E, ex(one("rollout", bogus=1)), 400, "unknown parameter"),
        (E, ex(one("rollout", head_fusion="median")), 400, "must be one of"),
        (E, ex(one("rollout", discard_ratio="lots")), 400, "number"),
        (E, ex(one("rollout", discard_ratio=2.0)), 400, "rollout"),
        (E, ex(one("rollout", discard_ratio=float("nan"))), 400, "finite"),
        (E, ex(one("raw_attention", layer=7)), 400, "out of range"),
        (E, ex(one("raw_attention", layer=1.5)), 400, "integer"),
        (E, ex(one("raw_attention", head=True)), 400, "integer"),
        (E, ex([{"name": "rollout", "extra": 1}]), 400, "unknown keys"),
        (E, ex(["rollout"] * 9), 400, "at most"),
        (E, ex(["rollout"], target=99), 400, "out of range"),
        (E, ex(["rollout"], target="x"), 400, "class index"),
        (E, ex(["rollout"], model=3), 400, "model index"),
        (E, ex(["rollout"], image="d99"), 404, "no image"),
        (E, ex(["rollout"], image="../../etc/passwd"), 404, "no image"),
        (E, ex(["rollout"], image=5), 400, "image id"),
        (E, ex(["rollout"], image="d\u00b2"), 404, "no image"),
        (E, ex(["rollout"], image="d" + "9" * 40), 404, "no image"),
        ("/api/predict", {}, 400, "image id"),
        ("/api/predict", {"image": "uffff"}, 404, "no image"),
        ("/api/attention", {"image": "d0", "layer": 2}, 400, "layer"),
        ("/api/attention", {"image": "d0", "layer": "0"}, 400, "layer"),
        ("/api/attention", {"image": "d0", "view": "3d"}, 400, "view"),
        ("/api/scores", ex(["rollout"], metrics=["accuracy"]), 400, "metrics"),
        ("/api/scores", ex(["rollout"], n_steps=10**6), 400, "n_steps"),
        ("/api/scores", ex(["nope"]), 400, "unknown method"),
    ],
)
def test_bad_requests_get_4xx_json(client, path, body, status, fragment):
    resp = client.post(
        path, data=json.dumps(body, allow_nan=True), content_type="application/json"
    )
    assert_error(resp, status, fragment)


def test_malformed_bodies(client):
    assert_error(
        client.post("/api/explain", data="{not json", content_type="application/json"),
        400,
    )
    assert_error(
        client.post("/api/explain", data="[1, 2]", content_type="application/json"),
        400,
        "object",
    )
    assert_error(
        client.post(
            "/api/explain",
            data="image=d0",
            content_type="application/x-www-form-urlencoded",
        ),
        415,
        "json",
    )
    assert_error(client.get("/api/explain"), 405)
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/api/jobs/0123456789abcdef"), 404, "no such job")


def test_method_failure_is_422_not_500(client, monkeypatch):
    from captum_vit.attr.rollout import AttentionRollout

    def boom(self, inputs, target, args):
        raise RuntimeError("simulated failure inside the method")

    monkeypatch.setattr(AttentionRollout, "_attribute", boom)
    data = assert_error(
        post(client, "/api/explain", {"image": "d0", "methods": ["rollout"]}), 422
    )
    assert "simulated failure" in data["message"]
    # a failing job reports its error through the job, not a 500
    job = post(
        client, "/api/scores", {"image": "d0", "methods": ["rollout"]}
    ).get_json()
    deadline = time.time() + 30
    while job["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").get_json()
    assert job["state"] == "error" and "simulated failure" in job["error"]


def test_unexpected_error_is_json_without_traceback(client, vis, monkeypatch):
    def boom():
        raise KeyError("internal detail")

    monkeypatch.setattr(vis, "config", boom)
    data = assert_error(client.get("/api/config"), 500)
    assert "internal detail" not in data["message"]


def test_foreign_host_header_is_refused(client):
    # DNS rebinding: a loopback server answers loopback host names only.
    assert_error(
        client.get("/api/config", headers={"Host": "evil.example:8050"}),
        400,
        "host names",
    )
    assert (
        client.get("/api/config", headers={"Host": "127.0.0.1:8050"}).status_code == 200
    )


# ------------------------------------------------------------------- uploads
def _png_with_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header is rewritten to claim ``width x height``."""
    raw = bytearray(png_bytes(2, 2))
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(raw)


def _upload(client, data: bytes, name: str = "x.png"):
    return client.post("/api/upload", data={"file": (io.BytesIO(data), name)})


def test_upload_rejections(client):
    from PIL import Image

    assert_error(_upload(client, b""), 400, "empty")
    assert_error(_upload(client, b"hello, not an image"), 400, "not a valid image")
    good = png_bytes(40, 40)
    assert_error(_upload(client, good[: len(good) // 2]), 400, "not a valid image")
    corrupt = bytearray(good)
    corrupt[40:60] = b"\x00" * 20
    assert_error(_upload(client, bytes(corrupt)), 400)
    # declared size far beyond the limit: refused from the header
    assert_error(_upload(client, _png_with_size(100_000, 100_000)), 400, "exceeds")
    # a small file that decodes to a large image (decompression bomb)
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 64 * 1024
    assert_error(_upload(client, buf.getvalue()), 400, "exceeds")
    # a format outside the allowed list (TIFF, ICO)
    for fmt in ("TIFF", "ICO"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, format=fmt)
        assert_error(_upload(client, buf.getvalue(), "x." + fmt.lower()), 400, "format")
    # an SVG / HTML file
    assert_error(_upload(client, b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 400)
    # no file field
    assert_error(client.post("/api/upload", data={"other": "1"}), 400, "'file'")


def test_upload_too_large_is_413(client, vis):
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * (vis.max_upload_bytes + 128 * 1024)
    assert_error(_upload(client, big), 413, "too large")


def test_upload_modes_are_converted_to_rgb(client):
    from PIL import Image

    for mode, fmt in [
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("RGB", "JPEG"),
        ("RGB", "BMP"),
    ]:
        buf = io.BytesIO()
        Image.new(mode, (20, 24)).save(buf, format=fmt)
        r = _upload(client, buf.getvalue())
        assert r.status_code == 201, (mode, fmt, r.data)


# ------------------------------------------------------------ path traversal
TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%252f..%252fetc%252fpasswd",
    "/static/....//....//etc/passwd",
    "/static/..\\..\\etc\\passwd",
    "/static/%5c..%5c..%5cetc%5cpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/app.js%00.html",
    "/static/../insights/_server.py",
    "/static/../app.py",
    "/static/_server.py",
    "/api/images/..%2f..%2f..%2fetc%2fpasswd.png",
    "/api/images/%2e%2e/%2e%2e/etc/passwd.png",
    "/api/jobs/..%2f..%2fetc%2fpasswd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd",
    "/app.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_with_test_client(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"root:" not in r.data and b"import " not in r.data


def test_path_traversal_on_the_wire(live):
    """Raw request lines (no client-side normalisation) to the live server."""
    host, port = urllib.parse.urlsplit(live).netloc.split(":")
    for path in TRAVERSALS:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (400, 404), (path, resp.status)
        assert b"root:" not in body and b"import " not in body, path


# --------------------------------------------------------------- constructor
def test_constructor_accepts_insights_style_and_map_style_datasets():
    from captum_vit.insights import ImageFeature
    from captum_vit.zoo import Normalize

    from .conftest import tiny_images

    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    vis = make_visualizer(
        dataset=[(img, i % 5) for i, img in enumerate(tiny_images(3))],
        features=ImageFeature("Photo", input_transforms=[norm]),
    )
    assert vis.mean == pytest.approx([0.5] * 3) and vis.std == pytest.approx([0.25] * 3)
    x = vis.model_input("d0")
    assert torch.allclose(x[0], norm(tiny_images(3)[0]))
    with pytest.raises(ValueError, match="image_size"):
        make_visualizer(dataset=None)
    assert make_visualizer(dataset=None, image_size=(32, 32)).samples() == []
    with pytest.raises(TypeError):  # not a ViT
        AttributionVisualizer(
            torch.nn.Linear(2, 2), ["a", "b"], None, image_size=(8, 8)
        )


def test_serve_binds_loopback_by_default_and_stops():
    vis = make_visualizer()
    port = vis.serve(port=0, blocking=False, quiet=True)
    try:
        assert vis._server.socket_name()[0] == "127.0.0.1"
        assert vis.url == f"http://127.0.0.1:{port}/"
        with pytest.raises(RuntimeError, match="already serving"):
            vis.serve(port=0, blocking=False)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/config")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        vis.stop()
    assert vis.url is None
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
    vis.stop()  # idempotent


# ---------------------------------------------------------------------- fuzz
WEIRD = [None, True, 1.5, -1, "d\u00b2", "x" * 5000, [None], {"a": 1}]
VALID = {
    "/api/predict": {"image": "d0", "model": 0},
    "/api/explain": {"image": "d0", "model": 0, "target": 1, "methods": ["rollout"]},
    "/api/attention": {"image": "d0", "model": 0, "layer": 0, "view": "row"},
    "/api/scores": {
        "image": "d0",
        "model": 0,
        "target": 1,
        "methods": ["rollout"],
        "metrics": ["deletion"],
        "n_steps": 2,
    },
}


@pytest.mark.parametrize("path", sorted(VALID))
def test_fuzzed_fields_never_give_a_500(client, path):
    assert client.post(path, json=dict(VALID[path], unexpected=1)).status_code < 500
    for field in VALID[path]:
        for value in WEIRD:
            body = dict(VALID[path], **{field: value})
            r = client.post(path, json=body)
            assert r.status_code < 500, (path, field, value, r.data[:200])
            assert r.is_json
    for value in WEIRD:  # inside a method entry
        for entry in ({"name": value}, {"name": "rollout", "params": value}):
            body = dict(VALID[path], methods=[entry])
            assert client.post(path, json=body).status_code < 500, (path, entry)
        body = dict(
            VALID[path], methods=[{"name": "rollout", "params": {"head_fusion": value}}]
        )
        assert client.post(path, json=body).status_code < 500, (path, value)


def test_config_lists_the_methods_that_apply_to_every_model():
    """A Swin (windowed attention) is explained by the token-graph methods
    only: the page offers those, also beside a plain ViT."""
    from tests.models import timm_swin, timm_vit

    swin = timm_swin()
    vis = make_visualizer(
        models=[timm_vit(), swin], preselected=["rollout", "atman", "legrad"]
    )
    names = [m["name"] for m in vis.config()["methods"]]
    assert names == list_methods(model=swin) and len(names) < len(list_methods())
    assert "rollout" in names and "atman" not in names
    assert vis.preselected == ["rollout"]
