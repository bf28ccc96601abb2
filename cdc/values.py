"""Postgres text-format values to JSON-typed Python values, exactly as ``to_jsonb`` renders them.

Pure: no I/O. Replication mode receives every column as the text its type's output function
prints (pgoutput sends text); trigger mode stores ``to_jsonb(NEW)``. This module makes the first
look like the second, so a subscriber cannot tell the capture modes apart. The rules below were
checked against PostgreSQL 15 (``tests/fixtures/make_values.py`` records them):

- ``int2``, ``int4``, ``int8``, ``numeric``, ``float4``, ``float8`` become JSON numbers, which
  ``to_jsonb`` stores as ``numeric``: ``5`` and ``1e+20`` give ``int``, ``5.00`` and ``1e-07``
  give ``float``; ``NaN``, ``Infinity`` and ``-Infinity`` stay strings. ``oid`` is a string.
- ``bool`` becomes ``True``/``False``; ``json`` and ``jsonb`` are parsed (``json`` the way its
  ``jsonb`` form prints: duplicate keys keep the last value, ``1e2`` is ``100``).
- ``timestamp`` and ``timestamptz`` get a ``T`` between date and time, and a ``timestamptz``
  offset of whole hours gets ``:00`` (``+05:30`` and ``+05:53:28`` stay); ``infinity`` and a
  trailing `` BC`` stay. ``date``, ``time`` and ``timetz`` (even ``+00``) are unchanged.
- Arrays (any bounds, any depth; ``int2vector``/``oidvector`` too) become lists, composites become
  objects, domains convert as their base type.
- ``bytea`` and ``_bytea`` columns become hex without ``\\x``: that is ``to_jsonb`` plus trigger
  mode's :func:`fix_bytea`. Elsewhere (a domain over ``bytea``, inside a composite) it keeps
  ``to_jsonb``'s ``\\x``, as in trigger mode.
- Everything else (text, enums, uuid, inet, interval, money, ranges, ...) is the text itself.

Text must come from a session with ``DateStyle=ISO``, ``IntervalStyle=postgres``,
``bytea_output=hex`` and ``extra_float_digits`` >= 1 (the defaults), and ``TimeZone`` equal to
the writer's if offsets must match trigger mode character for character.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import orjson

from cdc.changes import JSONValue

__all__ = [
    "BUILTIN_TYPES",
    "Converter",
    "TypeInfo",
    "TypeKind",
    "TypeRegistry",
    "as_text",
    "convert",
    "fix_bytea",
]

Converter = Callable[[str], JSONValue]
"""Turns one non-NULL text value into its JSON value; raises ``ValueError`` on malformed text."""


class TypeKind(enum.StrEnum):
    """``pg_type.typtype``."""

    BASE = "b"
    COMPOSITE = "c"
    DOMAIN = "d"
    ENUM = "e"
    PSEUDO = "p"
    RANGE = "r"
    MULTIRANGE = "m"


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What conversion needs to know about one ``pg_type`` row.

    Attributes:
        oid: ``pg_type.oid``.
        name: ``pg_type.typname`` (``int4``, ``_text``, ``mood``).
        kind: ``pg_type.typtype``.
        element: for a true array type (``typsubscript = 'array_subscript_handler'``) its
            ``typelem``, else 0.
        base: for a domain its ``typbasetype``, else 0.
        delimiter: ``typdelim``, which separates values of this type inside an array.
        fields: for a composite, ``(attname, atttypid)`` of its live attributes in attnum order.
    """

    oid: int
    name: str
    kind: TypeKind = TypeKind.BASE
    element: int = 0
    base: int = 0
    delimiter: str = ","
    fields: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1:
            raise ValueError(f"type {self.name}: delimiter must be one character")

    def depends_on(self) -> tuple[int, ...]:
        """The OIDs this type's conversion needs to know too."""
        return tuple(oid for oid in (self.element, self.base) if oid) + tuple(
            oid for _, oid in self.fields
        )


