"""MongoDB's query semantics for documents the embedded store keeps in its own SQLite tables.

The dataset API and the writer ask both stores the same MongoDB queries; MongoDB answers them on
the server, and the embedded store's document tables (``crowdplay.recording.document_table``)
match each document here. This is the part of the query language they use: equality (a value in
an array field matches too), ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$exists``, ``$gt``, ``$gte``,
``$lt``, ``$lte``, and ``$and``, ``$or``, ``$nor`` over whole queries; fields may be dotted paths
into embedded documents. Anything else is refused by name, never silently matched or not.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

_MISSING = object()
_ORDER: dict[str, Callable[[Any, Any], bool]] = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_COMBINED: dict[str, Callable[[Any], bool]] = {"$and": all, "$or": any, "$nor": lambda found: not any(found)}


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """True when ``document`` satisfies the MongoDB ``query``; ValueError for an operator this
    module does not know."""
    for name, condition in query.items():
        if name in _COMBINED:
            if not _COMBINED[name](matches(document, part) for part in condition):
                return False
        elif name.startswith("$"):
            raise ValueError(f"unsupported query operator {name!r} (the embedded store knows {', '.join(_COMBINED)} at the top level)")
        elif not _field_matches(_lookup(document, name), condition):
            return False
    return True


def _lookup(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _field_matches(value: Any, condition: Any) -> bool:
    """Whether a field's ``value`` satisfies ``condition``: a document of operators (every one must
    hold), or any other value, which the field must equal."""
    if not _is_operator_document(condition):
        return _equals(value, condition)
    return all(_operator(name)(value, argument) for name, argument in condition.items())


def _is_operator_document(condition: Any) -> bool:
    """A condition such as ``{"$gt": 3}``; a document with no ``$`` key is a value to equal."""
    return isinstance(condition, Mapping) and bool(condition) and all(str(key).startswith("$") for key in condition)


def _operator(name: str) -> Callable[[Any, Any], bool]:
    """The field operator called ``name``; ValueError naming it for one this module does not know."""
    if name in _ORDER:
        order = _ORDER[name]
        return lambda value, bound: any(_comparable(item, bound) and order(item, bound) for item in _items(value))
    if name not in _FIELD_OPERATORS:
        raise ValueError(f"unsupported query operator {name!r} (the embedded store knows $eq, $ne, $in, $nin, $exists, {', '.join(_ORDER)})")
    return _FIELD_OPERATORS[name]


def _equals(value: Any, target: Any) -> bool:
    """MongoDB's equality: a missing field equals None, and an array equals itself or holds the target."""
    if value is _MISSING:
        return target is None
    return value == target or (isinstance(value, list) and target in value)


def _items(value: Any) -> list[Any]:
    """What an ordering compares: the field's value, or each element of an array."""
    if value is _MISSING:
        return []
    return list(value) if isinstance(value, list) else [value]


def _comparable(value: Any, bound: Any) -> bool:
    """MongoDB orders values of one kind only: numbers with numbers, strings with strings."""
    number = (int, float)
    if isinstance(value, bool) or isinstance(bound, bool):
        return isinstance(value, bool) and isinstance(bound, bool)
    if isinstance(value, number) and isinstance(bound, number):
        return True
    return type(value) is type(bound) and not isinstance(value, (dict, list))


#: The operators on one field, other than the orderings (``_ORDER``), as (value, argument) -> holds.
_FIELD_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": _equals,
    "$ne": lambda value, argument: not _equals(value, argument),
    "$in": lambda value, candidates: any(_equals(value, candidate) for candidate in candidates),
    "$nin": lambda value, candidates: not any(_equals(value, candidate) for candidate in candidates),
    "$exists": lambda value, wanted: (value is not _MISSING) == bool(wanted),
}
