"""Supabase Realtime row filters: ``column=op.value`` text → typed AST → bound predicate.

Pure: standard library and :mod:`cdc.changes` only; no I/O.

1. :func:`parse_filter` reads ``postgres_changes[].filter`` (``room=eq.5,kind=in.(a,"b,c")``)
   into a :class:`Filter` of :class:`Comparison`, :class:`InList`, :class:`IsTest` and
   :class:`Like` nodes, knowing nothing of the table.
2. :func:`bind` checks it against the table's columns and converts every literal with the
   column's type (``pg_type.typname``), giving a :class:`BoundFilter`.
3. :meth:`BoundFilter.matches` evaluates it on a row as Postgres evaluates
   ``col OP literal::coltype``: NULL matches nothing but ``is``, ``not.`` never turns NULL into a
   match (three-valued logic), and a column absent from the row never matches.

The filter is an access boundary, so it fails closed: a row value that cannot be read as the
column's type (an unexpected JSON type, an unparsable timestamp) matches nothing, negated or not.

Errors are :class:`FilterError`. Grammar errors carry the prefix of Supabase's parser,
``Error parsing `filter` params: ``; what Supabase's SQL rejects when it stores the subscription
(unknown column, a literal that does not cast, too many ``in`` values) carries that SQL's text.
"""

from __future__ import annotations

import enum
import json
import math
import operator
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import TypeAlias

from cdc.changes import Column, JSONValue

__all__ = [
    "MAX_IN_VALUES",
    "BoundFilter",
    "Comparison",
    "Condition",
    "EqualityKey",
    "Filter",
    "FilterError",
    "InList",
    "IsTest",
    "IsValue",
    "Key",
    "Like",
    "Normaliser",
    "Operator",
    "bind",
    "parse_filter",
]

MAX_IN_VALUES = 100
"""Most values an ``in`` list may hold (Supabase's limit)."""

Key: TypeAlias = "str | bool | tuple[int, object]"
"""A value normalised for comparison: equal keys are equal values of the column's type.

Text types give ``str`` and ``bool`` gives ``bool``; numbers and temporal values give
``(rank, value)`` so that NaN and ±infinity compare and sort as in Postgres.
"""

Normaliser: TypeAlias = "Callable[[JSONValue], Key | None]"
"""Reads a row value as a :data:`Key`; ``None`` for NULL or a value that cannot be read."""

_PREFIX = "Error parsing `filter` params: "


class FilterError(ValueError):
    """A filter cannot be used as given (the client erred); the message says why."""


class Operator(enum.StrEnum):
    """Filter operators, spelled as in the filter text."""

    EQ = "eq"
    NEQ = "neq"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"
    IS = "is"
    LIKE = "like"
    ILIKE = "ilike"


_COMPARE: dict[Operator, Callable[[Key, Key], bool]] = {
    Operator.EQ: operator.eq,
    Operator.NEQ: operator.ne,
    Operator.LT: operator.lt,
    Operator.LTE: operator.le,
    Operator.GT: operator.gt,
    Operator.GTE: operator.ge,
}


class IsValue(enum.StrEnum):
    """The right-hand side of ``is``."""

    NULL = "null"
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Comparison:
    """``column=[not.]eq|neq|lt|lte|gt|gte.value``; ``value`` is the unquoted literal."""

    column: str
    operator: Operator
    value: str
    negated: bool = False

    def __post_init__(self) -> None:
        if self.operator not in _COMPARE:
            raise ValueError(f"{self.operator} is not a comparison operator")


@dataclass(frozen=True, slots=True)
class InList:
    """``column=[not.]in.(a,"b,c",null)``; ``None`` is an unquoted ``null`` element."""

    column: str
    values: tuple[str | None, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        if len(self.values) > MAX_IN_VALUES:
            raise FilterError(f"too many values for `in` filter. Maximum {MAX_IN_VALUES}")


@dataclass(frozen=True, slots=True)
class IsTest:
    """``column=[not.]is.null|true|false|unknown``."""

    column: str
    value: IsValue
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Like:
    """``column=[not.]like|ilike.pattern`` with SQL ``%``, ``_`` and ``\\`` escapes."""

    column: str
    pattern: str
    case_insensitive: bool = False
    negated: bool = False


Condition: TypeAlias = Comparison | InList | IsTest | Like


@dataclass(frozen=True, slots=True)
class Filter:
    """An AND of conditions; no conditions matches every row."""

    conditions: tuple[Condition, ...] = ()


# --- Text → AST ------------------------------------------------------------------------------

_OPERATORS = {op.value: op for op in Operator}
_IS_VALUES = {value.value: value for value in IsValue}
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
# One element of a Postgres array literal: "quoted" or bare (backslash escapes), then , or end.
_ITEM_RE = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"\s*|((?:[^"{},\\]|\\.)+))(,|\Z)', re.DOTALL)


