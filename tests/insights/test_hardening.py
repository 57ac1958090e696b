"""The server under hostile or careless clients (issue 12, section 3): deep JSON,
huge bodies and parameters, clients that give up, exposed hosts, one error-code
scheme; and pictures as users have them (phone JPEGs, any aspect ratio, 16-bit
PNGs)."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import urllib.request
import zlib

import numpy as np
import pytest
import torch

from captum_vit.attr import _registry
from captum_vit.attr._base import ViTAttribution
from captum_vit.insights._http import ERROR_STATUS
from captum_vit.insights._methods import INT_LIMITS

from .conftest import make_visualizer


def post(client, path, body):
    return client.post(path, json=body)


def assert_coded(resp, status, code, fragment=""):
    """One error scheme: ``{"error": code, "message": ...}``, code -> status."""
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    data = resp.get_json()
    assert set(data) == {"error", "message"}, data
    assert data["error"] == code, data
    assert ERROR_STATUS[data["error"]] == status
    assert fragment.lower() in data["message"].lower(), data["message"]
    return data


# ------------------------------------------------------------------ JSON body
def test_deeply_nested_json_is_400_not_500(client):
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/api/explain", data=deep, content_type="application/json")
    assert_coded(r, 400, "bad_json", "nested")
    # deep but small objects too (the decoder would manage; the API refuses)
    deep = '{"a":' * 40 + "1" + "}" * 40
    r = client.post("/api/explain", data=deep, content_type="application/json")
    assert_coded(r, 400, "bad_json", "nested")


def test_malformed_json_says_so(client):
    r = client.post("/api/explain", data="{not json", content_type="application/json")
    assert_coded(r, 400, "bad_json", "not valid JSON")
    r = client.post("/api/explain", data="[1, 2]", content_type="application/json")
    assert_coded(r, 400, "bad_request", "must be a JSON object")
    r = client.post(
        "/api/explain",
        data="\xff\xfe".encode("latin-1"),
        content_type="application/json",
    )
    assert_coded(r, 400, "bad_json", "not valid JSON")


def test_oversize_json_is_about_json_not_uploads(client):
    body = json.dumps({"image": "d0", "methods": ["rollout"], "pad": "x" * 20_000_000})
    r = client.post("/api/explain", data=body, content_type="application/json")
    data = assert_coded(r, 413, "payload_too_large", "JSON")
    assert "upload" not in data["message"]


def test_unknown_fields_and_list_params_are_refused(client):
    r = post(client, "/api/explain", {"image": "d0", "methods": ["rollout"], "n": 1})
    assert_coded(r, 400, "bad_request", "unknown field")
    r = post(
        client,
        "/api/explain",
        {"image": "d0", "methods": [{"name": "rollout", "params": []}]},
    )
    assert_coded(r, 400, "bad_request", "must be an object")


# ------------------------------------------------------------ integer limits
@pytest.mark.parametrize(
    "name, param, value",
    [
        ("tam", "steps", 2000),
        ("beyond_intuition", "steps", 10**6),
        ("tam", "steps", 0),
        ("vit_cx", "seed", 2**70),
        ("vit_cx", "seed", -1),
        ("vit_cx", "internal_batch_size", 10**9),
        ("atman", "internal_batch_size", 0),
        ("raw_attention", "layer", 10**30),
        ("generic_attention", "start_layer", -(10**30)),
    ],
)
def test_integer_parameters_are_bounded(client, name, param, value):
    r = post(
        client,
        "/api/explain",
        {"image": "d0", "methods": [{"name": name, "params": {param: value}}]},
    )
    data = assert_coded(r, 400, "bad_request", f"'{param}'")
    assert "integer in [" in data["message"]


def test_every_integer_parameter_has_bounds_in_config(client):
    cfg = client.get("/api/config").get_json()
    ints = [p for m in cfg["methods"] for p in m["params"] if p["type"] == "int"]
    assert ints
    for p in ints:
        assert p["min"] <= p["max"] and p["max"] <= 2**32, p
        if p["name"] in INT_LIMITS:
            assert (p["min"], p["max"]) == INT_LIMITS[p["name"]]
    steps = [p for m in cfg["methods"] for p in m["params"] if p["name"] == "steps"]
    assert steps and all(p["max"] <= 100 for p in steps)


def test_int_limits_can_be_raised():
    vis = make_visualizer(int_limits={"steps": (1, 3)})
    c = vis.app.test_client()
    r = post(
        c,
        "/api/explain",
        {"image": "d0", "methods": [{"name": "tam", "params": {"steps": 4}}]},
    )
    assert_coded(r, 400, "bad_request", "[1, 3]")
    r = post(
        c,
        "/api/explain",
        {"image": "d0", "methods": [{"name": "tam", "params": {"steps": 3}}]},
    )
    assert r.status_code == 200, r.data


# ------------------------------------------------ time budget, gone clients
class _Loop(ViTAttribution):
    """Forward passes until stopped (at most 30 s): an endless method."""

    started = threading.Event()
    calls = 0

    def _attribute(self, inputs, target, args):
        _Loop.started.set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            with torch.no_grad():
                self.adapter.forward(inputs)
            _Loop.calls += 1
        raise RuntimeError("the loop was never interrupted")


@pytest.fixture()
def loop_method():
    _Loop.started.clear()
    _Loop.calls = 0
    _registry.register_method("_test_loop")(_Loop)
    try:
        yield _Loop
    finally:
        _registry._METHODS.pop("_test_loop", None)


def _wait(cond, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_request_past_its_time_budget_stops_and_frees_the_model(loop_method):
    vis = make_visualizer(time_budget=1.0)
    model = vis.models[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    c = vis.app.test_client()
    t0 = time.monotonic()
    r = post(c, "/api/explain", {"image": "d0", "methods": ["_test_loop"]})
    assert time.monotonic() - t0 < 10
    assert_coded(r, 504, "timeout", "time budget")
    assert loop_method.calls > 0
    assert vis._pools[0].free() == vis.replicas  # the replica came back
    # the model is as it was and answers at once
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(vars(m).get("forward") for m in model.modules())
    assert post(c, "/api/predict", {"image": "d1"}).status_code == 200
    # the hook is gone once nothing runs: plain calls are not interrupted
    from torch.nn.modules import module as torch_module

    assert not torch_module._global_forward_pre_hooks


def test_a_client_that_disconnects_stops_its_computation(loop_method):
    vis = make_visualizer(time_budget=60.0)
    port = vis.serve(port=0, blocking=False, quiet=True)
    try:
        body = json.dumps({"image": "d0", "methods": ["_test_loop"]}).encode()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(
            b"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert loop_method.started.wait(10)
        assert vis._pools[0].free() == vis.replicas - 1
        sock.close()  # the user closed the tab
        assert _wait(lambda: vis._pools[0].free() == vis.replicas, 10)
        calls = loop_method.calls
        time.sleep(0.5)
        assert loop_method.calls == calls  # the loop has stopped
        # a following request is answered at once
        t0 = time.monotonic()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/predict",
            data=json.dumps({"image": "d1"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(req, timeout=10).status == 200
        assert time.monotonic() - t0 < 5
    finally:
        vis.stop()


def test_jobs_can_be_cancelled_and_abandoned_jobs_stop(loop_method):
    vis = make_visualizer(replicas=2)
    c = vis.app.test_client()
    r = post(c, "/api/scores", {"image": "d0", "methods": ["_test_loop"]})
    job_id = r.get_json()["id"]
    assert loop_method.started.wait(10)
    r = c.delete(f"/api/jobs/{job_id}")
    assert r.status_code == 200
    assert _wait(
        lambda: c.get(f"/api/jobs/{job_id}").get_json()["state"] == "cancelled"
    )
    job = c.get(f"/api/jobs/{job_id}").get_json()
    assert job["error_code"] == "cancelled" and "cancelled" in job["error"]
    assert _wait(lambda: vis._pools[0].free() == vis.replicas)
    # a job nobody polls any more (the page was closed) is cancelled
    loop_method.started.clear()
    vis.jobs.abandon_after = 0.5
    job_id = post(
        c, "/api/scores", {"image": "d0", "methods": ["_test_loop"]}
    ).get_json()["id"]
    assert loop_method.started.wait(10)
    assert _wait(lambda: vis.jobs.get(job_id).state == "cancelled", 10)
    assert _wait(lambda: vis._pools[0].free() == vis.replicas)
    vis.stop()


# ------------------------------------------------------------------- hosting
def test_binding_every_interface_prints_the_real_address_and_warns(capsys):
    vis = make_visualizer()
    port = vis.serve(host="0.0.0.0", port=0, blocking=False, quiet=True)
    try:
        err = capsys.readouterr().err
        assert "warning" in err and "0.0.0.0" in err and "anyone" in err
        vis._server.announce()
        out = capsys.readouterr().out
        assert f"serving on http://0.0.0.0:{port}/" in out
        assert f"http://127.0.0.1:{port}/" in out
        assert vis.url == f"http://127.0.0.1:{port}/"

        def get(host):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(
                f"GET /api/config HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.close()
            return int(data.split(b" ", 2)[1])

        assert get(f"127.0.0.1:{port}") == 200
        assert get(f"localhost:{port}") == 200
        assert get(f"{socket.gethostname()}:{port}") == 200
        assert get("evil.example") == 400  # DNS rebinding
    finally:
        vis.stop()


def test_loopback_server_is_quiet_and_extra_hosts_can_be_allowed(capsys):
    vis = make_visualizer()
    vis.serve(port=0, blocking=False, quiet=True, allowed_hosts=["viz.lan"])
    try:
        assert capsys.readouterr().err == ""
        c = vis._server.app.test_client()
        assert c.get("/api/config", headers={"Host": "viz.lan:80"}).status_code == 200
        assert_coded(
            c.get("/api/config", headers={"Host": "other.lan"}), 400, "bad_host"
        )
    finally:
        vis.stop()


# --------------------------------------------------------- one error scheme
def test_every_error_body_uses_the_code_table(client, vis):
    cases = [
        client.get("/api/nothing"),
        client.get("/api/explain"),
        client.post("/api/explain", data="x=1", content_type="text/plain"),
        post(client, "/api/explain", {"image": "d0", "methods": ["nope"]}),
        post(client, "/api/predict", {"image": "d99"}),
        client.get("/api/config", headers={"Host": "evil.example"}),
        client.post(
            "/api/upload",
            data={"file": (io.BytesIO(b"\0" * (vis.max_upload_bytes + 70_000)), "a")},
        ),
        client.get("/api/jobs/nope"),
        client.get("/static/nope.js"),
    ]
    codes = set()
    for r in cases:
        data = r.get_json()
        assert set(data) == {"error", "message"}, data
        assert ERROR_STATUS[data["error"]] == r.status_code, (data, r.status_code)
        codes.add(data["error"])
    assert {"not_found", "method_not_allowed", "unsupported_media_type"} <= codes
    assert {"bad_request", "bad_host", "payload_too_large"} <= codes


# ------------------------------------------------------------------ pictures
def _jpeg_with_ellipse(w=300, h=200, ew=90, eh=60) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (20, 20, 20))
    cx, cy = w // 2, h // 2
    ImageDraw.Draw(img).ellipse(
        [cx - ew // 2, cy - eh // 2, cx + ew // 2, cy + eh // 2], fill=(250, 250, 250)
    )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _upload(client, data: bytes, name: str = "x.jpg"):
    return client.post("/api/upload", data={"file": (io.BytesIO(data), name)})


def _bright_box(img: torch.Tensor, thr: float = 0.6):
    ys, xs = torch.nonzero(img.mean(0) > thr, as_tuple=True)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def test_uploads_keep_their_aspect_ratio(client, vis):
    r = _upload(client, _jpeg_with_ellipse())
    assert r.status_code == 201, r.data
    image_id = r.get_json()["image"]
    picture, _ = vis.image(image_id)
    # the model input: letterboxed, the ellipse still 3:2 and bands of the
    # fill value above and below
    h, w = _bright_box(picture.input)
    assert w / h == pytest.approx(1.5, rel=0.2)
    assert picture.box.top > 0 and picture.box.left == 0
    assert picture.box.width / picture.box.height == pytest.approx(1.5, rel=0.1)
    # the picture shown, and every overlay, in the upload's own aspect ratio
    from PIL import Image

    shown = Image.open(io.BytesIO(client.get(f"/api/images/{image_id}.png").data))
    assert shown.width / shown.height == pytest.approx(1.5, rel=0.02)
    data = post(client, "/api/explain", {"image": image_id, "methods": ["rollout"]})
    png = data.get_json()["overlays"][0]["image"]
    import base64

    over = Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1])))
    assert over.width / over.height == pytest.approx(1.5, rel=0.02)
    att = post(client, "/api/attention", {"image": image_id}).get_json()
    head = Image.open(io.BytesIO(base64.b64decode(att["heads"][0].split(",", 1)[1])))
    assert head.width / head.height == pytest.approx(1.5, rel=0.02)


def _png16_grey(w=64, h=48) -> bytes:
    from PIL import Image

    a = np.linspace(0, 65535, w * h).reshape(h, w).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _png16_rgb(w=40, h=30) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    rgb = np.zeros((h, w, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 16384, 32768, 49152
    raw = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_pngs_are_converted_not_clipped(client, vis):
    r = _upload(client, _png16_grey(), "scan.png")
    assert r.status_code == 201, r.data
    picture, _ = vis.image(r.get_json()["image"])
    # a ramp from black to white: mean 0.5 (clipping to 8 bits made it ~1.0)
    assert float(picture.display.mean()) == pytest.approx(0.5, abs=0.03)
    r = _upload(client, _png16_rgb(), "colour.png")
    picture, _ = vis.image(r.get_json()["image"])
    assert picture.display.mean((1, 2)).tolist() == pytest.approx(
        [0.25, 0.5, 0.75], abs=0.01
    )


def test_a_phone_jpeg_is_accepted_with_the_default_limits():
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = 3024, 4032  # 12 megapixels, as phones take them
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    noise = rng.normal(0, 14, (h, w, 3))  # about 5 MB at quality 92
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    data = buf.getvalue()
    assert len(data) > 4 * 1024 * 1024  # over the old 4 MiB limit
    defaults = make_visualizer(max_upload_bytes=None, max_upload_pixels=None)
    assert defaults.max_upload_bytes >= 16 * 1024 * 1024
    c = defaults.app.test_client()
    r = _upload(c, data, "IMG_0001.jpg")
    assert r.status_code == 201, r.data
    picture, _ = defaults.image(r.get_json()["image"])
    assert picture.display.shape[-1] / picture.display.shape[-2] == pytest.approx(
        4 / 3, rel=0.01
    )


# --------------------------------------------------------------- the page
def test_the_page_preselects_fast_methods(client):
    cfg = client.get("/api/config").get_json()
    assert cfg["preselected"] == ["rollout", "grad_sam"]
    assert not {"atman", "attention_flow", "vit_cx"} & set(cfg["preselected"])
    js = client.get("/static/app.js").get_data(as_text=True)
    assert "preselected" in js and "i < 2" not in js
