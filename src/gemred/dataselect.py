"""Select files by tags and descriptor expressions, as DRAGONS' ``dataselect`` does.

The API mirrors ``gempy.adlibrary.dataselect``::

    expr = expr_parser('(observation_class=="science" and filter_name=="i")')
    science = select_data(files, tags=[], xtags=["CAL"], expression=expr)

Expressions compare descriptors (:data:`gemred.descriptors.DESCRIPTOR_NAMES`) with literal
values and combine comparisons with ``and``, ``or``, ``not`` and parentheses. They are parsed
with :mod:`ast` and evaluated by walking the tree; nothing is ever passed to ``eval``.
As in DRAGONS, ``==`` is exact on text, ``exposure_time`` compares as a float and ``==`` on it
tolerates rounding, and ``ut_date``, ``ut_time`` and ``ut_datetime`` compare as dates and
times with values written ``"2017-06-14"``, ``"05:30:00"`` and ``"2017-06-14 05:30:00"``.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

import pandas as pd

from gemred.descriptors import DESCRIPTOR_NAMES, DESCRIPTOR_TYPES, descriptors
from gemred.io import GemredInputError

__all__ = ["select_data", "expr_parser", "descriptor_table"]

_COMPARISONS: dict[type[ast.cmpop], Callable[[object, object], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{1,2})(?::(\d{1,2}(?:\.\d*)?))?$")
_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")
_HOW_TO = 'write comparisons such as filter_name=="i" or exposure_time>10, joined by and/or/not'


def select_data(
    inputs: Iterable[str | os.PathLike],
    tags: Sequence[str] | None = None,
    xtags: Sequence[str] | None = None,
    expression: str = "True",
) -> list[str]:
    """Files that have every tag of ``tags``, none of ``xtags``, and satisfy ``expression``.

    Parameters
    ----------
    inputs : iterable of path-like
        Candidate files, in the order to keep.
    tags : sequence of str, optional
        Tags a file must all have (case-insensitive), e.g. ``["BIAS"]``; a single string is
        taken as one tag.
    xtags : sequence of str, optional
        Tags a file must not have, e.g. ``["CAL"]``.
    expression : str
        A selection expression (raw text or the output of :func:`expr_parser`).

    Returns
    -------
    list of str
        The matching paths as given, in input order; empty when nothing matches.

    Raises
    ------
    gemred.io.GemredInputError
        If the expression is invalid, or an input is unreadable or not GMOS/GSAOI data.
    """
    tree = _parse(expression)
    wanted, excluded = _tag_set(tags), _tag_set(xtags)
    selected = []
    for path in inputs:
        values = descriptors(path)
        if wanted <= values["tags"] and not excluded & values["tags"] and _truth(tree.body, values):
            selected.append(os.fspath(path))
    return selected


def expr_parser(text: str) -> str:
    """Check a selection expression and return it in canonical form.

    Parameters
    ----------
    text : str
        For example ``'filter_name=="i" and exposure_time==10'``. An empty text selects all.

    Returns
    -------
    str
        The same expression, normalised (``filter_name == 'i' and exposure_time == 10.0``);
        :func:`select_data` accepts it, and parsing it again gives it back unchanged.

    Raises
    ------
    gemred.io.GemredInputError
        (a ``ValueError``) if the text is not an expression of that form, names something
        that is not a descriptor, or compares a descriptor with a value of the wrong kind.
    """
    return ast.unparse(_parse(text))


def descriptor_table(files: Iterable[str | os.PathLike], names: Sequence[str]) -> pd.DataFrame:
    """Descriptor values of files, one row per file, like DRAGONS' ``showd``.

    Parameters
    ----------
    files : iterable of path-like
        The files, in display order.
    names : sequence of str
        Descriptor names (columns after ``filename``); tags are shown comma-separated.

    Returns
    -------
    pandas.DataFrame
        Columns ``filename`` then ``names``; missing values are None.

    Raises
    ------
    gemred.io.GemredInputError
        For an unknown descriptor name, or an unreadable or unsupported file.
    """
    unknown = [name for name in names if name not in DESCRIPTOR_TYPES]
    if unknown:
        msg = f"unknown descriptor(s) {', '.join(unknown)}; choose from {', '.join(DESCRIPTOR_NAMES)}"
        raise GemredInputError(msg)
    columns = ["filename", *(name for name in dict.fromkeys(names) if name != "filename")]
    rows = []
    for path in files:
        values = descriptors(path)
        values["tags"] = ",".join(sorted(values["tags"]))
        rows.append([values[name] for name in columns])
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _tag_set(tags: Sequence[str] | str | None) -> set[str]:
    """Upper-case tag names; a bare string is one tag, not a sequence of letters."""
    if isinstance(tags, str):
        tags = [tags]
    return {tag.upper() for tag in tags or ()}


def _parse(text: str) -> ast.Expression:
    """Parse, check and normalise an expression; raise GemredInputError explaining any fault."""
    source = str(text).strip() or "True"
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        hint = "; use == to compare" if _SINGLE_EQUALS.search(source) else ""
        msg = f"invalid selection expression {source!r} ({exc.msg}){hint}; {_HOW_TO}"
        raise GemredInputError(msg) from None
    tree.body = _check(tree.body, source)
    return tree


def _check(node: ast.expr, source: str) -> ast.expr:
    """Validate one node of the expression tree and return it with normalised constants."""
    if isinstance(node, ast.BoolOp):
        node.values = [_check(value, source) for value in node.values]
        return node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        node.operand = _check(node.operand, source)
        return node
    if isinstance(node, ast.Compare):
        return _check_compare(node, source)
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node
    if isinstance(node, ast.Name) and DESCRIPTOR_TYPES.get(node.id) is bool:
        return node
    if isinstance(node, ast.Name):
        _descriptor_type(node.id, source)
        example = f"{node.id}=={_example(node.id)}"
        msg = f"in {source!r}: {node.id} is not true/false; compare it with a value, e.g. {example}"
        raise GemredInputError(msg)
    msg = f"in {source!r}: {ast.unparse(node)!r} is not allowed; {_HOW_TO}"
    raise GemredInputError(msg)


def _check_compare(node: ast.Compare, source: str) -> ast.Compare:
    """Each link of a (possibly chained) comparison must be descriptor-vs-value."""
    if any(type(op) not in _COMPARISONS for op in node.ops):
        msg = f"in {source!r}: only ==, !=, <, <=, >, >= comparisons are allowed"
        raise GemredInputError(msg)
    operands = [node.left, *node.comparators]
    for i, (left, right) in enumerate(pairwise(operands)):
        if isinstance(left, ast.Name) == isinstance(right, ast.Name):
            msg = f'in {source!r}: compare a descriptor with a value, e.g. filter_name=="i"'
            raise GemredInputError(msg)
        name, literal = (left.id, i + 1) if isinstance(left, ast.Name) else (right.id, i)
        operands[literal] = _literal(operands[literal], name, source)
    node.left, node.comparators = operands[0], operands[1:]
    return node


def _descriptor_type(name: str, source: str) -> type:
    if name == "tags":
        msg = f"in {source!r}: select tags with tags=/xtags= (gemred select --tags/--xtags), not here"
        raise GemredInputError(msg)
    if name not in DESCRIPTOR_TYPES:
        msg = f"in {source!r}: {name!r} is not a descriptor; choose from {', '.join(DESCRIPTOR_NAMES)}"
        raise GemredInputError(msg)
    return DESCRIPTOR_TYPES[name]


def _literal(node: ast.expr, name: str, source: str) -> ast.Constant:
    """The literal compared with descriptor ``name``, checked and converted to its kind."""
    kind = _descriptor_type(name, source)
    negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    if negative and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        value = -value if isinstance(value, int | float) and not isinstance(value, bool) else None
    elif isinstance(node, ast.Constant):
        value = node.value
    else:
        msg = f"in {source!r}: {ast.unparse(node)!r} is not a literal value; {_HOW_TO}"
        raise GemredInputError(msg)
    converted = _convert(value, name, kind)
    if converted is None:
        example = f"{name}=={_example(name)}"
        msg = f"in {source!r}: cannot compare {name} with {ast.unparse(node)}; write e.g. {example}"
        raise GemredInputError(msg)
    return ast.Constant(converted)


def _convert(value: object, name: str, kind: type) -> object | None:
    """Literal as stored in the canonical expression, or None if it does not suit ``name``."""
    if name in _TIME_PARSERS:
        return value if isinstance(value, str) and _TIME_PARSERS[name](value) is not None else None
    if kind is bool:
        return value if isinstance(value, bool) else None
    if kind in (int, float):
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return int(number) if kind is int and number.is_integer() else number
    return value if isinstance(value, str) else None


def _example(name: str) -> str:
    examples = {"ut_date": '"2017-06-14"', "ut_time": '"05:30:00"', "ut_datetime": '"2017-06-14 05:30:00"'}
    kind = DESCRIPTOR_TYPES.get(name)
    if name in examples:
        return examples[name]
    if kind is bool:
        return "True"
    return "10" if kind in (int, float) else '"..."'


def _to_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m-%d").date()
    except ValueError:
        return None


def _to_time(text: str) -> dt.time | None:
    match = _TIME_RE.match(text.strip())
    if match is None:
        return None
    hours, minutes, seconds = int(match[1]), int(match[2]), float(match[3] or 0)
    if hours > 23 or minutes > 59 or seconds >= 60:
        return None
    whole = int(seconds)
    return dt.time(hours, minutes, whole, min(round((seconds - whole) * 1e6), 999999))


def _to_datetime(text: str) -> dt.datetime | None:
    date_part, _, time_part = text.strip().replace("T", " ", 1).partition(" ")
    date = _to_date(date_part)
    time = _to_time(time_part) if time_part.strip() else dt.time(0)
    if date is None or time is None:
        return None
    return dt.datetime.combine(date, time)


_TIME_PARSERS: dict[str, Callable[[str], object | None]] = {
    "ut_date": _to_date,
    "ut_time": _to_time,
    "ut_datetime": _to_datetime,
}


def _truth(node: ast.expr, values: dict) -> bool:
    """Evaluate a checked expression node against one file's descriptors."""
    if isinstance(node, ast.BoolOp):
        results = (_truth(value, values) for value in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp):
        return not _truth(node.operand, values)
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, ast.Name):
        return bool(values[node.id])
    assert isinstance(node, ast.Compare)
    operands = [node.left, *node.comparators]
    for (left, right), op in zip(pairwise(operands), node.ops, strict=True):
        name = left.id if isinstance(left, ast.Name) else right.id
        a, b = (_operand(o, name, values) for o in (left, right))
        if a is None or b is None:
            result = isinstance(op, ast.NotEq)
        elif name == "exposure_time" and isinstance(op, ast.Eq | ast.NotEq):
            result = math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-8) == isinstance(op, ast.Eq)
        else:
            result = _COMPARISONS[type(op)](a, b)
        if not result:
            return False
    return True


def _operand(node: ast.expr, name: str, values: dict) -> object | None:
    """Value of one side of a comparison, as a date/time for the ut_* descriptors."""
    value = values[node.id] if isinstance(node, ast.Name) else node.value
    if value is not None and name in _TIME_PARSERS:
        return _TIME_PARSERS[name](value)
    return value
