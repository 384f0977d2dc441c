"""/etc/waagent.conf: the key table (keys.py), the parser (parser.py), the shipped file (shipped.py)."""

from config.parser import Config, ConfigError, Problem, defaults, load, parse  # noqa: F401

DEFAULT_PATH = "/etc/waagent.conf"
