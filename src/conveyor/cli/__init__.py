"""The ``conveyor`` command. Errors are one clear line (a traceback only with --debug).

Exit codes: 0 success, 1 a ConveyorError, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from conveyor.app import App
from conveyor.errors import ConfigError, ConveyorError


def load_app(spec: str) -> App:
    """Import ``module:attribute`` and check it is an App."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{spec!r} is not MODULE:ATTRIBUTE; write e.g. myproject.tasks:app")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"cannot import {module_name!r} ({error}); run from the project directory or fix "
            "PYTHONPATH"
        ) from error
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} is {type(app).__name__}, not a conveyor App")
    return app


def parser() -> argparse.ArgumentParser:
    from conveyor.cli import worker

    root = argparse.ArgumentParser(prog="conveyor", description=__doc__)
    root.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = root.add_subparsers(dest="command", required=True)
    worker.add_parser(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        code: int = arguments.handler(arguments)
        return code
    except KeyboardInterrupt:
        return 130
    except ConveyorError as error:
        if arguments.debug:
            raise
        print(f"conveyor: error: {error}", file=sys.stderr)
        return 1
