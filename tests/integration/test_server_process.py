"""``python -m conveyor serve`` as a real process, answering real HTTP requests."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conveyor.app import App
from tests.integration.server_support import AUTH, TOKEN, Metrics, error_of

ROOT = Path(__file__).resolve().parents[2]
URL_VARIABLE = "CONVEYOR_TEST_SERVE_URL"

served = App(os.environ.get(URL_VARIABLE, "memory://"))


@served.task(name="thumbnail")
def thumbnail(image: str, width: int = 100) -> str:
    return f"{image}@{width}"


def serve_is_registered() -> bool:
    from conveyor.cli import parser

    return any(
        isinstance(action, argparse._SubParsersAction) and "serve" in action.choices
        for action in parser()._actions
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"conveyor serve exited: {process.communicate()[1].decode()}")
        try:
            httpx.get(f"{base}/health", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail("conveyor serve did not answer within 20 s")


def test_conveyor_serve_answers_real_http_requests(tmp_path: Path) -> None:
    if not serve_is_registered():
        pytest.skip("`conveyor serve` is not registered in conveyor.cli yet")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    environ = {key: value for key, value in os.environ.items() if key != "CONVEYOR_API_TOKEN"}
    environ[URL_VARIABLE] = f"sqlite:///{tmp_path / 'conveyor.db'}"
    environ["CONVEYOR_API_MAX_BODY_BYTES"] = "4096"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "tests.integration.test_server_process:served",
         "--port", str(port), "--token-file", str(token_file), "--log-level", "warning"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        with httpx.Client(base_url=base, timeout=10) as client:
            health = client.get("/health").json()
            assert (health["status"], health["reasons"]) == ("ok", [])
            call = {"task": "thumbnail", "args": ["cat.png"]}
            error_of(client.post("/api/jobs", json=call), 401)
            accepted = client.post("/api/jobs", json=call, headers=AUTH)
            assert accepted.status_code == 202
            job = client.get(accepted.headers["location"]).json()
            assert (job["task"], job["status"]) == ("thumbnail", "queued")
            metrics = Metrics(client.get("/metrics").text)
            assert metrics.get("conveyor_queue_messages_ready", queue="default") == 1
            assert metrics.get("conveyor_jobs", task="thumbnail", status="queued") == 1
            too_big = client.post("/api/jobs", json={**call, "args": ["x" * 5000]}, headers=AUTH)
            error_of(too_big, 413)
            assert "/api/jobs" in client.get("/openapi.json").json()["paths"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr.decode()
