"""Strict schemas for verb arguments and results: small, plain, and closed by default.

An Obj rejects keys it does not declare; strings have a maximum length (and often a pattern);
integers have a range. A schema is plain data built once at import, and one walk checks a
value against it: `check` raises a SchemaError that says where and why, `fits` says whether.
Both are the same code (`_walk`), so what is accepted and what is explained cannot differ.

The walk builds no path on the way down: a misfit is raised at the leaf and each container
adds its key while the exception goes up, so a good value (nearly every value) costs a type
test and a comparison or two per field. The traffic (a heartbeat every few seconds, a verb
now and then) needs no more: a round trip stays far under the 200 µs that would be plenty
(benchmarks/README.md, IPC).
"""

import abc
import re
from typing import Any, Dict, Optional

from ipc.errors import INVALID_ARGS, IpcError


class SchemaError(IpcError):
    def __init__(self, path: str, message: str):
        super().__init__(INVALID_ARGS, "%s: %s" % (path or "args", message))
        self.path = path


class _Misfit(Exception):
    """Raised by a walk; `where` collects the keys (innermost first) as it goes up."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why
        self.where = []


class Schema(abc.ABC):
    def check(self, value: Any, path: str = "") -> None:
        """Raise SchemaError, naming where and why, unless value fits."""
        try:
            self._walk(value)
        except _Misfit as e:
            for step in reversed(e.where):
                if isinstance(step, int):
                    path = "%s[%d]" % (path, step)
                else:
                    path = "%s.%s" % (path, step) if path else step
            raise SchemaError(path, e.why) from None

    def fits(self, value: Any) -> bool:
        try:
            self._walk(value)
        except _Misfit:
            return False
        return True

    @abc.abstractmethod
    def _walk(self, value: Any) -> None:
        """Return if value fits; raise _Misfit (what is wrong) if not."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the verb's documentation."""


class Str(Schema):
    def __init__(self, max_len: int, min_len: int = 0, pattern: Optional[str] = None):
        self.max_len, self.min_len = max_len, min_len
        self.pattern = re.compile(pattern) if pattern else None

    def _walk(self, value):
        if not isinstance(value, str):
            raise _Misfit("expected a string")
        if not self.min_len <= len(value) <= self.max_len:
            raise _Misfit("length %d outside %d..%d" % (len(value), self.min_len, self.max_len))
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            raise _Misfit("does not match %s" % self.pattern.pattern)

    def describe(self):
        extra = ", pattern %s" % self.pattern.pattern if self.pattern else ""
        return "string (%d..%d chars%s)" % (self.min_len, self.max_len, extra)


class Int(Schema):
    def __init__(self, minimum: int, maximum: int):
        self.minimum, self.maximum = minimum, maximum

    def _walk(self, value):
        # bool is an int in Python but not in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Misfit("expected an integer")
        if not self.minimum <= value <= self.maximum:
            raise _Misfit("%d outside %d..%d" % (value, self.minimum, self.maximum))

    def describe(self):
        return "integer %d..%d" % (self.minimum, self.maximum)


class Num(Schema):
    def __init__(self, minimum: float, maximum: float):
        self.minimum, self.maximum = minimum, maximum

    def _walk(self, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Misfit("expected a number")
        if not self.minimum <= value <= self.maximum:   # NaN compares false: refused
            raise _Misfit("%s outside %s..%s" % (value, self.minimum, self.maximum))

    def describe(self):
        return "number %s..%s" % (self.minimum, self.maximum)


class Bool(Schema):
    def _walk(self, value):
        if value is not True and value is not False:
            raise _Misfit("expected true or false")

    def describe(self):
        return "boolean"


class Enum(Schema):
    def __init__(self, *values: str):
        self.values = frozenset(values)

    def _walk(self, value):
        if not isinstance(value, str) or value not in self.values:
            raise _Misfit("expected one of %s" % ", ".join(sorted(self.values)))

    def describe(self):
        return "one of %s" % ", ".join(sorted(self.values))


class Nullable(Schema):
    def __init__(self, inner: Schema):
        self.inner = inner

    def _walk(self, value):
        if value is not None:
            self.inner._walk(value)

    def describe(self):
        return "null or " + self.inner.describe()


class List(Schema):
    def __init__(self, item: Schema, max_items: int, min_items: int = 0):
        self.item, self.max_items, self.min_items = item, max_items, min_items

    def _walk(self, value):
        if not isinstance(value, list):
            raise _Misfit("expected a list")
        if not self.min_items <= len(value) <= self.max_items:
            raise _Misfit("%d items outside %d..%d" % (len(value), self.min_items,
                                                      self.max_items))
        for i, item in enumerate(value):
            try:
                self.item._walk(item)
            except _Misfit as e:
                e.where.append(i)
                raise

    def describe(self):
        return "list of at most %d %s" % (self.max_items, self.item.describe())


class Map(Schema):
    """A mapping with keys of one schema and values of another (e.g. worker name -> record)."""

    def __init__(self, key: Str, value: Schema, max_items: int):
        self.key, self.value, self.max_items = key, value, max_items

    def _walk(self, value):
        if not isinstance(value, dict):
            raise _Misfit("expected an object")
        if len(value) > self.max_items:
            raise _Misfit("more than %d entries" % self.max_items)
        for k, v in value.items():
            try:
                self.key._walk(k)
            except _Misfit as e:
                e.where.append("<key>")
                raise
            try:
                self.value._walk(v)
            except _Misfit as e:
                e.where.append(k)
                raise

    def describe(self):
        return "object of %s -> %s" % (self.key.describe(), self.value.describe())


class Obj(Schema):
    """An object with declared keys only: `required` must be present, `optional` may be."""

    def __init__(self, required: Optional[Dict[str, Schema]] = None,
                 optional: Optional[Dict[str, Schema]] = None):
        self.required = dict(required or {})
        self.optional = dict(optional or {})
        self._all = {**self.required, **self.optional}

    def _walk(self, value):
        if not isinstance(value, dict):
            raise _Misfit("expected an object")
        declared = self._all
        for key, item in value.items():
            schema = declared.get(key) if isinstance(key, str) else None
            if schema is None:
                raise _Misfit("unknown key %s" % repr(key)[:66])
            try:
                schema._walk(item)
            except _Misfit as e:
                e.where.append(key)
                raise
        if len(value) < len(declared):   # every key present is declared: count the required
            for key in self.required:
                if key not in value:
                    raise _Misfit("missing key %r" % key)

    def describe(self):
        fields = ["%s: %s" % (k, s.describe()) for k, s in self.required.items()]
        fields += ["%s?: %s" % (k, s.describe()) for k, s in self.optional.items()]
        return "{%s}" % ", ".join(fields)


EMPTY = Obj()

# Patterns shared by several verb domains.
WORKER_NAME = Str(32, 1, r"[a-z][a-z0-9_-]*")
USERNAME = Str(32, 1, r"[a-z_][a-z0-9_.-]*\$?")
HOSTNAME = Str(63, 1, r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
HANDLER_NAME = Str(128, 1, r"[A-Za-z0-9][A-Za-z0-9._-]*")
MESSAGE = Str(4096)
