"""The App the browser tests serve, and a launcher for when ``conveyor serve`` does not
mount the console yet: ``python -m tests.browser.console_server --port N --token-file F``.

The broker URL comes from CONVEYOR_BROWSER_URL, so the server process and the test share
one SQLite file.
"""

from __future__ import annotations

import argparse
import os

from conveyor.app import App
from conveyor.errors import PermanentError

URL_VARIABLE = "CONVEYOR_BROWSER_URL"
SCRIPT = "<script>alert('console')</script>"


def make_app(url: str) -> App:
    app = App(url, lease_timeout=5.0)

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> str:
        return f"sent to {to}"

    @app.task(name="mail.bounce", queue="mail", max_retries=0)
    def bounce(to: str) -> None:
        raise PermanentError(f"{SCRIPT} {to} does not exist")

    return app


served = make_app(os.environ.get(URL_VARIABLE, "memory://"))


def main() -> None:
    import uvicorn

    from conveyor.server import ServerSettings, create_server
    from conveyor.server.console import mount_console
    from conveyor.server.settings import read_token_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True)
    arguments = parser.parse_args()
    settings = ServerSettings(port=arguments.port, token=read_token_file(arguments.token_file))
    server = create_server(served, settings)
    mount_console(server, served, settings)
    uvicorn.run(server, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
