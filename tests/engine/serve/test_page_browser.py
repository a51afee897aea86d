"""The page in a real browser (headless Debian chromium driven by Playwright) against a real
`seqpan serve` on a loopback port, with a synthetic video and random I3D weights: the listing, a
query's bars equal the API's answer, a click seeks the player, errors, the URL, the API key,
narrow screens and the keyboard. With SEQPAN_UPDATE_SCREENSHOT=1 it writes docs/page.png, the
README's screenshot (else the screenshot goes to a temporary folder)."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.server_process import ServerProcess
from tests.engine.serve.conftest import page_server_args

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "page.png"
QUERY = "a person opens the door"
TIMEOUT_MS = 240_000  # extraction of the video on a loaded 2-core machine

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (pip install -e '.[test]')")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"the browser tests need {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(page_files):
    with ServerProcess(page_server_args(page_files)) as proc:
        yield proc


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 960, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def api_answer(server: ServerProcess, entry: dict, headers: dict | None = None) -> dict:
    response = httpx.post(f"{server.url}/v1/ground", json={"requests": [entry]}, headers=headers, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def bars(page) -> list[dict]:
    """The drawn moments, best first: their data (as numbers) and the bar's place on its lane (fractions)."""
    return page.eval_on_selector_all(".moment", """buttons => buttons.map(b => {
        const bar = b.querySelector('.bar').getBoundingClientRect(), lane = b.querySelector('.lane').getBoundingClientRect();
        return {start: Number(b.dataset.start), end: Number(b.dataset.end), score: Number(b.dataset.score),
                left: (bar.left - lane.left) / lane.width, width: bar.width / lane.width, text: b.innerText};
    })""")


def ground_in_page(page, query: str, top_k: int | None = None) -> None:
    if top_k is not None:
        page.fill("#top-k", str(top_k))
    page.fill("#query", query)
    page.press("#query", "Enter")


def test_a_query_on_a_video_draws_the_apis_moments_and_a_click_plays_one(server, page, tmp_path):
    page.goto(server.url)
    options = page.eval_on_selector_all("#source option", "os => os.map(o => [o.parentElement.label, o.textContent])")
    assert options == [["Videos", "clip.mp4"], ["Features", "sub/run.npy"], ["Features", "walk.npy"]]
    page.select_option("#source", "video:clip.mp4")
    assert page.is_visible("#player")
    ground_in_page(page, QUERY)
    page.wait_for_function("() => document.querySelectorAll('.moment').length > 0")
    expected = api_answer(server, {"video": "clip.mp4", "query": QUERY, "top_k": 5})["moments"]
    drawn = bars(page)
    assert len(drawn) == len(expected) == 5
    duration = page.evaluate("document.querySelector('video').duration")
    for got, want in zip(drawn, expected):
        assert (got["start"], got["end"]) == (want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)
        assert got["left"] == pytest.approx(want["start"] / 3.0, abs=0.02)
        assert got["width"] == pytest.approx((want["end"] - want["start"]) / 3.0, abs=0.02)
        assert f"{want['start']:.2f}–{want['end']:.2f} s" in got["text"]
    assert duration == pytest.approx(3.0, abs=0.1)
    assert page.is_hidden("#extraction") is False and "ready" in page.inner_text("#extract-text")

    page.wait_for_function("() => document.querySelector('video').readyState >= 1")
    target = drawn[1]
    page.click(".moment >> nth=1")
    now = page.evaluate("document.querySelector('video').currentTime")
    assert target["start"] - 0.05 <= now <= target["end"] + 0.05
    assert page.get_attribute(".moment >> nth=1", "aria-pressed") == "true"
    page.wait_for_function(f"() => document.querySelector('video').paused && "
                           f"document.querySelector('video').currentTime >= {target['end'] - 0.05}", timeout=30_000)
    assert page.evaluate("document.querySelector('video').currentTime") <= target["end"] + 0.5  # stopped at its end

    screenshot = SCREENSHOT if os.environ.get("SEQPAN_UPDATE_SCREENSHOT") == "1" else tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    url = page.url
    assert "video=clip.mp4" in url and "q=a+person+opens+the+door" in url
    page.goto(url)  # the address alone brings the same answer back
    page.wait_for_function("() => document.querySelectorAll('.moment').length === 5")
    assert [(b["start"], b["end"]) for b in bars(page)] == [(m["start"], m["end"]) for m in expected]
    assert page.input_value("#query") == QUERY


