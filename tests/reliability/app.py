"""The App the reliability tests' worker processes serve: ``tests.reliability.app:app``.

The broker URL comes from ``CONVEYOR_TEST_URL`` and the run log from ``CONVEYOR_TEST_LOG``
(see tests/reliability/tasks.py).
"""

from __future__ import annotations

import os

from conveyor.app import App
from tests.reliability.tasks import LEASE_TIMEOUT, URL_ENV, register

app = App(os.environ[URL_ENV], lease_timeout=LEASE_TIMEOUT)
tasks = register(app)
