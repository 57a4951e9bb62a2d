"""Errors wattlm raises on purpose. The CLI turns every `WattlmError` into one line and exit code 2."""

from __future__ import annotations

import re
from collections.abc import Callable


class WattlmError(Exception):
    """Base class: the message says what happened, why, and how to fix it."""


class InvalidInputError(WattlmError, ValueError):
    """A value given by the user (option, config field, file) is not acceptable."""


class SourceError(WattlmError):
    """An energy source could not be opened or read."""


class MeterError(WattlmError):
    """The meter was used in a way it cannot honour (unknown window, duplicate name, closed meter)."""


class ConfigError(InvalidInputError):
    """A config field (or an argument of a library call) has a value it cannot take.

    The message names fields in braces, e.g. "{seq_len} must be at least 2, got 1": `str()` spells
    them as the Python names (`seq_len`), and the CLI as its flags (`--seq-len`), so each user is
    told about the name they typed.
    """

    def __init__(self, message: str, *, field: str, value: object = None) -> None:
        self.template, self.field, self.value = message, field, value
        super().__init__(self.render(lambda name: name))

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with every {field} spelled by `spell` (e.g. as a command-line flag)."""
        return _FIELD.sub(lambda m: spell(m[1]), self.template)


_FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")
