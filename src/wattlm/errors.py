"""Errors wattlm raises on purpose. The CLI turns every `WattlmError` into one line and exit code 2."""


class WattlmError(Exception):
    """Base class: the message says what happened, why, and how to fix it."""


class InvalidInputError(WattlmError, ValueError):
    """A value given by the user (option, config field, file) is not acceptable."""


class SourceError(WattlmError):
    """An energy source could not be opened or read."""


class MeterError(WattlmError):
    """The meter was used in a way it cannot honour (unknown window, duplicate name, closed meter)."""
