"""The visualiser on a vision-language model (issue 14): with its tokenizer
the page has a prompt box, predictions score the prompts and every method
explains the chosen prompt (HTTP API and in Chromium)."""

from __future__ import annotations

import time

import pytest
import torch
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import captum_vit as cv
from captum_vit.insights import AttributionVisualizer
from tests.clip_models import CONTEXT, open_clip_model
from tests.insights.conftest import tiny_images
from tests.insights.test_browser import _images_loaded, browser  # noqa: F401

PROMPTS = ["a red disk", "a blue square", "a green ring"]


def _tokenizer():
    import open_clip

    return open_clip.SimpleTokenizer(context_length=CONTEXT)


@pytest.fixture(scope="module")
def clip_vis():
    model = open_clip_model()
    v = AttributionVisualizer(
        models=[model],
        classes=PROMPTS,
        dataset=list(tiny_images(4)),
        score_func=lambda out: out.softmax(-1),
        replicas=2,
        tokenizer=_tokenizer(),
    )
    yield v, model
    v.stop()


def _wait_job(client, job_id):
    for _ in range(300):
        state = client.get(f"/api/jobs/{job_id}").get_json()
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_prompts_through_the_api(clip_vis):
    vis, model = clip_vis
    client = vis.app.test_client()
    config = client.get("/api/config").get_json()
    assert config["text"] is True and config["classes"] == PROMPTS
    # predictions: the softmax over the prompts of the model's logits
    prompts = ["a blue square", "a red disk"]
    r = client.post("/api/predict", json={"image": "d1", "prompts": prompts})
    assert r.status_code == 200, r.get_json()
    preds = r.get_json()["predictions"]
    sim = cv.text_similarity(model, prompts, _tokenizer())
    with torch.no_grad():
        probs = sim(vis.model_input("d1")).softmax(-1)[0]
    assert {p["label"] for p in preds} == set(prompts)
    for p in preds:
        assert abs(p["score"] - float(probs[p["index"]])) < 1e-5
    # explanations of a prompt: the method's map of the similarity
    r = client.post(
        "/api/explain",
        json={"image": "d1", "methods": ["legrad"], "target": 0, "prompts": prompts},
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["target_name"] == "a blue square"
    r = client.post(
        "/api/scores",
        json={
            "image": "d1",
            "methods": ["rollout"],
            "target": 1,
            "prompts": prompts,
            "n_steps": 4,
            "metrics": ["deletion"],
        },
    )
    assert r.status_code == 202, r.get_json()
    state = _wait_job(client, r.get_json()["id"])
    assert state["state"] == "done", state
    assert state["result"]["target_name"] == "a red disk"
    # the configured prompts when none are sent
    r = client.post("/api/explain", json={"image": "d0", "methods": ["rollout"]})
    assert r.get_json()["target_name"] in PROMPTS


def test_bad_prompts_are_refused(clip_vis):
    vis, _ = clip_vis
    client = vis.app.test_client()
    for prompts in ([], [""], "a red disk", [3], ["x" * 300], ["a"] * 65):
        r = client.post("/api/predict", json={"image": "d0", "prompts": prompts})
        assert r.status_code == 400, prompts
        assert "prompt" in r.get_json()["message"]
    r = client.post(
        "/api/explain",
        json={"image": "d0", "methods": ["rollout"], "target": 2, "prompts": ["a"]},
    )
    assert r.status_code == 400 and "prompt index" in r.get_json()["message"]


def test_prompts_need_a_text_tower(client):
    r = client.post("/api/predict", json={"image": "d0", "prompts": ["a red disk"]})
    assert r.status_code == 400
    assert "no text tower" in r.get_json()["message"]
    from tests.models import timm_vit

    with pytest.raises(ValueError, match="no text tower"):
        AttributionVisualizer(
            models=[timm_vit()],
            classes=PROMPTS,
            dataset=list(tiny_images(2)),
            tokenizer=_tokenizer(),
        )


def test_prompt_box_in_chromium(browser, clip_vis):  # noqa: F811
    vis, _ = clip_vis
    port = vis.serve(port=0, blocking=False, quiet=True)
    d = browser
    wait = WebDriverWait(d, 60, poll_frequency=0.1)
    try:
        d.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready"))
        box = d.find_element(By.ID, "prompts-box")
        assert box.is_displayed()
        assert d.find_element(By.ID, "prompts-input").get_attribute("value") == (
            "\n".join(PROMPTS)
        )
        # new prompts: the targets and the predictions are the prompts
        d.execute_script(
            "document.getElementById('prompts-input').value = "
            "'a green ring\\n a yellow plus \\n\\n'"
        )
        d.find_element(By.ID, "prompts-btn").click()
        options = d.find_elements(By.CSS_SELECTOR, "#target-select option")
        assert [o.text for o in options] == ["0: a green ring", "1: a yellow plus"]
        d.find_elements(By.CSS_SELECTOR, "#samples img.sample")[2].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#predictions tbody tr"))
        labels = [
            tr.find_element(By.TAG_NAME, "td").text
            for tr in d.find_elements(By.CSS_SELECTOR, "#predictions tbody tr")
        ]
        assert sorted(labels) == ["a green ring", "a yellow plus"]
        assert d.find_element(By.CSS_SELECTOR, "#predictions th").text == "prompt"
        d.execute_script(
            "const t = document.getElementById('target-select');"
            "t.value = '1'; t.dispatchEvent(new Event('change'));"
        )
        for cb in d.find_elements(
            By.CSS_SELECTOR, "#methods .method > input[type=checkbox]"
        ):
            if cb.is_selected():
                cb.click()
        d.find_element(By.ID, "method-legrad").click()
        d.find_element(By.ID, "explain-btn").click()
        wait.until(
            lambda d: _images_loaded(d, "#overlays figure.overlay img") == 1
            or "failed" in d.find_element(By.ID, "status").text
        )
        assert 'prompt "a yellow plus"' in d.find_element(By.ID, "status").text
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        vis.stop()
