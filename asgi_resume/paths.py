"""Dotted paths into an event's JSON payload, and the rules written with them.

Owns: following a path (``data.message_id``) through nested objects, and the rule syntax of the
``ASGI_RESUME_DONE``/``ASGI_RESUME_EXCLUDE`` settings (``path``, ``path=value``, ``&``, ``,``):
parsing it, and whether an event's payload matches a rule. Must not touch: frames' text, streams,
settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_TRUTHY: Any = object()
MISSING: Any = object()


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path (already split) through nested objects; ``MISSING`` if absent."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


@dataclass(frozen=True, slots=True)
class Condition:
    path: tuple[str, ...]
    expected: Any = _TRUTHY  # _TRUTHY: the value must be truthy

    def is_met(self, obj: Any) -> bool:
        value = lookup(obj, self.path)
        if value is MISSING:
            return False
        if self.expected is _TRUTHY:
            return bool(value)
        return bool(value == self.expected and type(value) is type(self.expected))


@dataclass(frozen=True, slots=True)
class DoneRule:
    conditions: tuple[Condition, ...]

    def matches(self, obj: Any) -> bool:
        return all(condition.is_met(obj) for condition in self.conditions)

    @property
    def needles(self) -> tuple[str, ...]:
        """Text a frame must contain for this rule to possibly match: skips the JSON walk for most frames."""
        rare, common = [], []
        for condition in self.conditions:
            key = json.dumps(condition.path[-1])
            if isinstance(condition.expected, str):
                rare.append(json.dumps(condition.expected)[1:-1])
                common.append(key)
            else:
                (rare if condition.expected is _TRUTHY else common).append(key)
        return tuple(rare[::-1] + common)  # the last condition is usually the telling one


def parse_path(spec: str) -> tuple[str, ...]:
    """``"data.data.done"`` -> ``("data", "data", "done")``; raises ValueError when empty."""
    parts = tuple(spec.strip().split("."))
    if not all(parts):
        raise ValueError(f"{spec!r} is not a dotted path such as 'data.message_id'")
    return parts


def parse_done_rules(spec: str) -> tuple[DoneRule, ...]:
    """Parse ``rule,rule,...``; a rule is ``cond&cond``; a cond is ``path`` or ``path=value``.

    ``value`` is read as JSON when it is JSON (``true``, ``3``, ``"x"``), else as a string.
    """
    rules = []
    for rule in filter(None, (part.strip() for part in spec.split(","))):
        conditions = []
        for cond in rule.split("&"):
            path, sep, raw = cond.partition("=")
            if not sep:
                conditions.append(Condition(parse_path(path)))
                continue
            try:
                expected = json.loads(raw)
            except ValueError:
                expected = raw
            conditions.append(Condition(parse_path(path), expected))
        rules.append(DoneRule(tuple(conditions)))
    return tuple(rules)
