# Type check of every ScaleDownConfig field, whatever the source: constructor, YAML/JSON file, flag, saved config.
"""Policy (one rule for every source):

- bool fields take only true/false. A quoted "false" in YAML or JSON is a string, and any non-empty
  string is true in Python, so it is an error naming the field (write false without quotes); it is
  never guessed. Flags are the exception by nature: `--enable_reranking false` is parsed strictly
  (true/false/yes/no/1/0/on/off) by the CLI before it gets here.
- int fields take integers (not booleans, not 8.0 or "8").
- float fields take numbers; a string that is a plain number ("1e-4") is read as that number,
  because PyYAML (YAML 1.1) loads `1e-4` without a dot as a string.
- str fields take strings; Optional fields also take null/None.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from functools import lru_cache
from typing import Any

from scaledown.errors import ConfigError


@lru_cache(maxsize=None)
def _field_kinds(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(name, 'bool'|'int'|'float'|'str'|'other', optional) of each field of the dataclass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(hint, "other")
        out.append((f.name, kind, optional))
    return tuple(out)


def check_field_types(config: Any) -> None:
    """Raise ConfigError naming the first field whose value has the wrong type; numeric strings of float
    fields are converted in place (see the module docstring)."""
    for name, kind, optional in _field_kinds(type(config)):
        value = getattr(config, name)
        if value is None and optional:
            continue
        if kind == "bool" and not isinstance(value, bool):
            if isinstance(value, str):
                raise ConfigError(f"{name}={value!r} is a string, not a boolean: a quoted \"{value}\" is not read as "
                                  f"true/false (any non-empty string would count as true). Write {name}: true or "
                                  f"{name}: false without quotes (in Python, True or False).")
            raise ConfigError(f"{name}={value!r} must be true or false, not {type(value).__name__}.")
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name}={value!r} must be an integer, not {type(value).__name__}"
                              + (" (write it without quotes)." if isinstance(value, str) else "."))
        if kind == "float":
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    raise ConfigError(f"{name}={value!r} must be a number, e.g. 1e-4 or 0.05.") from None
                if not math.isfinite(number):
                    raise ConfigError(f"{name}={value!r} must be a finite number.")
                setattr(config, name, number)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}={value!r} must be a number, not {type(value).__name__}.")
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string, not {type(value).__name__}"
                              + (" (or null)." if optional else "."))
