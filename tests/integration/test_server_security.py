"""Tokens, the body limit, error shapes, and settings from flags and the environment."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import pytest

from conveyor import QueueSpec
from conveyor.app import App
from conveyor.cli import serve as serve_command
from conveyor.errors import ConfigError
from conveyor.server import AlertThresholds, ServerSettings, create_server
from conveyor.server.settings import is_loopback
from tests.integration.server_support import AUTH, TOKEN, error_of, serve

PUBLISH = ("/api/queues/q/messages", {"body": "x"})


@pytest.fixture
async def queue_app(app: App) -> App:
    await (await app.abroker()).declare_queue(QueueSpec("q"))
    return app


async def test_mutating_calls_need_the_right_token(queue_app: App) -> None:
    path, body = PUBLISH
    async with serve(queue_app, authorized=False) as client:
        missing = await client.post(path, json=body)
        wrong = await client.post(path, json=body, headers={"Authorization": "Bearer nope"})
        basic = await client.post(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        deleting = await client.delete("/api/queues/q/dead-letters")
        reading = await client.get("/api/queues/q")
        right = await client.post(path, json=body, headers=AUTH)
    error = error_of(missing, 401)
    assert error["type"] == "Unauthorized"
    assert "Authorization: Bearer" in error["message"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert error_of(wrong, 401)["message"] == "the API token is wrong"
    error_of(basic, 401)
    error_of(deleting, 401)
    assert reading.status_code == 200
    assert right.status_code == 202
    assert (await (await queue_app.abroker()).queue_stats("q")).ready == 1


async def test_without_a_token_the_api_is_read_only(queue_app: App) -> None:
    path, body = PUBLISH
    async with serve(queue_app, token=None) as client:
        refused = await client.post(path, json=body, headers=AUTH)
        reading = await client.get("/api/queues")
    assert "CONVEYOR_API_TOKEN" in error_of(refused, 401)["message"]
    assert reading.status_code == 200


@pytest.mark.parametrize("path", ["/api/queues", "/metrics", "/health", "/openapi.json", "/docs"])
async def test_beyond_loopback_every_call_needs_the_token(app: App, path: str) -> None:
    async with serve(app, authorized=False, host="0.0.0.0") as client:
        error_of(await client.get(path), 401)
        assert (await client.get(path, headers=AUTH)).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_refuses_to_serve_beyond_loopback_without_a_token(app: App, host: str) -> None:
    with pytest.raises(ConfigError, match=f"refusing to listen on {host} without an API token"):
        create_server(app, ServerSettings(host=host))


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


async def test_bodies_over_the_limit_are_413(queue_app: App) -> None:
    path, _ = PUBLISH
    async with serve(queue_app, max_body_bytes=100) as client:
        declared = await client.post(path, json={"body": "x" * 200})

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"body": "'
            for _ in range(10):
                yield b"x" * 20
            yield b'"}'

        streamed = await client.post(
            path, content=chunks(), headers={"content-type": "application/json"}
        )
        fits = await client.post(path, json={"body": "x" * 50})
    assert "100 bytes" in error_of(declared, 413)["message"]
    assert error_of(streamed, 413)["type"] == "PayloadTooLarge"
    assert fits.status_code == 202
    assert (await (await queue_app.abroker()).queue_stats("q")).ready == 1


async def test_every_error_is_json(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = await app.abroker()

    async def broken() -> list[QueueSpec]:
        raise RuntimeError("disk on fire")

    async with serve(app, raise_errors=False) as client:
        no_route = await client.get("/api/nothing-here")
        wrong_method = await client.put("/api/queues")
        monkeypatch.setattr(broker, "list_queues", broken)
        crashed = await client.get("/api/queues")
    assert "GET /api/nothing-here" in error_of(no_route, 404)["message"]
    error = error_of(wrong_method, 405)
    assert (error["type"], error["message"]) == (
        "MethodNotAllowed",
        "PUT /api/queues is not allowed; /api/queues takes GET",
    )
    error = error_of(crashed, 500)
    assert error["type"] == "InternalError"
    assert "disk on fire" not in error["message"]


def test_settings_come_from_flags_then_environment(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(" from-file \n")
    environ = {
        "CONVEYOR_API_TOKEN": "from-env",
        "CONVEYOR_API_MAX_BODY_BYTES": "2048",
        "CONVEYOR_ALERT_QUEUE_DEPTH": "50",
        "CONVEYOR_ALERT_ERROR_RATE": "0.2",
    }
    parser = argparse.ArgumentParser()
    serve_command.add_parser(parser.add_subparsers())
    arguments = parser.parse_args(["serve", "m:app", "--alert-queue-depth", "7", "--port", "9"])
    settings = serve_command.settings_from(arguments, environ)
    assert (settings.host, settings.port, settings.token) == ("127.0.0.1", 9, "from-env")
    assert settings.max_body_bytes == 2048
    assert settings.alerts == AlertThresholds(queue_depth=7, error_rate=0.2)
    with_file = parser.parse_args(["serve", "m:app", "--token-file", str(token_file)])
    assert serve_command.settings_from(with_file, environ).token == "from-file"
    assert serve_command.settings_from(with_file, {}).alerts == AlertThresholds()


@pytest.mark.parametrize(
    ("arguments", "environ", "message"),
    [
        (["--host", "0.0.0.0"], {}, "refusing to listen on 0.0.0.0 without an API token"),
        (["--token-file", "/no/such/file"], {}, "cannot read the token file /no/such/file"),
        ([], {"CONVEYOR_ALERT_CONSUMER_LAG": "lots"}, "CONVEYOR_ALERT_CONSUMER_LAG must be"),
        (["--alert-error-rate", "-1"], {}, "error_rate must be >= 0"),
        ([], {"CONVEYOR_API_TOKEN": "  "}, "the API token is empty"),
    ],
)
def test_bad_settings_fail_with_one_clear_message(
    arguments: list[str], environ: dict[str, str], message: str
) -> None:
    parser = argparse.ArgumentParser()
    serve_command.add_parser(parser.add_subparsers())
    parsed = parser.parse_args(["serve", "tests.integration.process_tasks:app", *arguments])
    with pytest.raises(ConfigError, match=message):
        serve_command.settings_from(parsed, environ)
