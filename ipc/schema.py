"""Strict schemas for verb arguments and results: small, fast, and closed by default.

An Obj rejects keys it does not declare; strings have a maximum length (and often a pattern);
integers have a range. A schema is plain data built once at import, and `check` walks it.

Each schema is compiled, when built, into `fits`: a plain predicate of nested closures with
no paths and no messages, which is all a good value (nearly every value) costs. Only a value
that does not fit is walked again by `_explain`, which finds where and says why.
"""

import abc
import re
from typing import Any, Callable, Dict, Optional

from ipc.errors import INVALID_ARGS, IpcError


# How many matching strings each patterned Str remembers.
MATCH_MEMO = 256


class SchemaError(IpcError):
    def __init__(self, path: str, message: str):
        super().__init__(INVALID_ARGS, "%s: %s" % (path or "args", message))
        self.path = path


class Schema(abc.ABC):
    fits: Callable[[Any], bool]

    def check(self, value: Any, path: str = "") -> None:
        """Raise SchemaError unless value fits."""
        if not self.fits(value):
            self._explain(value, path)
            # _explain and fits must agree; should they not, the value is refused all the same.
            raise SchemaError(path, "does not fit %s" % self.describe())

    @abc.abstractmethod
    def _explain(self, value: Any, path: str) -> None:
        """Raise the SchemaError that says where and why value does not fit."""

    def _inline(self, x: str, ns: Dict[str, Any]) -> str:
        """A Python expression, true when the variable named x fits, for Obj's generated
        predicate; what it refers to is put in ns. Leaves inline their tests (a call less
        per key); containers call their own predicate."""
        return "%s(%s)" % (_bind(ns, self.fits), x)

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the verb's documentation."""


class Str(Schema):
    def __init__(self, max_len: int, min_len: int = 0, pattern: Optional[str] = None):
        self.max_len, self.min_len = max_len, min_len
        self.pattern = re.compile(pattern) if pattern else None
        lo, hi = min_len, max_len
        if self.pattern is None:
            self.fits = lambda v: isinstance(v, str) and lo <= len(v) <= hi
            return
        # Patterned strings (worker, user, host and handler names) come back again and
        # again: those that matched are remembered, so a repeat costs a set lookup instead of
        # the regex engine. Bounded; only exact str, whose hash and equality are str's own.
        fullmatch, matched = self.pattern.fullmatch, set()

        def matches(v):
            if fullmatch(v) is None:
                return False
            if type(v) is str and len(matched) < MATCH_MEMO:
                matched.add(v)
            return True
        self._matched, self._matches = matched, matches
        self.fits = lambda v: (isinstance(v, str) and lo <= len(v) <= hi
                               and (type(v) is str and v in matched or matches(v)))

    def _inline(self, x, ns):
        expr = "(isinstance(%s, str) and %s <= len(%s) <= %s" % (
            x, _bind(ns, self.min_len), x, _bind(ns, self.max_len))
        if self.pattern is not None:
            expr += " and (type(%s) is str and %s in %s or %s(%s))" % (
                x, x, _bind(ns, self._matched), _bind(ns, self._matches), x)
        return expr + ")"

    def _explain(self, value, path):
        if not isinstance(value, str):
            raise SchemaError(path, "expected a string")
        if not self.min_len <= len(value) <= self.max_len:
            raise SchemaError(path, "length %d outside %d..%d" % (len(value), self.min_len,
                                                                  self.max_len))
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise SchemaError(path, "does not match %s" % self.pattern.pattern)

    def describe(self):
        extra = ", pattern %s" % self.pattern.pattern if self.pattern else ""
        return "string (%d..%d chars%s)" % (self.min_len, self.max_len, extra)


class Int(Schema):
    def __init__(self, minimum: int, maximum: int):
        self.minimum, self.maximum = minimum, maximum
        self.fits = lambda v: (isinstance(v, int) and not isinstance(v, bool)
                               and minimum <= v <= maximum)

    def _inline(self, x, ns):
        return "(isinstance(%s, int) and not isinstance(%s, bool) and %s <= %s <= %s)" % (
            x, x, _bind(ns, self.minimum), x, _bind(ns, self.maximum))

    def _explain(self, value, path):
        # bool is an int in Python but not in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(path, "expected an integer")
        if not self.minimum <= value <= self.maximum:
            raise SchemaError(path, "%d outside %d..%d" % (value, self.minimum, self.maximum))

    def describe(self):
        return "integer %d..%d" % (self.minimum, self.maximum)


class Num(Schema):
    def __init__(self, minimum: float, maximum: float):
        self.minimum, self.maximum = minimum, maximum
        self.fits = lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                               and minimum <= v <= maximum)

    def _inline(self, x, ns):
        return ("(isinstance(%s, (int, float)) and not isinstance(%s, bool)"
                " and %s <= %s <= %s)" % (x, x, _bind(ns, self.minimum), x,
                                          _bind(ns, self.maximum)))

    def _explain(self, value, path):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(path, "expected a number")
        if not self.minimum <= value <= self.maximum:
            raise SchemaError(path, "%s outside %s..%s" % (value, self.minimum, self.maximum))

    def describe(self):
        return "number %s..%s" % (self.minimum, self.maximum)


class Bool(Schema):
    def __init__(self):
        self.fits = lambda v: v is True or v is False

    def _inline(self, x, ns):
        return "(%s is True or %s is False)" % (x, x)

    def _explain(self, value, path):
        if not isinstance(value, bool):
            raise SchemaError(path, "expected true or false")

    def describe(self):
        return "boolean"


