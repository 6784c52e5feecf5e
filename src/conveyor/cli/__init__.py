"""The ``conveyor`` command. Errors are one clear line (a traceback only with --debug).

Exit codes: 0 success, 1 a ConveyorError, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from conveyor.app import App
from conveyor.cli.common import UsageError
from conveyor.errors import ConfigError, ConveyorError
from conveyor.settings import mask_secrets
from conveyor.version import __version__

# Each module under conveyor.cli with an ``add_parser(commands)``, in the order of --help.
COMMANDS = (
    "worker",
    "serve",
    "queues",
    "exchanges",
    "topics",
    "groups",
    "messages",
    "consume",
    "dlq",
    "jobs",
    "tools",
)


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
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(
                f"cannot import {module_name!r} ({error}); run from the project directory or "
                "fix PYTHONPATH"
            ) from error
        raise _failed_import(module_name, error) from error
    except Exception as error:
        raise _failed_import(module_name, error) from error
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigError(f"{spec!r} is {type(app).__name__}, not a conveyor App")
    return app


def _failed_import(module_name: str, error: BaseException) -> ConfigError:
    """The module was found, and failed as it ran: say where, not to fix PYTHONPATH."""
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        where = f" at {error.filename}:{error.lineno}"
    else:
        frames = traceback.extract_tb(error.__traceback__)
        inside = [frame for frame in frames if "importlib" not in frame.filename]
        if inside:
            where = f" at {inside[-1].filename}:{inside[-1].lineno}"
    return ConfigError(
        f"importing {module_name!r} failed{where}: {type(error).__name__}: {error} "
        "(--debug shows the traceback)"
    )


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``conveyor: error: ... (see ... --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"conveyor: error: {mask_secrets(message)} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="conveyor", description=__doc__)
    root.add_argument("--debug", action="store_true", help="show tracebacks")
    root.add_argument("--version", action="version", version=f"conveyor {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"conveyor.cli.{name}").add_parser(commands)
    return root


def run() -> int:
    """The ``conveyor`` command, in a process of its own.

    Ctrl-C is SIGINT raising KeyboardInterrupt, which a process started in the background
    by a shell (or by anything that ignores SIGINT) would otherwise inherit as ignored, and
    ``conveyor consume`` or ``conveyor logs`` would not stop.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    root = parser()
    arguments, extra = root.parse_known_args(argv)
    if extra and not getattr(arguments, "passthrough", False):
        root.error(f"unrecognized arguments: {' '.join(extra)}")
    arguments.extra = extra
    try:
        code: int = arguments.handler(arguments)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `conveyor consume ... | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as error:
        if arguments.debug:
            raise
        print(f"conveyor: error: {mask_secrets(str(error))}", file=sys.stderr)
        return 2
    except ConveyorError as error:
        if arguments.debug:
            raise
        print(f"conveyor: error: {mask_secrets(str(error))}", file=sys.stderr)
        return 1
