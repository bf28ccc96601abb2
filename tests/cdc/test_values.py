"""cdc.values against golden PostgreSQL output (tests/fixtures/values.json, make_values.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc import values
from cdc.changes import JSONValue
from cdc.values import BUILTIN_TYPES, TypeInfo, TypeKind, TypeRegistry, convert, fix_bytea

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "values.json").read_text())
CUSTOM = [
    TypeInfo(
        t["oid"], t["name"], TypeKind(t["kind"]), t["element"], t["base"], t["delimiter"],
        tuple((name, oid) for name, oid in t["fields"]),
    )
    for t in FIXTURE["types"]
]  # fmt: skip
REGISTRY = TypeRegistry(CUSTOM)


def strict(value: Any) -> Any:
    """A form that tells 1 from 1.0 and True from 1, and ignores object key order."""
    if isinstance(value, list):
        return ["list", [strict(item) for item in value]]
    if isinstance(value, dict):
        return ["dict", sorted((key, strict(item)) for key, item in value.items())]
    return [type(value).__name__, value]


def case_id(case: dict[str, Any]) -> str:
    return f"{case['sql_type']}:{case['literal'][:30]}:{case['timezone']}"


def test_exports() -> None:
    assert sorted(values.__all__) == [
        "BUILTIN_TYPES", "Converter", "TypeInfo", "TypeKind", "TypeRegistry", "as_text",
        "convert", "fix_bytea",
    ]  # fmt: skip


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=case_id)
def test_matches_to_jsonb(case: dict[str, Any]) -> None:
    expected = json.loads(case["to_jsonb"])
    if TypeRegistry.is_bytea(case["oid"]):
        expected = fix_bytea(expected)
    assert strict(REGISTRY.convert(case["text"], case["oid"])) == strict(expected)


def test_fixture_covers_the_interesting_types() -> None:
    kinds = {info.kind for info in CUSTOM}
    assert {TypeKind.ENUM, TypeKind.DOMAIN, TypeKind.COMPOSITE, TypeKind.BASE} <= kinds
    names = {case["type"] for case in FIXTURE["cases"]}
    assert {"_int4", "_text", "_jsonb", "_bool", "int2vector", "pair", "_pair", "posint"} <= names


def test_convert_builtin_by_name_or_oid() -> None:
    assert convert("5", "int4") == 5
    assert convert("5", 23) == 5
    assert convert(None, "int4") is None
    assert convert("{1,NULL}", "_int8") == [1, None]
    with pytest.raises(KeyError):
        convert("x", "no_such_type")


def test_unknown_oid_is_text() -> None:
    registry = TypeRegistry()
    assert registry.get(999_999) is None
    assert registry.convert("anything", 999_999) == "anything"
    # An array or domain whose element/base is unknown falls back to text as well.
    registry.add(
        TypeInfo(70_001, "_x", element=70_000), TypeInfo(70_002, "d", TypeKind.DOMAIN, base=70_000)
    )
    assert registry.convert('{a,"b c"}', 70_001) == ["a", "b c"]
    assert registry.convert("7", 70_002) == "7"


def test_add_rebuilds_converters() -> None:
    registry = TypeRegistry()
    assert registry.convert("7", 70_002) == "7"
    registry.add(TypeInfo(70_002, "d", TypeKind.DOMAIN, base=23))
    assert registry.convert("7", 70_002) == 7
    assert registry.get(70_002) == TypeInfo(70_002, "d", TypeKind.DOMAIN, base=23)


def test_missing_follows_dependencies() -> None:
    registry = TypeRegistry()
    assert registry.missing([23, 1007]) == frozenset()
    registry.add(
        TypeInfo(80_000, "_c", element=80_001),
        TypeInfo(80_001, "c", TypeKind.COMPOSITE, fields=(("a", 80_002), ("b", 23), ("c", 80_002))),
    )
    assert registry.missing([80_000, 25, 80_003]) == {80_002, 80_003}
    registry.add(TypeInfo(80_002, "d", TypeKind.DOMAIN, base=80_004))
    assert registry.missing([80_000]) == {80_004}
    assert TypeInfo(1, "x", TypeKind.DOMAIN, base=5).depends_on() == (5,)


def test_builtin_table() -> None:
    assert len(BUILTIN_TYPES) > 150
    assert BUILTIN_TYPES[1007] == TypeInfo(1007, "_int4", element=23)
    assert BUILTIN_TYPES[603].delimiter == ";"
    assert TypeRegistry().oid("timestamptz") == 1184


def test_bytea_rule() -> None:
    assert TypeRegistry.is_bytea(17) and TypeRegistry.is_bytea(1001)
    assert not TypeRegistry.is_bytea(25)
    assert fix_bytea("\\x01") == "01"
    assert fix_bytea("plain") == "plain"
    assert fix_bytea(["\\x01", None, ["\\x"]]) == ["01", None, [""]]
    assert fix_bytea(None) is None
    assert fix_bytea(5) == 5
    assert convert("escaped\\000", "bytea") == "escaped\\000"  # bytea_output=escape: untouched


def test_delimiter_must_be_one_character() -> None:
    with pytest.raises(ValueError, match="one character"):
        TypeInfo(1, "x", delimiter=";;")


def test_cycles_are_refused() -> None:
    registry = TypeRegistry([TypeInfo(90_000, "d", TypeKind.DOMAIN, base=90_000)])
    with pytest.raises(ValueError, match="too deep"):
        registry.converter(90_000)
    registry = TypeRegistry([TypeInfo(90_001, "_a", element=90_001)])
    with pytest.raises(ValueError, match="too deep"):
        registry.converter(90_001)


@pytest.mark.parametrize(
    ("type_", "text"),
    [
        ("bool", "true"),
        ("int4", "1.5"),
        ("numeric", "1e"),
        ("float8", "abc"),
        ("json", "NaN"),
        ("json", "{"),
        ("jsonb", "{"),
        ("jsonb", "[1234567890123456789012"),
        ("_int4", "1,2"),
        ("_int4", "[0:1]"),
        ("_int4", "{1,2"),
        ("_int4", "{{1,2}"),
        ("_int4", "{1}x"),
        ("_int4", "{{1},x}y"),
        ("_int4", "{,{1}}"),
        ("_text", '{"abc}'),
        ("_text", '{"a"b}'),
        ("_int4", "{"),
        ("int2vector", "1 x"),
    ],
)
def test_malformed_text_raises_value_error(type_: str, text: str) -> None:
    with pytest.raises(ValueError):
        convert(text, type_)


def composite_registry() -> TypeRegistry:
    return TypeRegistry(
        [
            TypeInfo(91_000, "pt", TypeKind.COMPOSITE, fields=(("a", 23), ("b", 25))),
            TypeInfo(91_001, "none", TypeKind.COMPOSITE),
        ]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(1,x)", {"a": 1, "b": "x"}),
        ("(,)", {"a": None, "b": None}),
        ('(2,"")', {"a": 2, "b": ""}),
        ('(3,"a""b\\\\c")', {"a": 3, "b": 'a"b\\c'}),
        ("(4,a\\,b)", {"a": 4, "b": "a,b"}),  # record_in accepts backslashes outside quotes
        ('(5,x"y z"w)', {"a": 5, "b": "xy zw"}),
    ],
)
def test_composite_text(text: str, expected: JSONValue) -> None:
    assert composite_registry().convert(text, 91_000) == expected


@pytest.mark.parametrize("text", ["1,x", "(1,x)y", "(1)", "(1,x,y)", "(1", '(1,"x', "()"])
def test_malformed_composite(text: str) -> None:
    with pytest.raises(ValueError):
        composite_registry().convert(text, 91_000)


def test_composite_without_attributes() -> None:
    registry = composite_registry()
    assert registry.convert("()", 91_001) == {}
    with pytest.raises(ValueError):
        registry.convert("(1)", 91_001)


def test_array_edge_cases() -> None:
    assert convert("{}", "_text") == []
    assert convert("{{}}", "_text") == [[]]
    assert convert('{"",NULL,null,"NULL"}', "_text") == ["", None, None, "NULL"]
    assert convert("[1:1]={x}", "_text") == ["x"]
    assert convert('{"a\\\\b"}', "_text") == ["a\\b"]
    assert convert("{x,y}", 1017) == ["x", "y"]  # _point: elements stay text
    assert convert("{1;2}", "_box") == ["1", "2"]
    assert convert("", "int2vector") == []
    assert convert("1 2", "oidvector") == ["1", "2"]


def array_out(items: list[Any]) -> str:
    """A model of PostgreSQL's array_out for text elements (nested lists are sub-arrays)."""

    def element(item: Any) -> str:
        if isinstance(item, list):
            return array_out(item)
        if item is None:
            return "NULL"
        needs_quotes = (
            item == ""
            or item.upper() == "NULL"
            or any(c in item for c in '{}",\\')
            or any(c.isspace() for c in item)
        )
        if not needs_quotes:
            return str(item)
        escaped = str(item).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    return "{" + ",".join(element(item) for item in items) + "}"


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
TEXTS = st.lists(st.one_of(st.none(), TEXT), max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.one_of(TEXTS, st.lists(TEXTS.filter(bool), min_size=1, max_size=3)))
def test_text_arrays_round_trip(items: list[Any]) -> None:
    if items and isinstance(items[0], list):  # a 2-D array has rows of one length
        width = len(items[0])
        items = [row for row in items if len(row) == width]
    assert convert(array_out(items), "_text") == items
