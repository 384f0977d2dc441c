"""Parse /etc/waagent.conf exactly as waagent does, and say what is wrong with it.

waagent's rules (reference/protocol.md §10): `key=value` lines; a line starting with `#` is a
comment; everything after the first `#` in a value is a comment; the value is stripped of
spaces and double quotes; the literal `None` means unset. A switch is y or n (any case),
anything else gives the default; an integer that does not parse gives the default.

At run time a bad value is logged and the default used, so an image with a typo still
provisions. `problems` lists every unknown key and bad value with file and line, for
`guestagentd --check-config` and `waagent -show-configuration`.
"""

import logging
from typing import Dict, List, NamedTuple, Optional

from config.keys import BY_NAME, FLOAT, INT, KEYS, STRING, SWITCH, Key, Value

log = logging.getLogger(__name__)

# A config file is a few KiB; anything much larger is not a config file.
MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(Exception):
    """The file cannot be used at all (missing, unreadable, too large)."""


class Problem(NamedTuple):   # not a dataclass: see config/keys.py Key
    path: str
    line: int
    key: str
    message: str

    def __str__(self):
        return "%s:%d: %s: %s" % (self.path, self.line, self.key or "(empty key)", self.message)


class RawEntry(NamedTuple):
    key: str
    value: Optional[str]
    line: int


def split_lines(text: str) -> List[RawEntry]:
    """The key=value pairs of a config text, as waagent reads them (last one wins later)."""
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.split("#", 1)[0].strip('" ').strip()
        entries.append(RawEntry(key.strip(), None if value == "None" else value, number))
    return entries


def convert(key: Key, raw: Optional[str]):
    """(value, problem message or None). An unset value gives the default without a problem."""
    if raw is None:
        return key.default, None
    if key.kind == SWITCH:
        lowered = raw.lower()
        if lowered in ("y", "n"):
            return lowered == "y", None
        return key.default, "expected y or n, got %r" % raw
    if key.kind in (INT, FLOAT):
        try:
            value = int(raw) if key.kind == INT else float(raw)
        except ValueError:
            return key.default, "expected %s, got %r" % (
                "an integer" if key.kind == INT else "a number", raw)
        if value != value or value in (float("inf"), float("-inf")):
            return key.default, "expected a finite number, got %r" % raw
        if key.minimum is not None and value < key.minimum:
            return key.default, "must be at least %s, got %r" % (key.minimum, raw)
        return value, None
    if key.kind == STRING:
        if key.choices and raw not in key.choices:
            if key.otherwise is not None:
                return key.otherwise, "expected one of %s, got %r (read as %s)" % (
                    ", ".join(key.choices), raw, key.otherwise)
            return key.default, "expected one of %s, got %r" % (", ".join(key.choices), raw)
        return raw, None
    raise AssertionError("unknown kind %r" % key.kind)


class Config:
    """Typed values of every known key; unknown keys are kept only as problems."""

    def __init__(self, values: Dict[str, Value], problems: List[Problem], path: str,
                 not_applied: Optional[List[Problem]] = None):
        self._values = values
        self.problems = problems
        self.path = path
        # Keys the file sets that the agent parses but does not act on yet (keys.py
        # not_applied): warnings, never problems; the agent runs as it would without them.
        self.not_applied = not_applied or []

    def __getitem__(self, name: str) -> Value:
        # A typo in our own code is a bug, not a default.
        if name not in BY_NAME:
            raise KeyError(name)
        return self._values[name]

    def get(self, name: str) -> Value:
        return self[name]

    def items(self):
        return sorted(self._values.items())

    def with_overrides(self, **overrides) -> "Config":
        """A copy with some keys replaced (dots written as __), for tests and derived instances."""
        values = dict(self._values)
        for attr, value in overrides.items():
            name = attr.replace("__", ".")
            if name not in BY_NAME:
                raise KeyError(name)
            values[name] = value
        return Config(values, list(self.problems), self.path, list(self.not_applied))

    # Derived values live here so every process derives them the same way.
    @property
    def provisioning_agent(self) -> str:
        """auto / waagent / cloud-init / disabled, with Provisioning.Enabled=n meaning disabled."""
        if not self["Provisioning.Enabled"]:
            return "disabled"
        return self["Provisioning.Agent"]

    @property
    def initial_goal_state_period(self) -> int:
        value = self["Extensions.InitialGoalStatePeriod"]
        return self["Extensions.GoalStatePeriod"] if value is None else value

    @property
    def update_to_latest_version(self) -> bool:
        value = self["AutoUpdate.UpdateToLatestVersion"]
        return self["AutoUpdate.Enabled"] if value is None else value


def parse(text: str, path: str = "<string>") -> Config:
    values = {k.name: k.default for k in KEYS}
    problems = []
    not_applied = {}
    for entry in split_lines(text):
        key = BY_NAME.get(entry.key)
        if key is None:
            problems.append(Problem(path, entry.line, entry.key, "unknown key"))
            continue
        if key.not_applied:
            # Once per key: the line whose value is in effect.
            not_applied[key.name] = Problem(path, entry.line, key.name,
                                            "warning: parsed but not applied: " + key.not_applied)
        value, message = convert(key, entry.value)
        values[key.name] = value
        if message:
            problems.append(Problem(path, entry.line, key.name,
                                    message + "; using the default %r" % (key.default,)))
    return Config(values, problems, path, sorted(not_applied.values(), key=lambda p: p.line))


def load(path: str, report: bool = True) -> Config:
    """Read and parse a config file. With report, each problem is logged as a warning."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror or e)) from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("%s is larger than %d bytes" % (path, MAX_CONFIG_BYTES))
    conf = parse(data.decode("utf-8", errors="replace"), path)
    if report:
        for problem in conf.problems:
            log.warning("config: %s", problem)
    return conf


def defaults() -> Config:
    return parse("", "<defaults>")