# Built-in types with fixed OIDs (< 10000), from PostgreSQL 15's pg_type: "oid:name" for a scalar,
# "oid:name:element" for an array; box (603) is the only one whose delimiter is ";".
_BUILTIN_TABLE = """
16:bool 17:bytea 18:char 19:name 20:int8 21:int2 22:int2vector:21 23:int4 24:regproc 25:text 26:oid
27:tid 28:xid 29:cid 30:oidvector:26 114:json 142:xml 143:_xml:142 194:pg_node_tree 199:_json:114
271:_xid8:5069 600:point 601:lseg 602:path 603:box 604:polygon 628:line 629:_line:628 650:cidr
651:_cidr:650 700:float4 701:float8 718:circle 719:_circle:718 774:macaddr8 775:_macaddr8:774
790:money 791:_money:790 829:macaddr 869:inet 1000:_bool:16 1001:_bytea:17 1002:_char:18
1003:_name:19 1005:_int2:21 1006:_int2vector:22 1007:_int4:23 1008:_regproc:24 1009:_text:25
1010:_tid:27 1011:_xid:28 1012:_cid:29 1013:_oidvector:30 1014:_bpchar:1042 1015:_varchar:1043
1016:_int8:20 1017:_point:600 1018:_lseg:601 1019:_path:602 1020:_box:603 1021:_float4:700
1022:_float8:701 1027:_polygon:604 1028:_oid:26 1033:aclitem 1034:_aclitem:1033 1040:_macaddr:829
1041:_inet:869 1042:bpchar 1043:varchar 1082:date 1083:time 1114:timestamp 1115:_timestamp:1114
1182:_date:1082 1183:_time:1083 1184:timestamptz 1185:_timestamptz:1184 1186:interval
1187:_interval:1186 1231:_numeric:1700 1266:timetz 1270:_timetz:1266 1560:bit 1561:_bit:1560
1562:varbit 1563:_varbit:1562 1700:numeric 1790:refcursor 2201:_refcursor:1790 2202:regprocedure
2203:regoper 2204:regoperator 2205:regclass 2206:regtype 2207:_regprocedure:2202
2208:_regoper:2203 2209:_regoperator:2204 2210:_regclass:2205 2211:_regtype:2206
2949:_txid_snapshot:2970 2950:uuid 2951:_uuid:2950 2970:txid_snapshot 3220:pg_lsn 3221:_pg_lsn:3220
3361:pg_ndistinct 3402:pg_dependencies 3614:tsvector 3615:tsquery 3642:gtsvector
3643:_tsvector:3614 3644:_gtsvector:3642 3645:_tsquery:3615 3734:regconfig 3735:_regconfig:3734
3769:regdictionary 3770:_regdictionary:3769 3802:jsonb 3807:_jsonb:3802 3904:int4range
3905:_int4range:3904 3906:numrange 3907:_numrange:3906 3908:tsrange 3909:_tsrange:3908
3910:tstzrange 3911:_tstzrange:3910 3912:daterange 3913:_daterange:3912 3926:int8range
3927:_int8range:3926 4072:jsonpath 4073:_jsonpath:4072 4089:regnamespace 4090:_regnamespace:4089
4096:regrole 4097:_regrole:4096 4191:regcollation 4192:_regcollation:4191 4451:int4multirange
4532:nummultirange 4533:tsmultirange 4534:tstzmultirange 4535:datemultirange 4536:int8multirange
5038:pg_snapshot 5039:_pg_snapshot:5038 5069:xid8 6150:_int4multirange:4451
6151:_nummultirange:4532 6152:_tsmultirange:4533 6153:_tstzmultirange:4534
6155:_datemultirange:4535 6157:_int8multirange:4536
"""


def _builtin_types() -> dict[int, TypeInfo]:
    types: dict[int, TypeInfo] = {}
    for entry in _BUILTIN_TABLE.split():
        oid, name, *element = entry.split(":")
        delimiter = ";" if name == "box" else ","
        info = TypeInfo(
            int(oid), name, element=int(element[0]) if element else 0, delimiter=delimiter
        )
        types[info.oid] = info
    return types


BUILTIN_TYPES: dict[int, TypeInfo] = _builtin_types()
"""The built-in types every server has under the same OID, by OID."""

