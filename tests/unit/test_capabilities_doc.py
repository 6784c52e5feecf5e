"""docs/backends.md shows each backend's capabilities as the code declares them."""

from __future__ import annotations

from pathlib import Path

from conveyor.brokers.capabilities import DECLARED, Capability

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def _documented() -> dict[str, set[str]]:
    text = DOC.read_text()
    table = text.split("<!-- capabilities-table -->")[1].split("<!-- /capabilities-table -->")[0]
    header, _, *rows = [line for line in table.strip().splitlines()]
    schemes = [cell.strip(" `").removesuffix("://") for cell in header.split("|")[2:-1]]
    found: dict[str, set[str]] = {scheme: set() for scheme in schemes}
    for row in rows:
        capability, *cells = [cell.strip(" `") for cell in row.split("|")[1:-1]]
        for scheme, cell in zip(schemes, cells, strict=True):
            if cell == "yes":
                found[scheme].add(capability)
    return found


def test_the_capability_table_in_the_docs_matches_what_backends_declare() -> None:
    documented = _documented()
    listed = {scheme for scheme in DECLARED if scheme not in ("amqps", "rediss", "unix")}
    assert set(documented) == listed
    for scheme, capabilities in documented.items():
        assert capabilities == {c.value for c in DECLARED[scheme]}, scheme


def test_every_capability_has_a_row() -> None:
    text = DOC.read_text()
    assert all(f"| `{capability.value}` |" in text for capability in Capability)
