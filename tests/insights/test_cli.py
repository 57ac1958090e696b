"""``captum-vit insights``: the parser, and the real command serving the
embedded default model on the synthetic benchmark (in a subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request

from captum_vit.cli import build_parser, insights


def test_parser_defaults_bind_loopback():
    args = build_parser().parse_args(["insights"])
    assert args.func is insights
    assert (args.host, args.port, args.samples) == ("127.0.0.1", 8050, 32)
    args = build_parser().parse_args(["insights", "--port", "0", "--samples", "4"])
    assert (args.port, args.samples) == (0, 4)


def test_command_serves_the_default_model_and_benchmark():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "captum_vit",
            "insights",
            "--port",
            "0",
            "--samples",
            "8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url = None
        for _ in range(1200):  # up to 120 s for the imports on a busy machine
            m = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", "".join(lines))
            if m:
                url = m.group(1)
                break
            if proc.poll() is not None:
                break
            reader.join(0.1)
        assert url, ("".join(lines), proc.poll())
        cfg = json.loads(urllib.request.urlopen(url + "api/config", timeout=30).read())
        from captum_vit.data import CLASS_NAMES

        assert cfg["classes"] == list(CLASS_NAMES)
        assert cfg["image_size"] == [64, 64] and cfg["num_samples"] == 8
        req = urllib.request.Request(
            url + "api/explain",
            data=json.dumps({"image": "d0", "methods": ["rollout"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert len(data["overlays"]) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert "Traceback" not in stderr, stderr


def test_insights_flags_reach_the_visualiser_and_the_server(monkeypatch):
    import captum_vit.insights as insights_pkg

    seen = {}

    class FakeVis:
        def serve(self, **kwargs):
            seen["serve"] = kwargs

    def fake_default(**kwargs):
        seen["vis"] = kwargs
        return FakeVis()

    monkeypatch.setattr(insights_pkg, "default_visualizer", fake_default)
    argv = ["insights", "--host", "0.0.0.0", "--max-upload-mb", "32"]
    argv += ["--allowed-host", "lab.lan", "--allowed-host", "10.0.0.5"]
    argv += ["--time-budget", "5", "--port", "0"]
    args = build_parser().parse_args(argv)
    assert insights(args) == 0
    assert seen["vis"]["max_upload_bytes"] == 32 * 1024 * 1024
    assert seen["vis"]["time_budget"] == 5.0
    assert seen["serve"]["host"] == "0.0.0.0"
    assert seen["serve"]["allowed_hosts"] == ["lab.lan", "10.0.0.5"]
    defaults = build_parser().parse_args(["insights"])
    assert defaults.max_upload_mb == 20.0 and defaults.allowed_host is None
