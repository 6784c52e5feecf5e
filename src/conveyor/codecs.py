"""Typed task arguments carried as JSON. Pure: no I/O.

``ArgumentCodec`` reads a task function's signature and type hints once and builds a converter
per parameter. ``encode`` (where the task is sent) binds and validates a call and returns a JSON
object; ``decode`` (in the worker) turns it back into ``(args, kwargs)`` of the annotated types.
Errors name the failing path (``order.items[2].sku``). pydantic and msgspec are imported only
when an annotation is one of their models. A union tries the members of the value's exact type
first, then the rest in order: ``datetime | str`` decodes ``"2024-05-01"`` as a datetime.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import inspect
import json
import math
import re
import types
from collections import abc
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from itertools import repeat
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

from conveyor.errors import ConfigError, DecodeError, MessageError, ValidationError

Convert = Callable[[Any], Any]


def _refuse_constant(name: str) -> Any:
    raise DecodeError(f"the message body contains {name}, which JSON does not allow")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; raises TypeError or ValueError for what JSON cannot carry."""
    return _ENCODER.encode(obj).encode()


def loads(data: bytes) -> Any:
    """Parse a JSON message body; raises DecodeError if it is not UTF-8 JSON.

    A body that is exactly one JSON value, as ``dumps`` writes them, goes straight to the C
    scanner: ``JSONDecoder.decode`` would add two whitespace matches that cost more than
    parsing a short body. Anything else takes the full parser, which judges it.
    """
    try:
        text = str(data, "utf-8")
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            return _DECODER.decode(text)
        return value if end == len(text) else _DECODER.decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"the message body is not UTF-8 JSON: {exc}") from exc


def to_json(value: Any) -> Any:
    """A task's return value or progress report as a JSON value.

    Converted by its own runtime type, as arguments are by their annotations: dataclasses,
    pydantic and msgspec models, datetimes and the rest; containers item by item.
    """
    kind = type(value)
    if kind in _PRIMITIVES and (kind is not float or math.isfinite(value)):
        return value
    try:
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            return [to_json(item) for item in value]
        if kind is dict:
            return {_STR.encode(key): to_json(item) for key, item in value.items()}
        return _converter_for_type(kind).encode(value)  # type: ignore[arg-type]
    except (_Invalid, _Unsupported, ConfigError) as exc:
        raise MessageError(
            f"a {kind.__name__} cannot be stored as JSON ({exc}); return JSON-compatible "
            "values, dataclasses or models"
        ) from None


@functools.lru_cache(maxsize=256)
def _converter_for_type(kind: type) -> _Converter:
    return _build(kind, {})


class _Invalid(Exception):
    """A value does not fit; each container prepends its path segment as it propagates."""

    def __init__(self, problem: str, path: list[str] | None = None) -> None:
        self.problem, self.path = problem, path or []

    def at(self, segment: str) -> _Invalid:
        self.path.insert(0, segment)
        return self


class _Unsupported(TypeError):
    """An annotation that cannot travel as JSON (a ConfigError when the task is defined)."""


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class _Converter:
    encode: Convert  # Python -> JSON; strict, but structured types also take a dict
    decode: Convert  # JSON -> Python; also passes the Python value itself through
    python_types: tuple[type, ...] = ()  # the exact types a union tries first, encoding
    json_types: tuple[type, ...] = ()  # ... and decoding


def _expected(label: str, value: Any) -> _Invalid:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return _Invalid(f"expected {label}, got {type(value).__name__} {shown}")


def _each(converts: Iterable[Convert], values: Iterable[Any]) -> list[Any]:
    out = []
    for index, (convert, value) in enumerate(zip(converts, values, strict=False)):
        try:
            out.append(convert(value))
        except _Invalid as exc:
            exc.at(f"[{index}]")
            raise
    return out


def _pairs(mapping: Mapping[Any, Any], convert_for: Convert, key: Convert) -> dict[Any, Any]:
    out = {}
    for name, value in mapping.items():
        try:
            out[key(name)] = convert_for(name)(value)
        except _Invalid as exc:
            exc.at(f".{name}")
            raise
    return out


def _finite(value: float) -> float:
    if math.isfinite(value):
        return value
    raise _Invalid(f"is {value}, which JSON cannot carry")


def _any(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return _finite(value)
    if kind is list or kind is tuple:
        return _each(repeat(_any), value)
    if kind is dict:
        return _pairs(value, lambda _: _any, _STR.encode)
    raise _expected("a JSON value (annotate the parameter to send other types)", value)


def _same(value: Any) -> Any:
    return value


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    raise _expected("int", value)


def _float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value))
    raise _expected("float", value)