_BYTEA, _INT2VECTOR, _OIDVECTOR = 17, 22, 30
_BYTEA_COLUMNS = frozenset((17, 1001))  # bytea, _bytea: the column types fix_bytea applies to
_MAX_DEPTH = 32  # type nesting deeper than this is a cycle in the caller's TypeInfo


# --- scalar converters ---------------------------------------------------------------------------


def as_text(text: str) -> JSONValue:
    """The converter of text-like types: the text itself (hot loops may skip calling it)."""
    return text


def _int(text: str) -> JSONValue:
    return int(text)


def _bool(text: str) -> JSONValue:
    if text == "t":
        return True
    if text == "f":
        return False
    raise ValueError(f"invalid boolean {text!r}")


def _exact_number(token: str) -> int | float:
    """A JSON number token as ``jsonb`` (``numeric``) prints it: integral scale gives an int."""
    try:
        decimal = Decimal(token)
    except InvalidOperation:
        raise ValueError(f"invalid number {token!r}") from None
    exponent = decimal.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(decimal)
    return float(token) + 0.0  # numeric has no negative zero


def _number(text: str) -> JSONValue:
    if "e" in text:
        return _exact_number(text)
    if "." in text:
        return float(text)
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    return int(text)


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(f"invalid JSON constant {name}")


def _json(text: str) -> JSONValue:
    """Parse JSON exactly: big integers stay ints, exponents follow ``numeric``."""
    value: JSONValue = json.loads(text, parse_float=_exact_number, parse_constant=_reject_constant)
    return value


_LONG_DIGITS = re.compile(r"\d{19}")


def _jsonb(text: str) -> JSONValue:
    # jsonb prints numbers without exponents; orjson is exact except beyond 64-bit integers.
    if _LONG_DIGITS.search(text):
        return _json(text)
    value: JSONValue = orjson.loads(text)
    return value


def _timestamp(text: str) -> JSONValue:
    space = text.find(" ")
    if space < 0:  # infinity, -infinity
        return text
    return text[:space] + "T" + text[space + 1 :]


def _timestamptz(text: str) -> JSONValue:
    if len(text) >= 22 and text[-3] in "+-" and text[10] == " ":  # "2026-01-01 12:00:00+00"
        return f"{text[:10]}T{text[11:]}:00"
    space = text.find(" ")
    if space < 0:
        return text
    value = text[:space] + "T" + text[space + 1 :]
    era = ""
    if value.endswith(" BC"):
        value, era = value[:-3], " BC"
    if value[-3] in "+-":  # "+05" -> "+05:00"
        value += ":00"
    return value + era


def _bytea_hex(text: str) -> JSONValue:
    return text[2:] if text.startswith("\\x") else text


def fix_bytea(value: JSONValue) -> JSONValue:
    """Trigger mode's post-processing of ``to_jsonb`` for ``bytea``/``_bytea`` columns.

    Strips the ``\\x`` prefix from a string, or from every string in (nested) lists.
    """
    if isinstance(value, str):
        return value[2:] if value.startswith("\\x") else value
    if isinstance(value, list):
        return [fix_bytea(item) for item in value]
    return value


# Built-in types that to_jsonb does not print as a plain string, by OID.
_SCALARS: dict[int, Converter] = {
    21: _int,  # int2
    23: _int,  # int4
    20: _int,  # int8
    700: _number,  # float4
    701: _number,  # float8
    1700: _number,  # numeric
    16: _bool,
    114: _json,
    3802: _jsonb,
    1114: _timestamp,
    1184: _timestamptz,
}


# --- arrays and composites ---------------------------------------------------------------------

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNQUOTED: dict[str, re.Pattern[str]] = {}


def _unquoted(delimiter: str) -> re.Pattern[str]:
    pattern = _UNQUOTED.get(delimiter)
    if pattern is None:
        pattern = re.compile(r'[^{}"\\' + re.escape(delimiter) + r"]+")
        _UNQUOTED[delimiter] = pattern
    return pattern


