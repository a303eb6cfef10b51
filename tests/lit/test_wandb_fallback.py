"""W&B: the probe asks wandb's own settings which host it will use; any failure to start a run means offline."""

from __future__ import annotations

import socket
import threading

import pytest

from deco.lit import launch


@pytest.fixture
def keyed(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_probe_uses_the_host_from_wandbs_settings_file(keyed, tmp_path, monkeypatch):
    (tmp_path / "wandb_config").mkdir()
    (tmp_path / "wandb_config" / "settings").write_text("[default]\nbase_url = https://wandb.example.org:8443\n")
    assert launch.wandb_base_url() == "https://wandb.example.org:8443"
    monkeypatch.setenv("WANDB_BASE_URL", "http://10.1.2.3:8080")  # the variable wins, as in wandb
    assert launch.wandb_base_url() == "http://10.1.2.3:8080"
    seen = []

    def fake_connect(address, timeout):
        seen.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    assert launch.wandb_reachable(timeout_s=1.5) is False
    assert seen == [(("10.1.2.3", 8080), 1.5)]


def test_default_host_is_wandbs_default_not_a_hard_coded_one(keyed):
    from wandb.sdk.lib import urls

    assert launch.wandb_base_url() == urls.DEFAULT_BASE_URL


def test_endpoint_that_accepts_tcp_but_is_not_wandb_falls_back_offline(keyed, tmp_path, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            except OSError:
                pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        logger = launch.wandb_logger(project="deco-test", save_dir=str(tmp_path), init_timeout_s=20.0)
        logger.log_metrics({"train/loss": 1.0}, step=1)
        logger.experiment.finish()
    finally:
        server.close()
    assert logger._offline
    assert list((tmp_path / "wandb").glob("offline-run-*"))
