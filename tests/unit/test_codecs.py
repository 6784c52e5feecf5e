"""Typed task arguments: JSON both ways, errors that name the path, and round-trip properties."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NewType, Optional, TypeVar, Union
from uuid import UUID

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.codecs import ArgumentCodec, dumps, loads, to_json
from conveyor.errors import ConfigError, DecodeError, MessageError, ValidationError


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Shape(enum.Enum):
    POINT = (0, 0)


@dataclasses.dataclass
class Item:
    sku: str
    quantity: int = 1


@dataclasses.dataclass
class Order:
    items: list[Item]
    note: str | None = None
    tags: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Node:
    name: str
    children: list[Node] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Positive:
    value: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.value <= 0:
            raise ValueError("value must be positive")
        self.doubled = self.value * 2


class User(pydantic.BaseModel):
    name: str
    scores: list[int] = []


class Point(msgspec.Struct):
    x: int
    labels: list[str] = []


UserId = NewType("UserId", int)


def codec(function: Any) -> ArgumentCodec:
    return ArgumentCodec("demo", function)


def through_json(c: ArgumentCodec, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Encode a call, send it through bytes, and decode it as a worker would."""
    return c.decode(loads(dumps(c.encode(args, kwargs))))


def one(annotation: Any) -> ArgumentCodec:
    """A codec for a one-parameter task whose parameter ``x`` has ``annotation``."""

    def task(x):
        pass

    task.__annotations__ = {"x": annotation}
    return codec(task)


def roundtrip(annotation: Any, value: Any) -> tuple[Any, Any]:
    """(JSON form, decoded value) of ``value`` passed as an argument annotated ``annotation``."""
    c = one(annotation)
    payload = c.encode((value,), {})
    _, kwargs = c.decode(loads(dumps(payload)))
    return payload["x"], kwargs["x"]


