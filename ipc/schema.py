"""Strict schemas for verb arguments and results: small, fast, and closed by default.

An Obj rejects keys it does not declare; strings have a maximum length (and often a pattern);
integers have a range. A schema is plain data built once at import, and `check` walks it.
"""

import abc
import re
from typing import Any, Dict, Optional

from ipc.errors import INVALID_ARGS, IpcError


class SchemaError(IpcError):
    def __init__(self, path: str, message: str):
        super().__init__(INVALID_ARGS, "%s: %s" % (path or "args", message))
        self.path = path


class Schema(abc.ABC):
    @abc.abstractmethod
    def check(self, value: Any, path: str = "") -> None:
        """Raise SchemaError unless value fits."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the verb's documentation."""


class Str(Schema):
    def __init__(self, max_len: int, min_len: int = 0, pattern: Optional[str] = None):
        self.max_len, self.min_len = max_len, min_len
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, value, path=""):
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

    def check(self, value, path=""):
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

    def check(self, value, path=""):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(path, "expected a number")
        if not self.minimum <= value <= self.maximum:
            raise SchemaError(path, "%s outside %s..%s" % (value, self.minimum, self.maximum))

    def describe(self):
        return "number %s..%s" % (self.minimum, self.maximum)


class Bool(Schema):
    def check(self, value, path=""):
        if not isinstance(value, bool):
            raise SchemaError(path, "expected true or false")

    def describe(self):
        return "boolean"


class Enum(Schema):
    def __init__(self, *values: str):
        self.values = frozenset(values)

    def check(self, value, path=""):
        if not isinstance(value, str) or value not in self.values:
            raise SchemaError(path, "expected one of %s" % ", ".join(sorted(self.values)))

    def describe(self):
        return "one of %s" % ", ".join(sorted(self.values))


class Nullable(Schema):
    def __init__(self, inner: Schema):
        self.inner = inner

    def check(self, value, path=""):
        if value is not None:
            self.inner.check(value, path)

    def describe(self):
        return "null or " + self.inner.describe()


class List(Schema):
    def __init__(self, item: Schema, max_items: int, min_items: int = 0):
        self.item, self.max_items, self.min_items = item, max_items, min_items

    def check(self, value, path=""):
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

    def check(self, value, path=""):
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

    def check(self, value, path=""):
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


EMPTY = Obj()

# Patterns shared by several verb domains.
WORKER_NAME = Str(32, 1, r"[a-z][a-z0-9_-]*")
USERNAME = Str(32, 1, r"[a-z_][a-z0-9_.-]*\$?")
HOSTNAME = Str(63, 1, r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
HANDLER_NAME = Str(128, 1, r"[A-Za-z0-9][A-Za-z0-9._-]*")
MESSAGE = Str(4096)