def _instance(cls: type) -> _Converter:
    def check(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        raise _expected(cls.__name__.replace("NoneType", "None"), value)

    return _Converter(check, check, (cls,), (cls,))


def _scalar(
    cls: type, to_json: Convert, from_json: Convert, form: str, json_type: Any = str
) -> _Converter:
    """A value carried as text (or seconds); ``date`` refuses datetimes, which would not fit."""
    exclude = datetime if cls is date else ()

    def encode(value: Any) -> Any:
        if isinstance(value, cls) and not isinstance(value, exclude):
            return to_json(value)
        raise _expected(cls.__name__, value)

    def decode(value: Any) -> Any:
        if isinstance(value, cls) and not isinstance(value, exclude):
            return value
        if isinstance(value, json_type) and not isinstance(value, bool):
            try:
                return from_json(value)
            except (ValueError, ArithmeticError):
                pass
        raise _expected(f"{cls.__name__} as {form}", value)

    return _Converter(encode, decode, (cls,), (json_type,))


_ANY = _Converter(_any, _same)
_NONE = _instance(type(None))
_STR = _instance(str)
_SCALARS: dict[Any, _Converter] = {
    **dict.fromkeys((Any, object), _ANY),
    **dict.fromkeys((None, type(None)), _NONE),
    bool: _instance(bool),
    int: _Converter(_int, _int, (int,), (int,)),
    float: _Converter(_float, _float, (float,), (float,)),
    str: _STR,
    bytes: _scalar(
        bytes,
        lambda b: base64.b64encode(b).decode("ascii"),
        lambda s: base64.b64decode(s, validate=True),
        "base64 text",
    ),
    datetime: _scalar(datetime, datetime.isoformat, datetime.fromisoformat, "ISO 8601 text"),
    date: _scalar(date, date.isoformat, date.fromisoformat, "ISO 8601 text"),
    time: _scalar(time, time.isoformat, time.fromisoformat, "ISO 8601 text"),
    timedelta: _scalar(
        timedelta, timedelta.total_seconds, lambda s: timedelta(seconds=s), "seconds", int | float
    ),
    UUID: _scalar(UUID, str, UUID, "UUID text"),
    Decimal: _scalar(Decimal, str, Decimal, "decimal text"),
}
_ALIASES: dict[Any, type] = {abc.Sequence: list, abc.MutableSequence: list, abc.Set: frozenset}
_ALIASES |= {abc.Mapping: dict, abc.MutableMapping: dict}
_ALIASES |= {kind: kind for kind in (list, tuple, set, frozenset, dict)}
_PRIMITIVES = {str, int, float, bool, type(None)}


def _label(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint).replace("typing.", "")


def _build(hint: Any, memo: dict[type, _Converter]) -> _Converter:
    """The converter for one annotation; ``memo`` lets dataclasses refer to themselves."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated or hasattr(hint, "__supertype__"):  # Annotated[T, ...], NewType
        return _build(args[0] if args else hint.__supertype__, memo)
    if hint in _SCALARS:
        return _SCALARS[hint]
    if origin is Union or origin is types.UnionType:
        return _union([_build(arg, memo) for arg in args], _label(hint))
    if origin is Literal:
        return _choice(list(args), _label(hint))
    kind = _ALIASES.get(origin or hint)
    if kind is dict:
        key, value = (_build(arg, memo) for arg in args or (str, Any))
        return _mapping(_STR if key is _ANY else key, value, _label(hint))
    if kind is tuple and hint is not tuple and args[-1:] != (Ellipsis,):
        items = [_build(arg, memo) for arg in args]
        encoders, decoders = [i.encode for i in items], [i.decode for i in items]
        return _array(encoders, decoders, tuple, _label(hint), len(items))
    if kind is not None:
        item = _build(args[0] if args else Any, memo)
        return _array(repeat(item.encode), repeat(item.decode), kind, _label(hint))
    return memo[hint] if hint in memo else _class(hint, memo)


def _class(hint: Any, memo: dict[type, _Converter]) -> _Converter:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _choice([member.value for member in hint], hint.__name__, hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, memo)
    bases = {f"{base.__module__}.{base.__qualname__}" for base in getattr(hint, "__mro__", ())}
    if "pydantic.main.BaseModel" in bases:
        return _pydantic(hint)
    if "msgspec.Struct" in bases:
        return _msgspec(hint)
    raise _Unsupported(f"uses {_label(hint)}, which cannot travel as JSON")


def _union(members: list[_Converter], label: str) -> _Converter:
    def convert(value: Any, encoding: bool) -> Any:
        kind = type(value)
        exact = [m for m in members if kind in (m.python_types if encoding else m.json_types)]
        first: _Invalid | None = None  # the error of an exact-type member explains best
        for member in exact + [m for m in members if m not in exact]:
            try:
                return member.encode(value) if encoding else member.decode(value)
            except _Invalid as exc:
                first = first or (exc if member in exact else None)
        raise first or _expected(label, value)

    python_types = tuple(kind for m in members for kind in m.python_types)
    json_types = tuple(kind for m in members for kind in m.json_types)
    encode, decode = (lambda v: convert(v, True)), (lambda v: convert(v, False))
    return _Converter(encode, decode, python_types, json_types)


def _choice(values: list[Any], label: str, enum: type[Enum] | None = None) -> _Converter:
    """Literal values, or an Enum by value; the values must be JSON scalars."""
    kinds = tuple({type(value) for value in values})
    if not set(kinds) <= _PRIMITIVES:
        raise _Unsupported(f"uses {label}, whose values are not all JSON scalars")
    allowed = {(type(value), value) for value in values}
    shown = f"one of {', '.join(map(repr, values))}"

    def decode(value: Any) -> Any:
        if enum is not None and isinstance(value, enum):
            return value
        if type(value) in _PRIMITIVES and (type(value), value) in allowed:
            return value if enum is None else enum(value)
        raise _expected(shown, value)

    def encode(value: Any) -> Any:
        return decode(value) if enum is None else decode(value).value

    return _Converter(encode, decode, kinds if enum is None else (enum,), kinds)


def _array(
    encoders: Iterable[Convert], decoders: Iterable[Convert], kind: type, label: str, size: int = -1
) -> _Converter:
    accepted = (list, tuple, set, frozenset) if kind in (set, frozenset) else (list, tuple)

    def make(converts: Iterable[Convert], build: Callable[[list[Any]], Any]) -> Convert:
        def convert(value: Any) -> Any:
            if isinstance(value, accepted) and size in (-1, len(value)):
                return build(_each(converts, value))
            raise _expected(label, value)

        return convert

    return _Converter(make(encoders, _same), make(decoders, kind), (kind,), (list,))


def _mapping(key: _Converter, value: _Converter, label: str) -> _Converter:
    if set(key.json_types) != {str}:
        raise _Unsupported(f"uses {label}; JSON object keys are text, so the keys must be too")

    def make(convert_key: Convert, convert: Convert) -> Convert:
        def convert_mapping(mapping: Any) -> Any:
            if isinstance(mapping, dict):
                return _pairs(mapping, lambda _: convert, convert_key)
            raise _expected(label, mapping)

        return convert_mapping

    return _Converter(
        make(key.encode, value.encode), make(key.decode, value.decode), (dict,), (dict,)
    )


def _dataclass(cls: type, memo: dict[type, _Converter]) -> _Converter:
    fields: dict[str, _Converter] = {}
    required: list[str] = []
    name = cls.__name__

    def encode(value: Any) -> Any:
        value = value if isinstance(value, cls) else decode(value)
        return _pairs({f: getattr(value, f) for f in fields}, lambda f: fields[f].encode, _same)

    def decode(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise _expected(name, value)
        missing = [f for f in required if f not in value]
        unknown = [f for f in value if f not in fields]
        if missing or unknown:
            problem = f"is missing (required by {name})" if missing else f"is not a field of {name}"
            raise _Invalid(problem).at(f".{(missing or unknown)[0]}")
        try:
            return cls(**_pairs(value, lambda f: fields[f].decode, _same))
        except (TypeError, ValueError) as exc:
            raise _Invalid(f"was refused by {name}: {exc}") from exc

    memo[cls] = converter = _Converter(encode, decode, (cls, dict), (dict,))
    hints = get_type_hints(cls, include_extras=True)
    for field in dataclasses.fields(cls):
        if field.init:
            fields[field.name] = _build(hints[field.name], memo)
            if field.default is field.default_factory is dataclasses.MISSING:
                required.append(field.name)
    return converter


def _model(cls: Any, load: Convert, dump: Convert, error: Any, where: Any) -> _Converter:
    """A pydantic or msgspec model: the library validates, ``where`` locates its first error."""

    def decode(value: Any) -> Any:
        try:
            return value if isinstance(value, cls) else load(value)
        except error as exc:
            problem, path = where(exc)
            raise _Invalid(f"was refused by {cls.__name__}: {problem}", path) from exc

    return _Converter(lambda value: _any(dump(decode(value))), decode, (cls, dict), (dict,))


def _pydantic(cls: Any) -> _Converter:
    import pydantic

    def where(exc: pydantic.ValidationError) -> tuple[str, list[str]]:
        first = exc.errors()[0]
        return first["msg"], [f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]]

    dump = lambda model: model.model_dump(mode="json")  # noqa: E731
    return _model(cls, cls.model_validate, dump, pydantic.ValidationError, where)


def _msgspec(cls: Any) -> _Converter:
    import msgspec

    def where(exc: msgspec.ValidationError) -> tuple[str, list[str]]:
        problem, _, path = str(exc).partition(" - at `$")
        return problem, [path.rstrip("`")] if path else []

    load = lambda value: msgspec.convert(value, cls)  # noqa: E731
    return _model(cls, load, msgspec.to_builtins, msgspec.ValidationError, where)


_P = inspect.Parameter


class ArgumentCodec:
    """Validates one task's arguments and converts them to and from a JSON object.

    Built once per task, resolving the types: ``encode`` runs where the task is sent, ``decode``
    in the worker. Raises ConfigError if an annotation cannot be resolved or sent as JSON.
    """

    def __init__(self, task_name: str, function: Callable[..., Any]) -> None:
        self.task_name = task_name
        self._signature = inspect.signature(function)
        parameters = list(self._signature.parameters.values())
        try:
            hints = get_type_hints(function, include_extras=True)
            self._parameters = [self._parameter(p, hints.get(p.name, Any)) for p in parameters]
        except NameError as exc:
            raise ConfigError(
                f"task {task_name!r}: an annotation cannot be resolved ({exc}); define or import "
                "the name at module level"
            ) from exc
        self._plain = all(p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY) for p in parameters)
        self._positional = [p.name for p in parameters if p.kind is _P.POSITIONAL_OR_KEYWORD]
        self._names = frozenset(p.name for p in parameters)
        self._defaults = [(p.name, p.default) for p in parameters if p.default is not _P.empty]

    def _parameter(self, parameter: _P, hint: Any) -> tuple[str, Convert, Convert, Any]:
        try:
            item = _build(hint, {})
        except _Unsupported as exc:
            raise ConfigError(
                f"task {self.task_name!r}: parameter {parameter.name!r} {exc}; use JSON types, "
                "dataclasses, pydantic or msgspec models"
            ) from None
        converter, default = item, parameter.default
        if parameter.kind is _P.VAR_POSITIONAL:
            encoders, decoders = repeat(item.encode), repeat(item.decode)
            converter, default = _array(encoders, decoders, tuple, "*args"), ()
        elif parameter.kind is _P.VAR_KEYWORD:
            converter, default = _mapping(_STR, item, "**kwargs"), {}
        return parameter.name, converter.encode, converter.decode, default

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind a call to the task's signature, validate it and return it as a JSON object.

        Returns:
            parameter name -> JSON value, defaults applied; ``*args`` as a list and
            ``**kwargs`` as an object.

        Raises:
            ValidationError: the call does not fit the signature, or a value its annotation;
                ``field`` is the path to the value (``order.items[2].sku``).
        """
        bound = self._bind(args, kwargs)
        payload = {}
        for name, encode, _, _ in self._parameters:
            try:
                payload[name] = encode(bound[name])
            except _Invalid as exc:
                raise self._invalid(name, exc) from None
        return payload

    def decode(self, payload: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Turn a JSON object made by ``encode`` back into ``(args, kwargs)`` for the function.

        Parameters missing from the payload take their defaults.

        Raises:
            DecodeError: the payload is not a JSON object.
            ValidationError: a key is unknown, a required one is missing or a value does not fit.
        """
        if not isinstance(payload, dict):
            raise DecodeError(f"task {self.task_name!r}: the arguments are not a JSON object")
        values = {}
        for name, _, decode, default in self._parameters:
            if name in payload:
                try:
                    values[name] = decode(payload[name])
                except _Invalid as exc:
                    raise self._invalid(name, exc) from None
            elif default is _P.empty:
                raise ValidationError(self.task_name, name, "is missing")
            else:
                values[name] = default
        if not payload.keys() <= self._names:
            unknown = next(name for name in payload if name not in self._names)
            raise ValidationError(self.task_name, unknown, "is not a parameter of the task")
        if self._plain:
            return (), values
        bound = inspect.BoundArguments(self._signature, values)
        return bound.args, bound.kwargs

    def _invalid(self, name: str, exc: _Invalid) -> ValidationError:
        return ValidationError(self.task_name, name + "".join(exc.path), exc.problem)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._plain:  # fast path: no positional-only or variadic parameters
            bound = dict(zip(self._positional, args, strict=False))
            bound.update(kwargs)
            if len(bound) == len(args) + len(kwargs) and bound.keys() <= self._names:
                for name, default in self._defaults:
                    bound.setdefault(name, default)
                if len(bound) == len(self._names):
                    return bound
        try:
            call = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            message = str(exc)
            field = re.search(r"'(\w+)'", message)
            known = {"missing": "is missing", "unexpected": "is not a parameter of the task"}
            problem = next(
                (p for k, p in known.items() if k in message), f"does not fit: {message}"
            )
            raise ValidationError(self.task_name, field[1] if field else "*", problem) from None
        call.apply_defaults()
        return call.arguments