def _array_level(
    text: str, pos: int, delimiter: str, convert: Converter
) -> tuple[list[JSONValue], int]:
    """Parse the ``{...}`` starting at ``pos``; return its items and the position after it."""
    pos += 1
    items: list[JSONValue] = []
    if text[pos] == "}":
        return items, pos + 1
    unquoted = _unquoted(delimiter)
    while True:
        char = text[pos]
        item: JSONValue
        if char == "{":
            item, pos = _array_level(text, pos, delimiter, convert)
        elif char == '"':
            match = _QUOTED.match(text, pos)
            if match is None:
                raise ValueError("unterminated quoted array element")
            raw = match.group(1)
            item = convert(_ESCAPE.sub(r"\1", raw) if "\\" in raw else raw)
            pos = match.end()
        else:
            match = unquoted.match(text, pos)
            if match is None:
                raise ValueError(f"unexpected {char!r} in array at {pos}")
            raw = match.group()
            item = None if raw.upper() == "NULL" else convert(raw)
            pos = match.end()
        items.append(item)
        char = text[pos]
        pos += 1
        if char == "}":
            return items, pos
        if char != delimiter:
            raise ValueError(f"unexpected {char!r} in array at {pos - 1}")


def _parse_array(text: str, delimiter: str, convert: Converter) -> list[JSONValue]:
    pos = text.index("=") + 1 if text.startswith("[") else 0  # "[0:1]={...}": bounds dropped
    if text[pos : pos + 1] != "{":
        raise ValueError("array text must start with '{'")
    body = text[pos + 1 : -1]
    if text[-1] == "}" and not any(c in body for c in '{"\\'):  # flat and unquoted
        if not body:
            return []
        return [None if raw == "NULL" else convert(raw) for raw in body.split(delimiter)]
    items, end = _array_level(text, pos, delimiter, convert)
    if end != len(text):
        raise ValueError("trailing text after array")
    return items


def _record_fields(text: str) -> list[str | None]:
    """Split ``record_out`` text ``(a,"b c",)`` into field texts; an empty field is NULL."""
    if text[:1] != "(":
        raise ValueError("composite text must start with '('")
    fields: list[str | None] = []
    pos = 1
    while True:
        chars: list[str] = []
        quoted = False
        while text[pos] not in ",)":
            char = text[pos]
            if char == '"':
                quoted = True
                pos += 1
                while True:
                    char = text[pos]
                    if char == '"' and text[pos + 1] == '"':
                        chars.append('"')
                        pos += 2
                    elif char == '"':
                        pos += 1
                        break
                    elif char == "\\":
                        chars.append(text[pos + 1])
                        pos += 2
                    else:
                        chars.append(char)
                        pos += 1
            elif char == "\\":
                chars.append(text[pos + 1])
                pos += 2
            else:
                chars.append(char)
                pos += 1
        fields.append("".join(chars) if chars or quoted else None)
        pos += 1
        if text[pos - 1] == ")":
            break
    if pos != len(text):
        raise ValueError("trailing text after composite")
    return fields


def _guarded(convert: Converter) -> Converter:
    """Turn the IndexError of truncated text into the ValueError converters promise."""

    def guarded(text: str) -> JSONValue:
        try:
            return convert(text)
        except IndexError:
            raise ValueError(f"truncated value {text[:40]!r}") from None

    return guarded


# --- registry ------------------------------------------------------------------------------------