def test_features_get_a_bare_timeline_and_errors_show_the_apis_line(server, page):
    page.goto(f"{server.url}/?features=walk.npy")
    assert page.is_hidden("#player")
    assert page.input_value("#duration") == "12.5"
    ground_in_page(page, "someone walks", top_k=3)
    page.wait_for_function("() => document.querySelectorAll('.moment').length === 3")
    expected = api_answer(server, {"features": "walk.npy", "query": "someone walks", "duration": 12.5, "top_k": 3})
    assert [(b["start"], b["end"]) for b in bars(page)] == [(m["start"], m["end"]) for m in expected["moments"]]
    page.click(".moment >> nth=2")
    left = page.evaluate("parseFloat(document.getElementById('playhead').style.left)")
    assert left == pytest.approx(100 * expected["moments"][2]["start"] / 12.5, abs=1e-6)

    long_query = "door " * 500
    ground_in_page(page, long_query)
    error = api_answer(server, {"features": "walk.npy", "query": long_query, "duration": 12.5, "top_k": 3})["error"]
    page.wait_for_function("() => document.getElementById('error').textContent !== ''")
    assert page.inner_text("#error") == error and "characters" in error
    page.select_option("#source", "features:sub/run.npy")  # no duration known: the API's error until one is given
    assert page.input_value("#duration") == ""
    ground_in_page(page, "someone walks")
    page.wait_for_function("() => document.getElementById('error').textContent !== ''")
    assert "duration" in page.inner_text("#error")
    assert page.eval_on_selector_all(".moment", "m => m.length") == 0


def test_without_the_key_nothing_is_grounded_and_the_key_is_asked_once(page_files, browser):
    key = "page-k3y"
    args = page_server_args(page_files, "--api-key-env", "SEQPAN_BROWSER_KEY")
    with ServerProcess(args, env={"SEQPAN_BROWSER_KEY": key}) as proc:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{proc.url}/?features=walk.npy&duration=12.5&q=someone+walks")
        page.wait_for_selector("#key-form", state="visible")
        assert page.eval_on_selector_all("#source option", "o => o.length") == 0
        assert page.eval_on_selector_all(".moment", "m => m.length") == 0
        assert grounded_ok(proc) == 0
        page.fill("#key", "wrong")
        page.press("#key", "Enter")
        page.wait_for_function("() => document.getElementById('key-note').textContent.includes('refused')")
        assert page.is_visible("#key-form") and grounded_ok(proc) == 0
        page.fill("#key", key)
        page.press("#key", "Enter")
        page.wait_for_function("() => document.querySelectorAll('.moment').length === 5")
        assert page.is_hidden("#key-form")
        assert grounded_ok(proc) == 1
        assert page.evaluate("sessionStorage.getItem('seqpan-api-key')") == key
        page.reload()  # the same tab keeps the key: no second question
        page.wait_for_function("() => document.querySelectorAll('.moment').length === 5")
        assert page.is_hidden("#key-form")
        fresh = context.new_page()  # another tab asks again
        fresh.goto(f"{proc.url}/")
        fresh.wait_for_selector("#key-form", state="visible")
        context.close()


def grounded_ok(server: ServerProcess) -> float:
    """POST /v1/ground answered 200 so far (from the server's metrics)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "seqpan_http_requests_total" and s.labels == {"route": "/v1/ground", "code": "200"})


def test_narrow_screens_and_the_keyboard(server, browser):
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/?features=walk.npy")
    page.focus("#source")
    page.keyboard.press("Tab")  # to the duration
    page.keyboard.press("Tab")  # to the query
    assert page.evaluate("document.activeElement.id") == "query"
    page.keyboard.type("someone walks")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.moment').length === 5")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing wider than the screen
    page.focus(".moment >> nth=0")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the second moment, by keyboard
    assert page.get_attribute(".moment >> nth=1", "aria-pressed") == "true"
    context.close()
