"""The page's routes on a real `seqpan serve` process: the page and its assets, the listing, a video's
bytes with range requests, extraction with progress, `video` entries of POST /v1/ground (equal to the
engine's answer on the features extracted in-process), and every path confined to its folder."""
from __future__ import annotations

import http.client
import time
from urllib.parse import quote, urlsplit

import httpx
import pytest

from bench.server_process import ServerProcess
from engine import GroundingEngine, GroundingRequest
from engine.data.features import PathRefused
from engine.serve.library import VIDEO_REFUSED
from tests.engine.serve.conftest import page_server_args
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def server(page_files):
    with ServerProcess(page_server_args(page_files)) as proc:
        yield proc


def raw_get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    """GET `path` sent exactly as written (no client normalises its dots or escapes)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ground(server: ServerProcess, *entries: dict) -> list[dict]:
    response = httpx.post(f"{server.url}/v1/ground", json={"requests": list(entries)}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_the_page_and_its_assets_are_served_and_nothing_else(server, page_files):
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text and "http" not in page.text.split("<body>")[1]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{server.url}/static/app.js", timeout=10)
    assert script.status_code == 200 and "/v1/ground" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    for path in ("/static/page.py", "/static/../page.py", "/static/..%2fpage.py", "/static/%2e%2e%2fapp.py",
                 "/static/../../library.py", "/static/", "/static/..", "/static/__init__.py"):
        status, body = raw_get(server, path)
        assert status == 404, path
        assert b"import" not in body, path


def test_the_listing_names_what_can_be_grounded(server):
    listing = httpx.get(f"{server.url}/v1/videos", timeout=60).json()
    assert listing["features"] == [{"name": "sub/run.npy", "duration": None}, {"name": "walk.npy", "duration": 12.5}]
    (video,) = listing["videos"]  # not notes.txt, not out.mp4 (a symlink out of the folder)
    assert video["name"] == "clip.mp4" and video["duration"] == pytest.approx(3.0, abs=0.05)
    assert video["url"] == "/v1/videos/file?name=clip.mp4"
    assert video["features"]["status"] in ("none", "pending", "extracting", "ready")
    assert listing["truncated"] is False


def test_a_video_is_served_whole_and_by_ranges(server, page_files):
    data = (page_files[4] / "clip.mp4").read_bytes()
    url = f"{server.url}/v1/videos/file?name=clip.mp4"
    whole = httpx.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    for header, first, last in (("bytes=10-19", 10, 19), ("bytes=100-", 100, len(data) - 1),
                                ("bytes=-7", len(data) - 7, len(data) - 1), ("bytes=5-999999999", 5, len(data) - 1)):
        part = httpx.get(url, headers={"Range": header}, timeout=30)
        assert part.status_code == 206, header
        assert part.content == data[first:last + 1], header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    past = httpx.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    several = httpx.get(url, headers={"Range": "bytes=0-1,5-6"}, timeout=30)  # ignored: the whole file
    assert several.status_code == 200 and several.content == data
    head = httpx.head(url, headers={"Range": "bytes=10-19"}, timeout=30)
    assert (head.status_code, head.headers["content-length"], head.content) == (206, "10", b"")


def test_every_refused_video_path_gets_one_message_on_every_route(server, page_files):
    outside = page_files[5]
    names = ["../outside/secret.mp4", str(outside / "secret.mp4"), "out.mp4", "notes.txt", "absent.mp4",
             "", ".", "..", "sub/../../outside/secret.mp4", "clip.mp4\0.mp4", "/etc/passwd", "../features/walk.npy"]
    for name in names:
        file = httpx.get(f"{server.url}/v1/videos/file", params={"name": name}, timeout=30)
        assert (file.status_code, file.json()) == (404, {"error": VIDEO_REFUSED}), name
        extract = httpx.post(f"{server.url}/v1/videos/extract", json={"video": name}, timeout=30)
        assert (extract.status_code, extract.json()) == (404, {"error": VIDEO_REFUSED}), name
    for path in ("/v1/videos/file?name=..%2Foutside%2Fsecret.mp4", "/v1/videos/file?name=%2e%2e/outside/secret.mp4",
                 "/v1/videos/file", "/v1/videos/file?name=clip.mp4%00"):
        assert raw_get(server, path) == (404, f'{{"error": "{VIDEO_REFUSED}"}}'.encode()), path
    for bad in ({"video": 3}, {"video": ["clip.mp4"]}, {"video": None}):
        response = httpx.post(f"{server.url}/v1/videos/extract", json=bad, timeout=30)
        assert (response.status_code, response.json()) == (404, {"error": VIDEO_REFUSED}), bad
    results = ground(server, *({"video": name, "query": "a person runs"} for name in names if name))
    assert all(r["error"] == VIDEO_REFUSED for r in results), results
    features = ground(server, {"features": "link.npy", "query": "a person runs", "duration": 3.0},
                      {"features": "../outside/secret.npy", "query": "a person runs", "duration": 3.0})
    assert [r["error"] for r in features] == [PathRefused.MESSAGE] * 2


def test_a_video_is_extracted_once_with_progress_and_grounds_as_the_engine_does(server, page_files):
    ckpt, i3d, _, _, videos, _ = page_files
    statuses = []
    while not statuses or statuses[-1]["status"] not in ("ready", "failed"):
        response = httpx.post(f"{server.url}/v1/videos/extract", json={"video": "clip.mp4"}, timeout=30)
        assert response.status_code == 200
        statuses.append(response.json())
        time.sleep(0.05)
    assert statuses[-1] == {"video": "clip.mp4", "status": "ready", "progress": 1.0}
    progress = [s["progress"] for s in statuses]
    assert progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    listed = httpx.get(f"{server.url}/v1/videos", timeout=60).json()["videos"][0]["features"]
    assert listed == {"status": "ready", "progress": 1.0}

    from engine.video.decode import probe
    from engine.video.extract import make_extractor

    video = videos / "clip.mp4"
    features, duration = make_extractor(i3d, "charades", device="cpu").extract(video), probe(video).duration
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu", backend="reference")
    queries = [("a person opens the door", 1, None), ("someone sits down", 3, None), ("walks away", 4, 0.3)]
    served = ground(server, *({"video": "clip.mp4", "query": q, "top_k": k, **({"nms": n} if n else {})}
                              for q, k, n in queries),
                    {"video": "clip.mp4", "query": "walks away", "duration": 2.0})
    expected = engine.ground([GroundingRequest(features, q, duration, id=i, top_k=k, nms=n)
                              for i, (q, k, n) in enumerate(queries)] +
                             [GroundingRequest(features, "walks away", 2.0, id=3)])
    for got, want in zip(served, expected):
        want = want.to_json()
        assert got.keys() == want.keys()
        assert [got[k] for k in ("id", "start", "end", "start_index", "end_index")] == \
               [want[k] for k in ("id", "start", "end", "start_index", "end_index")]
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)
        for g, w in zip(got.get("moments", []), want.get("moments", [])):
            assert (g["start"], g["end"]) == (w["start"], w["end"])
    assert [len(r.get("moments", [])) for r in served] == [0, 3, len(expected[2].moments), 0]


def test_an_unusable_video_is_that_requests_error_naming_it_as_given(page_files, tmp_path):
    ckpt, i3d, root, durations, videos, _ = page_files
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    args = page_server_args(page_files)
    args[args.index("--videos") + 1] = str(folder)
    with ServerProcess(args) as proc:
        listing = httpx.get(f"{proc.url}/v1/videos", timeout=60).json()["videos"]
        assert [(v["name"], v["duration"]) for v in listing] == [("broken.mp4", None)]
        (result,) = ground(proc, {"video": "broken.mp4", "query": "a person runs"})
        assert result["error"].startswith("video broken.mp4: not a readable video file"), result
        assert str(folder) not in result["error"]
        status = httpx.post(f"{proc.url}/v1/videos/extract", json={"video": "broken.mp4"}, timeout=30).json()
        assert status["status"] == "failed" and status["error"] == result["error"]


def test_with_a_key_every_page_route_of_the_api_needs_it(page_files):
    with ServerProcess(page_server_args(page_files, "--api-key-env", "SEQPAN_PAGE_KEY"),
                       env={"SEQPAN_PAGE_KEY": "k3y"}) as proc:
        assert httpx.get(f"{proc.url}/", timeout=10).status_code == 200  # the page itself asks for the key
        assert httpx.get(f"{proc.url}/v1/videos", timeout=10).status_code == 401
        assert httpx.post(f"{proc.url}/v1/videos/extract", json={"video": "clip.mp4"}, timeout=10).status_code == 401
        assert httpx.get(f"{proc.url}/v1/videos/file?name=clip.mp4", timeout=10).status_code == 401
        wrong = httpx.get(f"{proc.url}/v1/videos/file?name=clip.mp4&token=00", timeout=10)
        assert wrong.status_code == 401
        listing = httpx.get(f"{proc.url}/v1/videos", headers={"Authorization": "Bearer k3y"}, timeout=60).json()
        url = listing["videos"][0]["url"]
        assert url.startswith("/v1/videos/file?name=clip.mp4&token=")
        data = (page_files[4] / "clip.mp4").read_bytes()
        assert httpx.get(f"{proc.url}{url}", timeout=30).content == data  # the token opens that video
        token = url.split("token=")[1]
        other = httpx.get(f"{proc.url}/v1/videos/file?name={quote('out.mp4')}&token={token}", timeout=10)
        assert other.status_code == 401  # and no other name


@pytest.mark.parametrize("args, message", [
    (["--videos", "{videos}"], "--videos and --i3d go together"),
    (["--i3d", "{i3d}"], "--videos and --i3d go together"),
    (["--videos", "{videos}/clip.mp4", "--i3d", "{i3d}"], "--videos is not a folder"),
    (["--videos", "{videos}", "--i3d", "{videos}/absent.pt"], "--i3d weights not found"),
    (["--videos", "{videos}", "--i3d", "{videos}/notes.txt"], "notes.txt: not a PyTorch state dict"),
    (["--durations", "{durations}"], "--durations needs --features-root"),
    (["--features-root", "{root}", "--durations", "{videos}/notes.txt"], "notes.txt"),
])
def test_bad_page_options_are_one_line_errors(page_files, args, message):
    ckpt, i3d, root, durations, videos, _ = page_files
    names = {"videos": videos, "i3d": i3d, "durations": durations, "root": root}
    result = run_cli("serve", "--checkpoint", str(ckpt), "--port", "0", *(a.format(**names) for a in args))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
