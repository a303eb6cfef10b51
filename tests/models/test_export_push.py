"""`deco.export ... push_to=<repo id>`: the exported directory reaches the hub as one commit, byte for byte.

The hub is faked at the HTTP layer: huggingface_hub's httpx client gets a MockTransport that answers the
three calls an upload of small files makes (create repo, preupload -> "regular" upload mode, commit) and
records what was sent; nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from huggingface_hub import set_client_factory

from deco.models.formats.push import push_folder

ENDPOINT = "https://hub.invalid"


class FakeHub:
    def __init__(self, refuse: bool = False):
        self.requests, self.created, self.files, self.refuse = [], [], {}, refuse

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        assert request.headers.get("authorization") == "Bearer hf_test_token"
        if self.refuse:
            return httpx.Response(403, json={"error": "You don't have the rights to create a model here"})
        if path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            base = f"{request.url.scheme}://{request.url.host}"
            return httpx.Response(200, json={"url": f"{base}/{body['organization']}/{body['name']}"})
        if path.endswith("/preupload/main"):
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
        if path.endswith("/commit/main"):
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "header":
                    self.summary = item["value"]["summary"]
            base = f"{request.url.scheme}://{request.url.host}"
            return httpx.Response(200, json={"commitUrl": f"{base}/me/deco-test/commit/abc123",
                                             "commitOid": "abc123" * 6 + "abcd"})
        return httpx.Response(404, json={"error": f"unexpected {request.method} {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    hubs = []

    def install(refuse=False):
        hub = FakeHub(refuse)
        hubs.append(hub)
        set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(hub)))
        return hub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield install
    set_client_factory(lambda: httpx.Client())


def test_export_push_uploads_every_file(tiny_ckpt, tmp_path, fake_hub):
    from deco.export import export

    hub = fake_hub()
    out = export(str(tiny_ckpt), str(tmp_path / "exported"), "deco")
    url = push_folder(out, "me/deco-test", endpoint=ENDPOINT)
    assert url == f"{ENDPOINT}/me/deco-test/commit/abc123"
    assert [(c["organization"], c["name"]) for c in hub.created] == [("me", "deco-test")]
    assert hub.created[0]["visibility"] == "private"
    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(hub.files) == set(local) and "config.json" in local
    assert all(hub.files[name] == data for name, data in local.items())
    assert hub.summary == "deco export of exported"


def test_push_errors_name_the_repo(tmp_path, fake_hub):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a hub repo id"):
        push_folder(tmp_path, "no-namespace", endpoint=ENDPOINT)
    with pytest.raises(FileNotFoundError, match="nothing to push"):
        push_folder(tmp_path / "missing", "me/x", endpoint=ENDPOINT)
    fake_hub(refuse=True)
    with pytest.raises(ValueError, match="push_to=me/x: the hub refused"):
        push_folder(tmp_path, "me/x", endpoint=ENDPOINT)


def test_export_cli_push_to(tiny_ckpt, tmp_path, fake_hub):
    """`python -m deco.export ckpt=... out_dir=... push_to=me/deco-cli`: exported, then pushed (the default endpoint
    is answered by the fake transport too)."""
    from conftest import compose_config

    from deco.export import run

    hub = fake_hub()
    cfg = compose_config("export", [f"ckpt={tiny_ckpt}", f"out_dir={tmp_path / 'out'}", "push_to=me/deco-cli"],
                         tmp_path / "run")
    out = run(cfg)
    assert ("POST", "/api/repos/create") in hub.requests
    assert set(hub.files) == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    bad = compose_config("export", [f"ckpt={tiny_ckpt}", f"out_dir={tmp_path / 'out2'}", "push_to=nonamespace"],
                         tmp_path / "run2")
    with pytest.raises(SystemExit, match="deco.export: push_to='nonamespace' is not a hub repo id"):
        run(bad)
