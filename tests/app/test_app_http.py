"""The explorer over HTTP on 127.0.0.1 as any client can drive it (issue 29, items 2-3; issue 28, item 4).

Only images the page received as uploads are read: a raw API payload naming a server path (with or without
Gradio's file marker) gets one message whatever the file, a FIFO (what `/dev/stdin` is) never blocks the
worker, the next normal request is answered, uploads over `max_upload_mb` are refused by Gradio, a request
stops waiting for a busy model at its time limit, and the embedded default says on the page that its
projector is untrained.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import compose_config
from PIL import Image

from deco.app import session
from deco.app.__main__ import UNTRAINED, load_slots, serve
from deco.app.ui import NOT_UPLOADED, ask, uploaded_path



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out = tmp_path_factory.mktemp("app")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    port = _free_port()
    cfg = compose_config("app", ["model=tiny_scratch", "query_num=16", "device=cpu", f"port={port}",
                                 "max_new_tokens=2", "max_upload_mb=1", "request_time_s=60"], out)
    demo = serve(cfg, block=False)
    yield demo, f"http://127.0.0.1:{port}"
    demo.close()


def _submit(url: str, image) -> str:
    """Queue one raw API call (what curl can send: no client-side upload); returns its event id."""
    body = json.dumps({"data": [image, "What is it?", "red", "rawattn", "none"]}).encode()
    request = urllib.request.Request(f"{url}/gradio_api/call/on_ask", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]


def _result(url: str, event: str, timeout: float = 60) -> str | None:
    """The status line of a queued call (the first output), read from its event stream; None: Gradio refused it."""
    stream = urllib.request.urlopen(f"{url}/gradio_api/call/on_ask/{event}", timeout=timeout).read().decode()
    lines = stream.splitlines()
    if "event: error" in lines:
        return None
    assert "event: complete" in lines, stream[:500]
    return json.loads(lines[lines.index("event: complete") + 1].removeprefix("data: "))[0]


def _upload(url: str, name: str, data: bytes):
    boundary = "deco-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def _picture(path):
    Image.new("RGB", (40, 24), (200, 20, 20)).save(path)
    return path


def test_server_paths_fifos_and_big_uploads_are_refused_and_the_next_request_answers(app, tmp_path):
    demo, url = app
    server_image = _picture(tmp_path / "server.png")  # exists on the server, never uploaded
    marker = {"_type": "gradio.FileData"}
    for path in (server_image, tmp_path / "missing.png", "/etc/passwd"):
        # without the file marker Gradio passes the record on: our check, the same words for every path
        assert _result(url, _submit(url, {"path": str(path)})) == f"**{NOT_UPLOADED}**"
        assert _result(url, _submit(url, {"path": str(path), "meta": marker})) is None  # Gradio's own refusal
    fifo = tmp_path / "stdin-like"
    os.mkfifo(fifo)
    started = time.monotonic()
    blocked = _submit(url, {"path": str(fifo)})
    (uploaded,) = _upload(url, "mine.png", _picture(tmp_path / "mine.png").read_bytes())
    normal = _submit(url, {"path": uploaded, "meta": marker})
    try:
        assert _result(url, normal).startswith("Image 40x24; 1 model(s) explained")
        assert _result(url, blocked) == f"**{NOT_UPLOADED}**"
    finally:
        threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True).start()  # frees an old worker
    assert time.monotonic() - started < 60
    with pytest.raises(urllib.error.HTTPError) as err:
        _upload(url, "big.png", b"\x89PNG" + os.urandom(2 * 2**20))  # max_upload_mb=1
    assert err.value.code == 413


def test_the_page_says_the_embedded_default_is_untrained(app):
    demo, url = app
    page = json.loads(urllib.request.urlopen(f"{url}/config", timeout=30).read())
    texts = [c.get("props", {}).get("value") for c in page["components"]]
    assert any(isinstance(t, str) and UNTRAINED in t and t.startswith("**Warning") for t in texts)


def test_upload_check_and_time_limit_without_a_server(tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    inside = _picture(uploads / "abc" / "ok.png")
    outside = _picture(tmp_path / "outside.png")
    (uploads / "abc" / "link.png").symlink_to(outside)  # a link out of the folder is not an upload
    assert uploaded_path({"path": str(inside)}, str(uploads), 2**20) == str(inside)
    assert uploaded_path(None, str(uploads), 2**20) is None
    for bad in (str(outside), str(uploads / "abc" / "link.png"), str(uploads / "abc"), str(uploads / "x.png"),
                "/dev/stdin", 7, ""):
        with pytest.raises(session.AppInputError, match="Upload the image through this page"):
            uploaded_path({"path": bad}, str(uploads), 2**20)
    with pytest.raises(session.AppInputError, match=r"the limit is 0 MB"):
        uploaded_path({"path": str(inside)}, str(uploads), 10)

    cfg = compose_config("app", ["model=tiny_scratch", "query_num=16", "device=cpu"], tmp_path / "out")
    (slot,) = load_slots(cfg)
    assert slot.note == UNTRAINED
    slot.lock.acquire()  # another request holds the model
    try:
        started = time.monotonic()
        message, [(view, info)] = ask([slot], str(inside), "q", "red", "rawattn", "none", 2, 64, time_limit=0.5)
        assert view is None and "busy with another request" in info
        assert time.monotonic() - started < 5
        _, [(view, info)] = ask([slot], str(inside), "q", "red", "rawattn", "none", 2, 64, time_limit=0.0)
        assert view is None and "passed its time limit (0 s)" in info
    finally:
        slot.lock.release()
