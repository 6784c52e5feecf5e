"""Capabilities: what a backend lacks it refuses by name; what it declares, this suite tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from conveyor import Broker, Capability
from conveyor.errors import NotSupported

SUITE = Path(__file__).parent


async def test_undeclared_capabilities_raise_not_supported_naming_them(broker: Broker) -> None:
    missing = [capability for capability in Capability if capability not in broker.capabilities]

    for capability in missing:
        with pytest.raises(NotSupported) as raised:
            broker.require(capability)
        assert raised.value.capability == capability.value
        assert capability.value in str(raised.value)
        assert all(isinstance(alternative, str) for alternative in raised.value.alternatives)


async def test_require_names_the_first_missing_capability_among_several(broker: Broker) -> None:
    declared = sorted(broker.capabilities)
    missing = [capability for capability in Capability if capability not in broker.capabilities]
    broker.require(*declared)  # everything declared passes
    if not missing:
        return

    with pytest.raises(NotSupported) as raised:
        broker.require(*declared, *missing)

    assert raised.value.capability == missing[0].value


def _needs_of_collected_tests(session: pytest.Session) -> set[Capability]:
    """Capabilities named by the ``needs`` markers of this suite's tests in the session."""
    needed: set[Capability] = set()
    for item in session.items:
        if item.path.parent == SUITE:
            for marker in item.iter_markers("needs"):
                needed.update(marker.args)
    return needed


def _needs_of_suite_modules() -> set[Capability]:
    """The same, read from every suite module: a run of one file or ``-k`` sees all tests."""
    needed: set[Capability] = set()
    for path in sorted(SUITE.glob("test_*.py")):
        module = importlib.import_module(f"tests.conformance.{path.stem}")
        module_marks = getattr(module, "pytestmark", [])  # a mark or a list of them
        marks = list(module_marks) if isinstance(module_marks, list) else [module_marks]
        for attribute, value in vars(module).items():
            if attribute.startswith("test_") and callable(value):
                marks.extend(getattr(value, "pytestmark", []))
        for mark in marks:
            if mark.name == "needs":
                needed.update(mark.args)
    return needed


async def test_every_declared_capability_is_exercised_by_the_suite(
    broker: Broker, request: pytest.FixtureRequest
) -> None:
    needed = _needs_of_collected_tests(request.session) | _needs_of_suite_modules()

    untested = sorted(capability.value for capability in broker.capabilities - needed)

    assert not untested, f"{broker.scheme} declares {untested} but no conformance test needs them"