class Enum(Schema):
    def __init__(self, *values: str):
        self.values = frozenset(values)
        members = self.values
        self.fits = lambda v: isinstance(v, str) and v in members

    def _inline(self, x, ns):
        return "(isinstance(%s, str) and %s in %s)" % (x, x, _bind(ns, self.values))

    def _explain(self, value, path):
        if not isinstance(value, str) or value not in self.values:
            raise SchemaError(path, "expected one of %s" % ", ".join(sorted(self.values)))

    def describe(self):
        return "one of %s" % ", ".join(sorted(self.values))


class Nullable(Schema):
    def __init__(self, inner: Schema):
        self.inner = inner
        inner_fits = inner.fits
        self.fits = lambda v: v is None or inner_fits(v)

    def _inline(self, x, ns):
        return "(%s is None or %s)" % (x, self.inner._inline(x, ns))

    def _explain(self, value, path):
        if value is not None:
            self.inner.check(value, path)

    def describe(self):
        return "null or " + self.inner.describe()


class List(Schema):
    def __init__(self, item: Schema, max_items: int, min_items: int = 0):
        self.item, self.max_items, self.min_items = item, max_items, min_items
        item_fits = item.fits
        self.fits = lambda v: (isinstance(v, list) and min_items <= len(v) <= max_items
                               and all(map(item_fits, v)))

    def _explain(self, value, path):
        if not isinstance(value, list):
            raise SchemaError(path, "expected a list")
        if not self.min_items <= len(value) <= self.max_items:
            raise SchemaError(path, "%d items outside %d..%d" % (len(value), self.min_items,
                                                                self.max_items))
        for i, item in enumerate(value):
            self.item.check(item, "%s[%d]" % (path, i))

    def describe(self):
        return "list of at most %d %s" % (self.max_items, self.item.describe())


class Map(Schema):
    """A mapping with keys of one schema and values of another (e.g. worker name -> record)."""

    def __init__(self, key: Str, value: Schema, max_items: int):
        self.key, self.value, self.max_items = key, value, max_items
        key_fits, value_fits = key.fits, value.fits
        self.fits = lambda v: (isinstance(v, dict) and len(v) <= max_items
                               and all(map(key_fits, v)) and all(map(value_fits, v.values())))

    def _explain(self, value, path):
        if not isinstance(value, dict):
            raise SchemaError(path, "expected an object")
        if len(value) > self.max_items:
            raise SchemaError(path, "more than %d entries" % self.max_items)
        for k, v in value.items():
            self.key.check(k, "%s.<key>" % path)
            self.value.check(v, "%s.%s" % (path, k) if path else k)

    def describe(self):
        return "object of %s -> %s" % (self.key.describe(), self.value.describe())


class Obj(Schema):
    """An object with declared keys only: `required` must be present, `optional` may be."""

    def __init__(self, required: Optional[Dict[str, Schema]] = None,
                 optional: Optional[Dict[str, Schema]] = None):
        self.required = dict(required or {})
        self.optional = dict(optional or {})
        self._all = {**self.required, **self.optional}
        self.fits = _compile_obj(self.required, self._all)

    def _explain(self, value, path):
        if not isinstance(value, dict):
            raise SchemaError(path, "expected an object")
        for key in value:
            if key not in self._all:
                raise SchemaError(path, "unknown key %r" % (key[:64],))
        for key in self.required:
            if key not in value:
                raise SchemaError(path, "missing key %r" % key)
        for key, item in value.items():
            self._all[key].check(item, "%s.%s" % (path, key) if path else key)

    def describe(self):
        fields = ["%s: %s" % (k, s.describe()) for k, s in self.required.items()]
        fields += ["%s?: %s" % (k, s.describe()) for k, s in self.optional.items()]
        return "{%s}" % ", ".join(fields)


def _bind(ns: Dict[str, Any], value: Any) -> str:
    """Put value in the generated code's namespace; its name there."""
    name = "_%d" % len(ns)
    ns[name] = value
    return name


def _compile_obj(required: Dict[str, Schema], declared: Dict[str, Schema]):
    """Obj's predicate as one generated function: the key sets compared in C, then each
    declared key's test inline. Only names go into the source; every value (keys, bounds,
    patterns) is bound in its namespace, so no declaration can change the code's shape."""
    if not declared:
        return lambda v: isinstance(v, dict) and not v
    ns: Dict[str, Any] = {}
    names = _bind(ns, frozenset(declared))
    if set(declared) == set(required):
        head = "not isinstance(v, dict) or v.keys() != %s" % names
    else:
        head = "not isinstance(v, dict) or not v.keys() <= %s or not %s <= v.keys()" % (
            names, _bind(ns, frozenset(required)))
    lines = ["def fits(v):", "    if %s:" % head, "        return False"]
    for key, schema in declared.items():
        name, indent = _bind(ns, key), "    "
        if key not in required:
            lines.append("    if %s in v:" % name)
            indent = "        "
        lines.append("%sx = v[%s]" % (indent, name))
        lines.append("%sif not %s:" % (indent, schema._inline("x", ns)))
        lines.append("%s    return False" % indent)
    lines.append("    return True")
    exec("\n".join(lines), ns)
    return ns["fits"]


EMPTY = Obj()

# Patterns shared by several verb domains.
WORKER_NAME = Str(32, 1, r"[a-z][a-z0-9_-]*")
USERNAME = Str(32, 1, r"[a-z_][a-z0-9_.-]*\$?")
HOSTNAME = Str(63, 1, r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
HANDLER_NAME = Str(128, 1, r"[A-Za-z0-9][A-Za-z0-9._-]*")
MESSAGE = Str(4096)