def parse_filter(text: str) -> Filter:
    """Parse Supabase filter text; blank text gives a filter without conditions.

    Raises:
        FilterError: the text is not a valid filter.
    """
    if not isinstance(text, str):
        raise FilterError(_PREFIX + "filter must be a string")
    stripped = text.strip()
    if not stripped:
        return Filter()
    return Filter(tuple(_parse_segment(part) for part in _split_top_level(stripped)))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside ``(…)`` and ``"…"`` (a quote opens after ``.``, ``(`` or ``,``)."""
    parts: list[str] = []
    start = depth = 0
    quoted = False
    previous = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            quoted = char != '"'
        elif char == '"' and previous in (".", "(", ","):
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start, char = i + 1, ""
        previous = char
        i += 1
    parts.append(text[start:])
    return parts


def _parse_segment(segment: str) -> Condition:
    trimmed = segment.strip()
    if not trimmed:
        raise FilterError(
            _PREFIX + "filter must not contain empty segments (check for extra commas)"
        )
    column, equals, rest = trimmed.partition("=")
    if not equals:
        raise FilterError(_PREFIX + _inspect([trimmed]))
    negated = rest.startswith("not.")
    name, dot, value = rest[4 if negated else 0 :].partition(".")
    if not dot:
        raise FilterError(_PREFIX + _inspect([name]))
    op = _OPERATORS.get(name)
    if op is None:
        raise FilterError(_PREFIX + _inspect([name, value]))
    if op is Operator.IN:
        if len(value) < 2 or value[0] != "(" or value[-1] != ")":
            raise FilterError(_PREFIX + "`in` filter value must be wrapped by parentheses")
        return InList(column, _parse_array_items(value[1:-1]), negated)
    quoted = _QUOTED_RE.fullmatch(value)
    if quoted:  # exactly one PostgREST-quoted string; anything else is taken literally
        value = _ESCAPE_RE.sub(r"\1", quoted[1])
    if op is Operator.IS:
        wanted = _IS_VALUES.get(value.lower())
        if wanted is None:
            message = "`is` filter value must be null, true, false or unknown"
            raise FilterError(_PREFIX + message)
        return IsTest(column, wanted, negated)
    if op is Operator.LIKE or op is Operator.ILIKE:
        return Like(column, value, op is Operator.ILIKE, negated)
    return Comparison(column, op, value, negated)


def _parse_array_items(inner: str) -> tuple[str | None, ...]:
    """Read the inside of ``in.(…)`` as Postgres reads the array literal ``{…}``."""
    if not inner.strip():
        return ()
    items: list[str | None] = []
    malformed = FilterError(f'malformed array literal: "{{{inner}}}"')
    position = 0
    while True:
        match = _ITEM_RE.match(inner, position)
        if match is None:
            raise malformed
        quoted, bare, comma = match.groups()
        if quoted is not None:
            items.append(_ESCAPE_RE.sub(r"\1", quoted))
        else:
            kept = bare.rstrip()  # trailing blanks go, unless escaped
            bare = bare[: len(kept) + (len(kept) - len(kept.rstrip("\\"))) % 2]
            if not bare:
                raise malformed
            null = "\\" not in bare and bare.lower() == "null"
            items.append(None if null else _ESCAPE_RE.sub(r"\1", bare))
        if not comma:
            return tuple(items)
        position = match.end()


def _inspect(parts: list[str]) -> str:
    """Render strings as Elixir's ``inspect`` does in Supabase's messages: ``["a", "b"]``."""
    return "[" + ", ".join(json.dumps(part, ensure_ascii=False) for part in parts) + "]"


# --- Column types: literal → key, row value → key --------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_WORDS = {"nan": math.nan, "infinity": math.inf, "inf": math.inf}
_INFINITIES: dict[str, Key] = {"infinity": (1, 0), "+infinity": (1, 0), "-infinity": (-1, 0)}
_BOOL_WORDS = (("true", True), ("yes", True), ("false", False), ("no", False))


def _number_key(number: float) -> Key:
    return (1, 0) if math.isnan(number) else (0, number)  # NaN = NaN, above all numbers


def _read_decimal(text: str) -> Key | None:
    text = text.strip()
    if _INT_RE.fullmatch(text):
        try:
            return (0, int(text))
        except ValueError:  # more digits than int() converts
            return None
    if _DECIMAL_RE.fullmatch(text):
        return _number_key(float(text))
    sign, word = 1.0, text.lower()
    if word.startswith(("+", "-")):
        sign, word = (-1.0 if word[0] == "-" else 1.0), word[1:]
    special = _FLOAT_WORDS.get(word)
    return None if special is None else _number_key(sign * special)


def _int_reader(low: int, high: int, typname: str) -> Callable[[str], Key | None]:
    def read(text: str) -> Key | None:
        stripped = text.strip()
        if not _INT_RE.fullmatch(stripped):
            return None
        try:
            number = int(stripped)
        except ValueError:  # more digits than int() converts
            number = high + 1
        if not low <= number <= high:
            raise FilterError(f'value "{text}" is out of range for type {typname}')
        return (0, number)

    return read


def _read_bool(text: str) -> Key | None:
    word = text.strip().lower()
    if word in ("on", "off", "1", "0"):
        return word in ("on", "1")
    for spelled, value in _BOOL_WORDS:
        if word and spelled.startswith(word):  # Postgres takes any prefix: t, tr, y, n, f, …
            return value
    return None


def _read_uuid(text: str) -> Key | None:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        return None


def _temporal(parse: Callable[[str], object], infinite: bool = True) -> Callable[[str], Key | None]:
    def read(text: str) -> Key | None:
        stripped = text.strip()
        if infinite and stripped.lower() in _INFINITIES:
            return _INFINITIES[stripped.lower()]
        try:
            return (0, parse(stripped))
        except ValueError:
            return None

    return read


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # no offset: UTC


def _canonical(value: JSONValue) -> JSONValue:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # jsonb compares numbers by value: 1.0 = 1
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _canonical_json(value: JSONValue) -> Key | None:
    try:
        return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError):
        return None


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _read_json(text: str) -> Key | None:
    try:
        return _canonical_json(json.loads(text, parse_constant=_reject_constant))
    except (RecursionError, ValueError):
        return None


def _from_text(read: Callable[[str], Key | None]) -> Normaliser:
    def normalise(value: JSONValue) -> Key | None:
        return read(value) if isinstance(value, str) else None

    return normalise


def _normalise_number(value: JSONValue) -> Key | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (0, value)
    if isinstance(value, float):
        return _number_key(value)
    return _read_decimal(value) if isinstance(value, str) else None


def _normalise_bool(value: JSONValue) -> Key | None:
    if isinstance(value, bool):
        return value
    return _read_bool(value) if isinstance(value, str) else None


def _normalise_json(value: JSONValue) -> Key | None:
    return None if value is None else _canonical_json(value)


@dataclass(frozen=True, slots=True)
class _Type:
    read: Callable[[str], Key | None]  # a filter literal; None when it does not cast
    normalise: Normaliser  # a row value
    ordered: bool = True  # lt/lte/gt/gte allowed
    textual: bool = False  # like/ilike allowed
    boolean: bool = False  # is.true/false/unknown allowed


def _text_type(read: Callable[[str], Key | None], textual: bool = True) -> _Type:
    return _Type(read, _from_text(read), textual=textual)


def _same(text: str) -> Key | None:
    return text


_TEXT = _text_type(_same)
_OTHER = _Type(_same, _TEXT.normalise)  # any type not listed compares as its text
_NUMBER = _Type(_read_decimal, _normalise_number)
_JSON = _Type(_read_json, _normalise_json, ordered=False)
_TYPES: dict[str, _Type] = {
    "int2": _Type(_int_reader(-(2**15), 2**15 - 1, "int2"), _normalise_number),
    "int4": _Type(_int_reader(-(2**31), 2**31 - 1, "int4"), _normalise_number),
    "int8": _Type(_int_reader(-(2**63), 2**63 - 1, "int8"), _normalise_number),
    "oid": _Type(_int_reader(0, 2**32 - 1, "oid"), _normalise_number),
    **dict.fromkeys(("float4", "float8", "numeric"), _NUMBER),
    **dict.fromkeys(("text", "varchar", "name"), _TEXT),
    "bpchar": _text_type(lambda text: text.rstrip(" ")),  # trailing blanks are insignificant
    "citext": _text_type(str.lower),
    "uuid": _text_type(_read_uuid, textual=False),
    "bool": _Type(_read_bool, _normalise_bool, boolean=True),
    "timestamptz": _text_type(_temporal(lambda s: _aware(datetime.fromisoformat(s))), False),
    "timestamp": _text_type(
        _temporal(lambda s: datetime.fromisoformat(s).replace(tzinfo=None)), False
    ),
    "date": _text_type(_temporal(lambda s: datetime.fromisoformat(s).date()), False),
    "time": _text_type(
        _temporal(lambda s: time.fromisoformat(s).replace(tzinfo=None), infinite=False), False
    ),
    "jsonb": _JSON,
    "json": _JSON,
}


# --- Binding and evaluation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BoundComparison:
    source: Comparison
    column: str
    negated: bool
    normalise: Normaliser = field(repr=False)
    literal: Key
    compare: Callable[[Key, Key], bool] = field(repr=False)

    def test(self, value: JSONValue) -> bool:
        key = None if value is None else self.normalise(value)
        return key is not None and self.compare(key, self.literal) != self.negated


@dataclass(frozen=True, slots=True)
class _BoundIn:
    source: InList
    column: str
    negated: bool
    normalise: Normaliser = field(repr=False)
    keys: frozenset[Key]
    has_null: bool

    def test(self, value: JSONValue) -> bool:
        key = None if value is None else self.normalise(value)
        if key is None:
            return False
        if key in self.keys:
            return not self.negated
        return self.negated and not self.has_null  # x <> NULL is NULL: no match


@dataclass(frozen=True, slots=True)
class _BoundIs:
    source: IsTest
    column: str
    negated: bool
    normalise: Normaliser = field(repr=False)

    def test(self, value: JSONValue) -> bool:
        wanted = self.source.value
        if value is None or wanted is IsValue.NULL:
            truth = value is None and wanted is not IsValue.TRUE and wanted is not IsValue.FALSE
        else:
            key = self.normalise(value)
            if key is None:
                return False
            truth = wanted is not IsValue.UNKNOWN and key == (wanted is IsValue.TRUE)
        return truth != self.negated


@dataclass(frozen=True, slots=True)
class _BoundLike:
    source: Like
    column: str
    negated: bool
    normalise: Normaliser = field(repr=False)
    segments: tuple[tuple[re.Pattern[str], int], ...]  # split at each %: (regex, length)

    def test(self, value: JSONValue) -> bool:
        key = None if value is None else self.normalise(value)
        if not isinstance(key, str):
            return False
        return _like(self.segments, key) != self.negated


_BoundCondition: TypeAlias = _BoundComparison | _BoundIn | _BoundIs | _BoundLike


@dataclass(frozen=True, slots=True)
class EqualityKey:
    """A positive ``eq``/``in`` (or ``not.neq``) condition, for indexing by value.

    A row satisfies that condition exactly when ``normalise(row[column])`` is in ``values``.
    Keys with the same ``column`` and ``normalise`` share one key space.
    """

    column: str
    normalise: Normaliser = field(repr=False)
    values: frozenset[Key]
    position: int  # of the condition within BoundFilter.conditions


@dataclass(frozen=True, slots=True)
class BoundFilter:
    """A :class:`Filter` checked against a table's columns, ready to evaluate."""

    filter: Filter
    conditions: tuple[_BoundCondition, ...]

    def matches(self, record: Mapping[str, JSONValue]) -> bool:
        """Whether the row satisfies every condition (SQL semantics, see the module doc)."""
        for condition in self.conditions:
            column = condition.column
            if column not in record or not condition.test(record[column]):
                return False
        return True

    def equality_keys(self) -> tuple[EqualityKey, ...]:
        """The conditions an index can look up by value: positive ``eq``/``in``, ``not.neq``."""
        keys: list[EqualityKey] = []
        for position, c in enumerate(self.conditions):
            if isinstance(c, _BoundIn) and not c.negated:
                keys.append(EqualityKey(c.column, c.normalise, c.keys, position))
            elif isinstance(c, _BoundComparison) and c.source.operator is (
                Operator.NEQ if c.negated else Operator.EQ
            ):
                keys.append(EqualityKey(c.column, c.normalise, frozenset({c.literal}), position))
        return tuple(keys)

    def without(self, key: EqualityKey) -> BoundFilter:
        """This filter less the condition ``key`` came from (what an index still has to check)."""
        rest = self.conditions[: key.position] + self.conditions[key.position + 1 :]
        return BoundFilter(Filter(tuple(c.source for c in rest)), rest)


def bind(filter: Filter, columns: Sequence[Column]) -> BoundFilter:
    """Check ``filter`` against the table's ``columns`` and convert its literals.

    Raises:
        FilterError: a column does not exist, a literal does not cast to the column's type, or
            the operator does not apply to that type.
    """
    types = {column.name: column.type for column in columns}
    return BoundFilter(filter, tuple(_bind_condition(c, types) for c in filter.conditions))


def _bind_condition(condition: Condition, types: Mapping[str, str]) -> _BoundCondition:
    column = condition.column
    typname = types.get(column)
    if typname is None:
        raise FilterError(f"invalid column for filter {column}")
    ctype = _TYPES.get(typname, _OTHER)
    normalise, negated = ctype.normalise, condition.negated
    if isinstance(condition, Comparison):
        op = condition.operator
        if not ctype.ordered and op is not Operator.EQ and op is not Operator.NEQ:
            raise FilterError(f"`{op}` filter is not supported on column {column} ({typname})")
        literal = _read_literal(ctype, typname, condition.value)
        return _BoundComparison(condition, column, negated, normalise, literal, _COMPARE[op])
    if isinstance(condition, InList):
        keys = frozenset(
            _read_literal(ctype, typname, v) for v in condition.values if v is not None
        )
        return _BoundIn(condition, column, negated, normalise, keys, None in condition.values)
    if isinstance(condition, IsTest):
        if condition.value is not IsValue.NULL and not ctype.boolean:
            raise FilterError(
                f"`is.{condition.value}` filter needs a bool column; {column} is {typname}"
            )
        return _BoundIs(condition, column, negated, normalise)
    op = Operator.ILIKE if condition.case_insensitive else Operator.LIKE
    if not ctype.textual:
        raise FilterError(f"`{op}` filter needs a text column; {column} is {typname}")
    segments = _like_segments(condition.pattern, condition.case_insensitive or typname == "citext")
    return _BoundLike(condition, column, negated, normalise, segments)


def _read_literal(ctype: _Type, typname: str, text: str) -> Key:
    key = ctype.read(text)
    if key is None:
        raise FilterError(f'invalid input syntax for type {typname}: "{text}"')
    return key


def _like_segments(pattern: str, case_insensitive: bool) -> tuple[tuple[re.Pattern[str], int], ...]:
    """Split a LIKE pattern at each ``%``; ``_`` is any one character, ``\\`` takes the next."""
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    segments: list[tuple[re.Pattern[str], int]] = []
    parts: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "%":
            segments.append((re.compile("".join(parts), flags), len(parts)))
            parts = []
            continue
        if char == "\\":
            char = next(chars, "")
            if not char:
                raise FilterError("LIKE pattern must not end with escape character")
        elif char == "_":
            parts.append(".")
            continue
        parts.append(re.escape(char))
    segments.append((re.compile("".join(parts), flags), len(parts)))
    return tuple(segments)


def _like(segments: tuple[tuple[re.Pattern[str], int], ...], text: str) -> bool:
    """LIKE without backtracking: the first segment at the start, the last at the end, each one
    between at its leftmost place (segments have fixed lengths, so leftmost is never worse).
    Linear in ``len(text) * len(pattern)``, whatever the client sends."""
    if len(segments) == 1:
        return segments[0][0].fullmatch(text) is not None
    (first, _), *middle, (last, last_length) = segments
    match = first.match(text)
    if match is None:
        return False
    position = match.end()
    for segment, _ in middle:
        match = segment.search(text, position)
        if match is None:
            return False
        position = match.end()
    start = len(text) - last_length
    return start >= position and last.fullmatch(text, start) is not None
