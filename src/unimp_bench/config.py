"""Frozen-dataclass configs built from YAML; unknown keys are errors, never silently ignored."""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unimp_bench.errors import UnimpError

T = TypeVar("T")
SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise UnimpError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UnimpError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError as exc:
        raise UnimpError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise UnimpError(f"config file {path} is nested too deeply") from None
    except IsADirectoryError:
        raise UnimpError(f"config file {path} is a folder, not a YAML file") from None


def literal_choices(annotation: Any) -> tuple | None:
    """The choices of a `Literal[...]` annotation (also inside `X | None`), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
    return None


@functools.cache
def _choices_of(cls: type) -> dict[str, tuple[tuple, bool]]:
    """Each Literal field of `cls`: its choices, and whether None is allowed besides them."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        choices = literal_choices(hints[f.name])
        if choices:
            found[f.name] = (choices, type(None) in typing.get_args(hints[f.name]))
    return found


def check_choices(obj: Any, label: str | Callable[[str], str] = "") -> None:
    """Every field of dataclass `obj` annotated `Literal[...]` holds one of its choices: the one rule
    for every config, called from its __post_init__ (so a config built in code is checked too, not
    only one read from YAML). `label` prefixes a field's name in the error (or maps it, e.g. to a
    command-line flag)."""
    for name, (choices, optional) in _choices_of(type(obj)).items():
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value not in choices:
            shown = label(name) if callable(label) else f"{label}{name}"
            raise UnimpError(f"{shown} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise UnimpError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UnimpError(f"{where} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise UnimpError(f"{where} must be a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {_coerce(k, key_type, where): _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string; every user means the number
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise UnimpError(f"{where} must be of type {annotation.__name__}, got {value!r}")
    return value


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and missing required ones."""
    if not isinstance(data, dict):
        raise UnimpError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UnimpError(
            f"{where} has unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UnimpError(f"{where} is missing the required key {name!r}")
    return cls(**kwargs)


def to_mapping(obj: Any) -> Any:
    """Plain JSON-ready view of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj
