"""Strict conversion between nested dicts (from YAML) and frozen config dataclasses.

Every config in lowprec is a frozen keyword-only dataclass; this module is the one place that
turns untrusted mappings into them. An unknown key, a wrong type, or a key repeated in a YAML
mapping raises ValueError naming the dotted key and the valid choices (nanodo's
`c.get(k, default)` lets typos pass silently; we do not).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, Union

import yaml


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects repeated mapping keys and reads `6e-4` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (`6.0e-4`); `6e-4` would load as a
    string, which would then fail a float field's type check for no good reason.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ValueError(f"key {key!r} is set twice in the same YAML mapping (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML like `yaml.safe_load`, but duplicate keys raise and `1e-3` is a float."""
    return yaml.load(text, Loader=_StrictLoader)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked against annotation `tp` (ints are accepted for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where=key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"{key}: unsupported annotation {tp!r}")
    raise ValueError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls: type, mapping: Any, *, where: str = "") -> Any:
    """Build dataclass `cls` from a (nested) mapping; missing fields take their defaults."""
    label = where or cls.__name__
    if not isinstance(mapping, dict):
        raise ValueError(f"{label}: expected a mapping, got {type(mapping).__name__} {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown key {prefix}{unknown[0]!s}; valid keys: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, value in mapping.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{label}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Nested plain dict/list form of a config dataclass (tuples become lists), for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def dump_yaml(obj: Any) -> str:
    """Deterministic YAML text of a config dataclass (field order kept)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)
