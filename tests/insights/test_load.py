"""A bounded load test on loopback: N concurrent explain requests to a live
server on 127.0.0.1 must all succeed. Requests per second and latency
percentiles are printed and written to ``artifacts/insights_load.json``."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

N_REQUESTS = 16
CONCURRENCY = 4
TIME_LIMIT_S = 120.0
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _explain(base: str, i: int):
    body = {
        "image": f"d{i % 6}",
        "methods": ["rollout", {"name": "raw_attention", "params": {"head": i % 2}}],
    }
    req = urllib.request.Request(
        base + "/api/explain",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=TIME_LIMIT_S) as resp:
            status = resp.status
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        status, data = e.code, json.loads(e.read() or b"{}")
    return status, data, time.perf_counter() - t0


def test_concurrent_explain_requests_on_loopback(live):
    assert live.startswith("http://127.0.0.1:")
    _explain(live, 0)  # warm-up (first call of each method)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = list(pool.map(lambda i: _explain(live, i), range(N_REQUESTS)))
    wall = time.perf_counter() - t0
    errors = [(s, d.get("message")) for s, d, _ in results if s != 200]
    assert not errors, errors
    assert all(len(d["overlays"]) == 2 for _, d, _ in results)
    assert wall < TIME_LIMIT_S
    lat = np.array([t for _, _, t in results]) * 1000.0
    report = {
        "requests": N_REQUESTS,
        "concurrency": CONCURRENCY,
        "methods_per_request": 2,
        "errors": 0,
        "wall_s": round(wall, 3),
        "requests_per_s": round(N_REQUESTS / wall, 2),
        "latency_ms": {
            q: round(float(np.percentile(lat, p)), 1)
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "insights_load.json").write_text(json.dumps(report, indent=2))
    print("\ninsights load test:", json.dumps(report))
