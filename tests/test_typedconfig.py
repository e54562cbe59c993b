"""Strict dict -> dataclass conversion and the YAML loader."""
from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from lowprec.typedconfig import from_dict, load_yaml, to_dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    x: float = 1.0
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    n: int | None = None
    kind: Literal["a", "b"] = "a"
    flag: bool = False
    inner: Inner = Inner()


def test_build_and_round_trip():
    obj = from_dict(Outer, {"name": "z", "n": 3, "inner": {"x": 2, "tags": ["p", "q"]}})
    assert obj == Outer(name="z", n=3, inner=Inner(x=2.0, tags=("p", "q")))
    assert isinstance(obj.inner.x, float)
    assert from_dict(Outer, to_dict(obj)) == obj


@pytest.mark.parametrize("data,match", [
    ({"name": "z", "nn": 1}, r"unknown key nn; valid keys: name, n, kind, flag, inner"),
    ({"name": "z", "inner": {"y": 1}}, r"unknown key inner\.y; valid keys: inner\.x, inner\.tags"),
    ({"name": 1}, r"name: expected str, got int 1"),
    ({"name": "z", "flag": 1}, r"flag: expected bool, got int"),
    ({"name": "z", "n": True}, r"n: True does not match int \| None"),
    ({"name": "z", "kind": "c"}, r"kind: 'c' is not one of 'a', 'b'"),
    ({"name": "z", "inner": {"tags": "p"}}, r"inner\.tags: expected a list"),
    ({"name": "z", "inner": {"tags": [1]}}, r"inner\.tags\[0\]: expected str"),
    ({"n": 1}, r"Outer: missing required key\(s\) name"),
])
def test_errors(data, match):
    with pytest.raises(ValueError, match=match):
        from_dict(Outer, data)


def test_yaml_floats_and_duplicates():
    assert load_yaml("a: 6e-4\nb: 1E5\nc: 7\nd: '6e-4'") == {"a": 6e-4, "b": 1e5, "c": 7, "d": "6e-4"}
    with pytest.raises(ValueError, match="key 'a' is set twice"):
        load_yaml("a: 1\na: 2\n")