def fails(c: ArgumentCodec, *args: Any, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        c.encode(args, kwargs)
    return caught.value


def refused(annotation: Any, value: Any) -> tuple[str, str]:
    """(field, problem) when ``value`` is encoded for ``annotation``."""
    error = fails(one(annotation), value)
    return error.field, error.problem


def refused_in_worker(annotation: Any, json_value: Any) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        one(annotation).decode({"x": json_value})
    return caught.value.field, caught.value.problem


# --- dumps / loads ---


def test_dumps_is_compact_utf8_json_and_loads_reverses_it() -> None:
    assert dumps({"a": [1, 2.5, None], "b": "é"}) == '{"a":[1,2.5,null],"b":"é"}'.encode()
    assert loads(dumps({"a": [1, 2.5, None], "b": "é"})) == {"a": [1, 2.5, None], "b": "é"}


def test_dumps_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        dumps(float("nan"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff{}", "not UTF-8 JSON.*can't decode byte 0xff"),
        (b'{"a": ', "not UTF-8 JSON.*Expecting value"),
        (b'{"a": NaN}', "contains NaN, which JSON does not allow"),
        (b"[Infinity]", "contains Infinity"),
    ],
)
def test_loads_raises_decode_error_on_a_bad_body(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        loads(data)


# --- every supported annotation, both ways ---


@pytest.mark.parametrize(
    ("annotation", "value", "json_value"),
    [
        (Any, {"a": [1, "x", None, True, 2.5]}, {"a": [1, "x", None, True, 2.5]}),
        (None, None, None),
        (type(None), None, None),
        (bool, True, True),
        (int, 7, 7),
        (float, 2.5, 2.5),
        (str, "hé", "hé"),
        (bytes, b"\x00\xff", "AP8="),
        (list[int], [1, 2], [1, 2]),
        (tuple[int, ...], (1, 2, 3), [1, 2, 3]),
        (tuple[int, str], (1, "a"), [1, "a"]),
        (tuple[()], (), []),
        (set[int], {3}, [3]),
        (frozenset[str], frozenset({"a"}), ["a"]),
        (dict[str, int], {"a": 1}, {"a": 1}),
        (Optional[int], None, None),  # noqa: UP045
        (int | None, 4, 4),
        (Union[int, str], "a", "a"),  # noqa: UP007
        (Literal["a", 1], 1, 1),
        (Color, Color.BLUE, "blue"),
        (Level, Level.HIGH, 2),
        (datetime, datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "2024-05-01T12:30:00+00:00"),
        (date, date(2024, 5, 1), "2024-05-01"),
        (time, time(12, 30, 15), "12:30:15"),
        (timedelta, timedelta(minutes=1, milliseconds=500), 60.5),
        (UUID, UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Decimal, Decimal("1.10"), "1.10"),
        (Item, Item("a", 2), {"sku": "a", "quantity": 2}),
        (User, User(name="ann", scores=[1]), {"name": "ann", "scores": [1]}),
        (Point, Point(1, ["a"]), {"x": 1, "labels": ["a"]}),
        (Annotated[int, "meta"], 5, 5),
        (UserId, UserId(5), 5),
        (Sequence[int], [1], [1]),
        (Mapping[str, int], {"a": 1}, {"a": 1}),
        (list, [1, "a"], [1, "a"]),
        (tuple, (1, "a"), [1, "a"]),
        (dict, {"a": [1]}, {"a": [1]}),
        (dict[Color, int], {Color.RED: 1}, {"red": 1}),
        (object, 3, 3),
    ],
)
def test_each_supported_annotation_travels_both_ways(
    annotation: Any, value: Any, json_value: Any
) -> None:
    encoded, decoded = roundtrip(annotation, value)
    assert encoded == json_value
    assert decoded == value
    assert type(decoded) is type(value)


def test_exact_type_members_of_a_union_win() -> None:
    assert roundtrip(int | float, 3) == (3, 3)
    assert roundtrip(int | float, 3.0) == (3.0, 3.0)
    assert roundtrip(bool | int, True) == (True, True)
    assert roundtrip(float | str, 3) == (3.0, 3.0)  # no exact member: the first that accepts
    assert roundtrip(Item | Order, {"items": []}) == (
        {"items": [], "note": None, "tags": []},
        Order([]),
    )


def test_union_of_text_forms_decodes_as_the_first_member_that_parses() -> None:
    c = one(datetime | str)
    assert c.decode({"x": "2024-05-01"})[1]["x"] == datetime(2024, 5, 1)
    assert c.decode({"x": "soon"})[1]["x"] == "soon"


def test_int_takes_integral_floats_and_int_subclasses_and_float_takes_ints() -> None:
    assert roundtrip(int, 3.0) == (3, 3)
    assert roundtrip(int, Level.LOW) == (1, 1)
    assert roundtrip(float, 2) == (2.0, 2.0)
    assert roundtrip(timedelta, timedelta(seconds=2))[1] == timedelta(seconds=2)
    assert one(timedelta).decode({"x": 3})[1]["x"] == timedelta(seconds=3)


def test_enums_and_structured_types_accept_their_json_form_when_sent() -> None:
    assert roundtrip(Color, "red") == ("red", Color.RED)
    assert roundtrip(Item, {"sku": "a"}) == ({"sku": "a", "quantity": 1}, Item("a"))
    assert roundtrip(User, {"name": "ann"}) == ({"name": "ann", "scores": []}, User(name="ann"))
    assert roundtrip(Point, {"x": 1}) == ({"x": 1, "labels": []}, Point(1))
    nested = {"items": [{"sku": "a", "quantity": 3}], "tags": ["t"]}
    assert roundtrip(Order, nested)[1] == Order([Item("a", 3)], tags={"t"})


def test_decoding_passes_python_values_through() -> None:
    order = Order([Item("a")])
    assert one(Order).decode({"x": order})[1]["x"] is order
    assert one(bytes).decode({"x": b"raw"})[1]["x"] == b"raw"
    assert one(date).decode({"x": date(2024, 1, 1)})[1]["x"] == date(2024, 1, 1)
    assert one(Color).decode({"x": Color.RED})[1]["x"] is Color.RED
    assert one(User).decode({"x": User(name="a")})[1]["x"] == User(name="a")


def test_recursive_dataclasses_travel() -> None:
    tree = Node("root", [Node("a", [Node("b")]), Node("c")])
    encoded, decoded = roundtrip(Node, tree)
    assert encoded["children"][0]["children"][0] == {"name": "b", "children": []}
    assert decoded == tree


def test_dataclass_fields_set_after_init_are_not_sent() -> None:
    assert roundtrip(Positive, Positive(2)) == ({"value": 2}, Positive(2))


# --- binding: positional-only, keyword-only, *args, **kwargs, defaults ---


def test_signature_kinds_are_restored_for_the_call() -> None:
    def task(a: int, /, b: str, *rest: float, c: bool = False, **extra: int) -> None:
        pass

    c = codec(task)
    payload = c.encode((1, "x", 2.5, 3), {"extra_one": 4})
    assert payload == {"a": 1, "b": "x", "rest": [2.5, 3.0], "c": False, "extra": {"extra_one": 4}}
    args, kwargs = c.decode(loads(dumps(payload)))
    assert args == (1, "x", 2.5, 3.0)
    assert kwargs == {"c": False, "extra_one": 4}
    assert c.decode({"a": 1, "b": "x"}) == ((1, "x"), {"c": False})


def test_defaults_are_applied_when_sending_and_when_missing_in_the_worker() -> None:
    def task(a: int, b: int = 2, *, c: str = "c", d: list[int] | None = None) -> None:
        pass

    c = codec(task)
    assert c.encode((1,), {}) == {"a": 1, "b": 2, "c": "c", "d": None}
    assert c.encode((), {"a": 1, "c": "z"}) == {"a": 1, "b": 2, "c": "z", "d": None}
    assert c.decode({"a": 1}) == ((), {"a": 1, "b": 2, "c": "c", "d": None})
    assert through_json(c, 1, 5, d=[1]) == ((), {"a": 1, "b": 5, "c": "c", "d": [1]})


def test_unannotated_parameters_just_need_to_be_json() -> None:
    def task(a, b=None):
        pass

    c = codec(task)
    assert through_json(c, (1, [2.5]), b={"k": True}) == ((), {"a": [1, [2.5]], "b": {"k": True}})
    assert fails(c, {"k": Path("/")}).field == "a.k"


def test_a_task_without_parameters_takes_an_empty_object() -> None:
    def task() -> None:
        pass

    assert codec(task).encode((), {}) == {}
    assert codec(task).decode({}) == ((), {})


def test_string_annotations_are_resolved() -> None:
    def task(order: Order, when: datetime) -> None:
        pass

    assert task.__annotations__["order"] == "Order"  # this module uses postponed annotations
    order, when = Order([Item("a")]), datetime(2024, 1, 1)
    assert through_json(codec(task), order, when) == ((), {"order": order, "when": when})


# --- error messages ---


def test_wrong_type_names_the_argument_expected_and_given() -> None:
    def task(count: int) -> None:
        pass

    error = fails(codec(task), "x")
    assert (error.task, error.field) == ("demo", "count")
    assert str(error).startswith("task 'demo': argument 'count' expected int, got str 'x'")


def test_errors_name_the_path_to_the_value() -> None:
    def task(order: Order) -> None:
        pass

    c = codec(task)
    order = Order([Item("a"), Item("b"), Item(5)])  # type: ignore[arg-type]
    error = fails(c, order)
    assert (error.field, error.problem) == ("order.items[2].sku", "expected str, got int 5")
    error = fails(c, {"items": [{"sku": "a", "quantity": "many"}]})
    assert error.field == "order.items[0].quantity"
    with pytest.raises(ValidationError) as caught:
        c.decode({"order": {"items": [{"sku": "a"}], "tags": ["x", 1]}})
    assert caught.value.field == "order.tags[1]"


@pytest.mark.parametrize(
    ("annotation", "value", "field", "problem"),
    [
        (bool, 1, "x", "expected bool, got int 1"),
        (int, True, "x", "expected int, got bool True"),
        (int, 2.5, "x", "expected int, got float 2.5"),
        (float, True, "x", "expected float, got bool True"),
        (float, float("inf"), "x", "is inf, which JSON cannot carry"),
        (str, b"x", "x", "expected str, got bytes b'x'"),
        (None, 0, "x", "expected None, got int 0"),
        (bytes, "AP8=", "x", "expected bytes, got str 'AP8='"),
        (
            date,
            datetime(2024, 1, 1),
            "x",
            "expected date, got datetime " + repr(datetime(2024, 1, 1)),
        ),
        (timedelta, 5, "x", "expected timedelta, got int 5"),
        (list[int], "ab", "x", "expected list[int], got str 'ab'"),
        (list[int], [1, "b"], "x[1]", "expected int, got str 'b'"),
        (tuple[int, str], (1,), "x", "expected tuple[int, str], got tuple (1,)"),
        (tuple[int, str], (1, 2), "x[1]", "expected str, got int 2"),
        (set[int], {"a": 1}, "x", "expected set[int], got dict {'a': 1}"),
        (dict[str, int], [1], "x", "expected dict[str, int], got list [1]"),
        (dict[str, int], {"a": "b"}, "x.a", "expected int, got str 'b'"),
        (dict[str, int], {1: 1}, "x.1", "expected str, got int 1"),
        (Literal["a", "b"], "c", "x", "expected one of 'a', 'b', got str 'c'"),
        (Literal[1], True, "x", "expected one of 1, got bool True"),
        (Literal[1], [1], "x", "expected one of 1, got list [1]"),
        (Color, "green", "x", "expected one of 'red', 'blue', got str 'green'"),
        (int | None, "x", "x", "expected int | None, got str 'x'"),
        (list[int] | None, [1, "x"], "x[1]", "expected int, got str 'x'"),
        (Item, 5, "x", "expected Item, got int 5"),
        (Item, {"quantity": 1}, "x.sku", "is missing (required by Item)"),
        (Item, {"sku": "a", "colour": "red"}, "x.colour", "is not a field of Item"),
        (Positive, {"value": -1}, "x", "was refused by Positive: value must be positive"),
        (
            Any,
            Path("/"),
            "x",
            "expected a JSON value (annotate the parameter to send other types), "
            f"got {type(Path('/')).__name__} {Path('/')!r}",
        ),
        (Any, {"a": [1, float("nan")]}, "x.a[1]", "is nan, which JSON cannot carry"),
        (Any, {1: 2}, "x.1", "expected str, got int 1"),
        (int, "y" * 50, "x", "expected int, got str " + repr("y" * 50)[:37] + "..."),
    ],
)
def test_refused_values_say_where_and_why(
    annotation: Any, value: Any, field: str, problem: str
) -> None:
    assert refused(annotation, value) == (field, problem)


@pytest.mark.parametrize(
    ("annotation", "json_value", "field", "problem"),
    [
        (bytes, "not base64!", "x", "expected bytes as base64 text, got str 'not base64!'"),
        (bytes, 5, "x", "expected bytes as base64 text, got int 5"),
        (datetime, "yesterday", "x", "expected datetime as ISO 8601 text, got str 'yesterday'"),
        (date, "2024-02-30", "x", "expected date as ISO 8601 text, got str '2024-02-30'"),
        (time, "25:00", "x", "expected time as ISO 8601 text, got str '25:00'"),
        (UUID, "nope", "x", "expected UUID as UUID text, got str 'nope'"),
        (Decimal, "1,5", "x", "expected Decimal as decimal text, got str '1,5'"),
        (Decimal, 1.5, "x", "expected Decimal as decimal text, got float 1.5"),
        (timedelta, True, "x", "expected timedelta as seconds, got bool True"),
        (timedelta, 1e300, "x", "expected timedelta as seconds, got float 1e+300"),
        (tuple[int, int], [1, 2, 3], "x", "expected tuple[int, int], got list [1, 2, 3]"),
        (Level, 3, "x", "expected one of 1, 2, got int 3"),
        (
            Node,
            {"name": "a", "children": [{"name": 1}]},
            "x.children[0].name",
            "expected str, got int 1",
        ),
    ],
)
def test_refused_json_in_the_worker_says_where_and_why(
    annotation: Any, json_value: Any, field: str, problem: str
) -> None:
    assert refused_in_worker(annotation, json_value) == (field, problem)


def test_pydantic_and_msgspec_errors_become_validation_errors_at_their_location() -> None:
    field, problem = refused(User, {"name": "ann", "scores": [1, "many"]})
    assert field == "x.scores[1]"
    assert problem.startswith("was refused by User: Input should be a valid integer")
    expected = "was refused by User: Input should be a valid dictionary or instance of User"
    assert refused(User, 5) == ("x", expected)
    field, problem = refused(Point, {"x": 1, "labels": ["a", 2]})
    assert (field, problem) == ("x.labels[1]", "was refused by Point: Expected `str`, got `int`")
    expected = "was refused by Point: Expected `object`, got `int`"
    assert refused_in_worker(Point, 5) == ("x", expected)


def test_call_that_does_not_fit_the_signature_is_refused() -> None:
    def send(to: str, subject: str = "", *, urgent: bool = False) -> None:
        pass

    def positional(a: int, /) -> None:
        pass

    c = codec(send)
    assert (fails(c).field, fails(c).problem) == ("to", "is missing")
    error = fails(c, "a", tx=1)
    assert (error.field, error.problem) == ("tx", "is not a parameter of the task")
    assert fails(c, "a", to="b").problem == "does not fit: multiple values for argument 'to'"
    assert fails(c, "a", "b", True).field == "*"
    assert fails(c, "a", "b", True).problem == "does not fit: too many positional arguments"
    assert fails(codec(positional), a=1).field == "a"
    assert "passed as a keyword" in fails(codec(positional), a=1).problem
    assert "fix the call" in str(fails(c))


def test_worker_refuses_unknown_missing_or_malformed_payloads() -> None:
    def task(a: int, b: int = 0) -> None:
        pass

    c = codec(task)
    with pytest.raises(ValidationError, match="argument 'a' is missing"):
        c.decode({"b": 1})
    with pytest.raises(ValidationError, match="argument 'c' is not a parameter of the task"):
        c.decode({"a": 1, "c": 2})
    with pytest.raises(ValidationError, match="argument 'b' expected int"):
        c.decode({"a": 1, "b": "x"})
    with pytest.raises(DecodeError, match="not a JSON object"):
        c.decode([1, 2])  # type: ignore[arg-type]


# --- definition-time errors ---


class Unknown:
    pass


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (Path, "parameter 'x' uses Path, which cannot travel as JSON"),
        (list[Unknown], "uses Unknown, which cannot travel as JSON"),
        (dict[int, str], "uses dict\\[int, str\\]; JSON object keys are text"),
        (Shape, "uses Shape, whose values are not all JSON scalars"),
        (Literal[Color.RED], "whose values are not all JSON scalars"),
        (TypeVar("T"), "uses ~T, which cannot travel as JSON"),
    ],
)
def test_annotations_that_cannot_travel_are_refused_when_the_task_is_defined(
    annotation: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        one(annotation)


def test_unresolvable_string_annotation_is_a_config_error() -> None:
    def task(x: int) -> None:
        pass

    task.__annotations__ = {"x": "Nowhere"}
    with pytest.raises(ConfigError, match="'Nowhere' is not defined"):
        codec(task)


def test_importing_the_codecs_does_not_import_pydantic_or_msgspec() -> None:
    code = (
        "import conveyor.codecs, sys; "
        "assert 'pydantic' not in sys.modules and 'msgspec' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties ---


@dataclasses.dataclass
class Leaf:
    number: int
    ratio: float
    flag: bool
    label: str
    blob: bytes
    when: datetime | None


@dataclasses.dataclass
class Branch:
    leaves: list[Leaf]
    index: dict[str, Leaf]
    pair: tuple[int, str]
    names: frozenset[str]
    child: Branch | None = None


finite = st.floats(allow_nan=False, allow_infinity=False)
leaves = st.builds(
    Leaf,
    number=st.integers(),
    ratio=finite,
    flag=st.booleans(),
    label=st.text(),
    blob=st.binary(),
    when=st.none() | st.datetimes(timezones=st.none() | st.just(UTC)),
)
branches: st.SearchStrategy[Branch] = st.deferred(
    lambda: st.builds(
        Branch,
        leaves=st.lists(leaves, max_size=3),
        index=st.dictionaries(st.text(), leaves, max_size=2),
        pair=st.tuples(st.integers(), st.text()),
        names=st.frozensets(st.text(), max_size=3),
        child=st.none() | branches,
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


def typed_task(tree: Branch, trees: list[Branch | None], extra: Any, *more: Leaf) -> None:
    pass


TYPED = codec(typed_task)


@given(
    branches, st.lists(st.none() | branches, max_size=2), json_values, st.lists(leaves, max_size=2)
)
def test_nested_values_survive_the_round_trip(
    tree: Branch, trees: list[Branch | None], extra: Any, more: list[Leaf]
) -> None:
    args, kwargs = TYPED.decode(loads(dumps(TYPED.encode((tree, trees, extra, *more), {}))))
    assert args == (tree, trees, extra, *more)
    assert kwargs == {}


@given(st.one_of(st.integers(), finite, st.booleans(), st.text(), st.none()))
def test_union_members_keep_their_type(value: int | float | bool | str | None) -> None:
    _, decoded = roundtrip(int | float | bool | str | None, value)
    assert decoded == value
    assert type(decoded) is type(value)


class TestToJson:
    """Task results and progress reports become JSON values by their own runtime types."""

    def test_plain_values_and_containers_convert_item_by_item(self) -> None:
        @dataclasses.dataclass
        class Point:
            x: int
            y: int

        moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        value = {"points": [Point(1, 2)], "when": moment, "tags": ("a",), "ok": True}
        assert to_json(value) == {
            "points": [{"x": 1, "y": 2}],
            "when": moment.isoformat(),
            "tags": ["a"],
            "ok": True,
        }
        assert to_json(None) is None
        assert sorted(to_json({3, 1, 2})) == [1, 2, 3]

    @pytest.mark.parametrize("value", [float("nan"), {1: "int key"}, object(), [float("inf")]])
    def test_values_json_cannot_hold_raise_message_error(self, value: object) -> None:
        with pytest.raises(MessageError, match="cannot be stored as JSON"):
            to_json(value)