class TypeRegistry:
    """Type OID → :class:`TypeInfo` and compiled converters.

    Built-in types are always known. The shell adds the others (enums, domains, composites,
    extension types) from the catalog before it feeds rows of a relation that uses them:
    :meth:`missing` says which OIDs to look up (element, base and field types included), and
    :meth:`add` records what was found. A still-unknown OID converts as plain text.

    The catalog lookup returns, per OID: ``oid``, ``typname``, ``typtype``, ``typelem`` when
    ``typsubscript = 'array_subscript_handler'::regproc`` (else 0), ``typbasetype``, ``typdelim``,
    and for ``typtype = 'c'`` the ``(attname, atttypid)`` of ``pg_attribute`` rows of
    ``typrelid`` with ``attnum > 0 AND NOT attisdropped`` in attnum order.
    """

    def __init__(self, types: Iterable[TypeInfo] = ()) -> None:
        self._types = dict(BUILTIN_TYPES)
        self._by_name = {info.name: info.oid for info in BUILTIN_TYPES.values()}
        self._converters: dict[int, Converter] = {}
        self.add(*types)

    def add(self, *types: TypeInfo) -> None:
        """Record (or replace) types; compiled converters are rebuilt lazily."""
        for info in types:
            self._types[info.oid] = info
        self._converters.clear()

    def get(self, oid: int) -> TypeInfo | None:
        """The known type with this OID, if any."""
        return self._types.get(oid)

    def oid(self, name: str) -> int:
        """The OID of a built-in type by ``typname``; raises ``KeyError`` for others."""
        return self._by_name[name]

    def missing(self, oids: Iterable[int]) -> frozenset[int]:
        """The OIDs among ``oids`` and everything they depend on that are not known yet."""
        unknown: set[int] = set()
        seen: set[int] = set()
        todo = list(oids)
        while todo:
            oid = todo.pop()
            if oid in seen:
                continue
            seen.add(oid)
            info = self._types.get(oid)
            if info is None:
                unknown.add(oid)
            else:
                todo.extend(info.depends_on())
        return frozenset(unknown)

    @staticmethod
    def is_bytea(oid: int) -> bool:
        """Whether a column of this type gets :func:`fix_bytea`: ``bytea`` and ``_bytea`` only.

        That is trigger mode's rule; a domain over ``bytea`` keeps ``to_jsonb``'s ``\\x``.
        """
        return oid in _BYTEA_COLUMNS

    def converter(self, oid: int) -> Converter:
        """The converter for a column of type ``oid`` (cached)."""
        convert = self._converters.get(oid)
        if convert is None:
            convert = self._compile(oid, strip_bytea=oid in _BYTEA_COLUMNS, depth=0)
            self._converters[oid] = convert
        return convert

    def convert(self, text: str | None, oid: int) -> JSONValue:
        """Convert one column value (``None`` is SQL NULL)."""
        return None if text is None else self.converter(oid)(text)

    def _resolve(self, oid: int, depth: int) -> TypeInfo | None:
        """Follow domains to the base type."""
        info = self._types.get(oid)
        while info is not None and info.kind is TypeKind.DOMAIN:
            depth += 1
            if depth > _MAX_DEPTH:
                raise ValueError(f"domain {info.name} nests too deep")
            info = self._types.get(info.base)
        return info

    def _compile(self, oid: int, *, strip_bytea: bool, depth: int) -> Converter:
        if depth > _MAX_DEPTH:
            raise ValueError(f"type {oid} nests too deep")
        info = self._resolve(oid, depth)
        if info is None:
            return as_text
        if info.oid == _BYTEA:
            return _bytea_hex if strip_bytea else as_text
        if info.element:
            element = self._compile(info.element, strip_bytea=strip_bytea, depth=depth + 1)
            if info.oid in (_INT2VECTOR, _OIDVECTOR):
                return lambda text: [element(item) for item in text.split()]
            item_type = self._resolve(info.element, depth)
            delimiter = item_type.delimiter if item_type is not None else ","
            return _guarded(lambda text: _parse_array(text, delimiter, element))
        if info.kind is TypeKind.COMPOSITE:
            return self._compile_composite(info, depth)
        return _SCALARS.get(info.oid, as_text)

    def _compile_composite(self, info: TypeInfo, depth: int) -> Converter:
        names = [name for name, _ in info.fields]
        converters = [
            self._compile(oid, strip_bytea=False, depth=depth + 1) for _, oid in info.fields
        ]

        def composite(text: str) -> JSONValue:
            values = _record_fields(text)
            if not names and values == [None]:  # "()": a composite without attributes
                return {}
            if len(values) != len(names):
                raise ValueError(f"{info.name}: {len(values)} fields, expected {len(names)}")
            return {
                name: None if value is None else convert(value)
                for name, convert, value in zip(names, converters, values, strict=True)
            }

        return _guarded(composite)


_BUILTINS = TypeRegistry()


def convert(text: str | None, type: int | str) -> JSONValue:
    """Convert one value of a built-in type, named by OID or ``typname``.

    Raises:
        ValueError: the text is not valid for the type.
        KeyError: ``type`` is a name that is not a built-in type.
    """
    oid = type if isinstance(type, int) else _BUILTINS.oid(type)
    return _BUILTINS.convert(text, oid)
