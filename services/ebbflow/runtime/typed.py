"""Settings from a raw mapping (a YAML section, environment strings), typed by a dataclass's fields.

One reader for the config file's sections and for the policy fields a file
gives, so a mistyped value is named the same way everywhere. A leaf: it
imports only the error hierarchy and the standard library, so both the
config loader and ebbflow.policy (below every service) can use it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from ebbflow.runtime.errors import ConfigError


def boolean(value: Any, where: str) -> bool:
    """A YAML boolean, or an environment string spelling one (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def typed_values(cls: type, raw: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """The settings of `raw` converted to the types of `cls`'s fields; ConfigError naming an unknown or mistyped one."""
    raw = dict(raw or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        target = known[name].type
        try:
            if target in ("bool", bool):
                values[name] = boolean(value, f"{where}.{name}")
            elif target in ("int", int):
                values[name] = int(value)
            elif target in ("float", float):
                values[name] = float(value)
            elif target == "tuple[float, ...]":
                items = value.split(",") if isinstance(value, str) else value
                values[name] = tuple(float(item) for item in items)
            elif target == "tuple[str, ...]":
                items = value.split(",") if isinstance(value, str) else value
                values[name] = tuple(str(item).strip() for item in items if str(item).strip())
            else:
                values[name] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name} must be a {target}, got {value!r}") from None
    return values
